//! A server process a test starts in front of or beside fastpm (nginx, httpd, lighttpd,
//! php-fpm): wait until it is ready — failing with its logs if it exits first — and stop it with
//! its own stop signal when the test is done (KILL only if that takes over 5 s).

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// A running server process; stopped when dropped.
pub struct Daemon {
    name: &'static str,
    child: Child,
    stop: Signal,
}

impl Daemon {
    /// Spawns `command`; `stop` is the signal that stops it gracefully (TERM for web servers:
    /// a killed master leaves its workers behind; QUIT for php-fpm).
    pub fn spawn(name: &'static str, command: &mut Command, stop: Signal) -> Daemon {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon { name, child, stop }
    }

    /// Polls `ready` until it holds (within 15 s). Panics with the contents of `logs` when the
    /// process exits first or the time runs out; the caller's value owning `self` stops it.
    pub fn wait_ready(&mut self, mut ready: impl FnMut() -> bool, logs: &[&Path]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let logs = || -> String {
            logs.iter()
                .map(|p| std::fs::read_to_string(p).unwrap_or_default())
                .collect()
        };
        while !ready() {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("{} exited ({s}): {}", self.name, logs());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready after 15 s: {}",
                self.name,
                logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id (for `/proc/PID/…`).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Ready when this process listens on `port` and 127.0.0.1:`port` accepts connections.
    /// Whose listener it is matters: the port comes from `free_port`, closed before the server
    /// binds it, and another test's server may take it meanwhile — then ours fails to bind
    /// (nginx retries for a few seconds, then exits with the reason, which the panic shows),
    /// where "anything accepts" sent the test's requests to a stranger.
    pub fn wait_for_port(&mut self, port: u16, logs: &[&Path]) {
        let pid = self.child.id();
        self.wait_ready(
            || listens(pid, port) && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            logs,
        );
    }
}

/// Whether process `pid` holds the TCP socket listening on `port`: `ss -ltnpH` names the
/// processes holding each listener (`users:(("nginx",pid=123,fd=6))`).
fn listens(pid: u32, port: u16) -> bool {
    let out = Command::new(super::require("ss"))
        .args(["-ltnpH", &format!("sport = :{port}")])
        .output()
        .expect("run ss");
    String::from_utf8_lossy(&out.stdout).contains(&format!("pid={pid},"))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, self.stop);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
