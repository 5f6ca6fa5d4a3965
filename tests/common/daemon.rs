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

/// Whether process `pid` holds a TCP socket listening on `port` (any address, IPv4 or IPv6):
/// the socket inodes of /proc/net/tcp{,6} in state LISTEN on that port, found among
/// /proc/PID/fd.
fn listens(pid: u32, port: u16) -> bool {
    let port_hex = format!(":{port:04X}");
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let listening = fields.get(3) == Some(&"0A");
                    let on_port = fields.get(1).is_some_and(|a| a.ends_with(&port_hex));
                    let inode = fields.get(9)?;
                    (listening && on_port).then(|| format!("socket:[{inode}]"))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
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
