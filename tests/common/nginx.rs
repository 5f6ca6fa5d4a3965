//! Shared by the nginx integration tests: a real nginx in front of fastpm (the config prologue
//! every such test needs, start, wait until it listens, stop it with TERM) and `curl` as the HTTP
//! client. Written once so the three nginx tests cannot drift apart.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require};

/// A running nginx master for one test; stopped when dropped.
pub struct Nginx {
    /// The loopback TCP port nginx listens on: the test builds its URLs from it.
    pub port: u16,
    child: Child,
}

impl Nginx {
    /// Writes `<dir>/nginx.conf` and starts nginx on it, returning once the port accepts.
    ///
    /// The config holds the directives every test shares (root user, one worker, foreground,
    /// pid, error log `<dir>/nginx-error.log` and temp paths inside `dir`, no access log, 64m
    /// bodies), then `http_blocks(port)` inside `http { … }`: the test's upstreams and its
    /// `server { listen 127.0.0.1:{port}; … }` block. Panics with nginx's error log if nginx
    /// exits before it listens.
    pub fn start(dir: &Path, http_blocks: impl FnOnce(u16) -> String) -> Nginx {
        let nginx = require("nginx");
        let port = free_port();
        let blocks = http_blocks(port);
        let d = dir.display();
        let conf = format!(
            r#"
user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-body;
    fastcgi_temp_path {d}/nginx-fastcgi;
    proxy_temp_path {d}/nginx-proxy;
    uwsgi_temp_path {d}/nginx-uwsgi;
    scgi_temp_path {d}/nginx-scgi;
    client_max_body_size 64m;
{blocks}
}}
"#
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx)
            .arg("-e")
            .arg(dir.join("nginx-startup.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        // Built before waiting so that a panic below still stops nginx (Drop).
        let mut nginx = Nginx { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(s)) = nginx.child.try_wait() {
                panic!(
                    "nginx exited ({s}): {}",
                    std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }
}

impl Drop for Nginx {
    /// TERM, not KILL: a killed nginx master leaves its worker processes behind. KILL only if
    /// it has not stopped within 5 s.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
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

/// `curl` a URL with extra `args`: (status code, what curl wrote — the body, with the headers
/// in front when `args` has `-i` or `-D -`). 30 s cap so a hung server fails the test.
pub fn curl(args: &[&str], url: &str) -> (u16, Vec<u8>) {
    let out = Command::new(require("curl"))
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "30"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let mut body = out.stdout;
    let split = body.iter().rposition(|&b| b == b'\n').expect("curl status");
    let code = String::from_utf8_lossy(&body[split + 1..])
        .trim()
        .parse()
        .unwrap_or(0);
    body.truncate(split);
    (code, body)
}
