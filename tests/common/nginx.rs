//! Shared by the nginx integration tests: a real nginx in front of fastpm (the config prologue
//! every such test needs, start, wait until it listens, stop it with TERM) and `curl` as the HTTP
//! client. Written once so the three nginx tests cannot drift apart.

use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use super::daemon::Daemon;
use super::{free_port, require};

/// A running nginx master for one test; stopped when dropped.
pub struct Nginx {
    /// The loopback TCP port nginx listens on: the test builds its URLs from it.
    pub port: u16,
    /// Stopped with TERM, not KILL: a killed nginx master leaves its worker processes behind.
    _process: Daemon,
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
        Self::start_with(dir, 256, http_blocks)
    }

    /// [`Nginx::start`] with `worker_connections` set: a held request costs nginx two
    /// connections (the client's and the upstream one), so tests that hold hundreds need more
    /// than the default 256.
    pub fn start_with(
        dir: &Path,
        worker_connections: u32,
        http_blocks: impl FnOnce(u16) -> String,
    ) -> Nginx {
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
events {{ worker_connections {worker_connections}; }}
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
        Self::run(dir, &conf_path, None, port)
    }

    /// nginx on a complete config file (a shipped one, rewritten by the test to listen on
    /// `port` and log to `dir/nginx-error.log`), with `-p prefix` for its relative paths.
    pub fn start_config(dir: &Path, conf: &Path, prefix: &Path, port: u16) -> Nginx {
        Self::run(dir, conf, Some(prefix), port)
    }

    fn run(dir: &Path, conf: &Path, prefix: Option<&Path>, port: u16) -> Nginx {
        let mut command = Command::new(require("nginx"));
        if let Some(prefix) = prefix {
            command.arg("-p").arg(prefix);
        }
        command
            .arg("-e")
            .arg(dir.join("nginx-startup.log"))
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut process = Daemon::spawn("nginx", &mut command, Signal::SIGTERM);
        process.wait_for_port(
            port,
            &[&dir.join("nginx-startup.log"), &dir.join("nginx-error.log")],
        );
        Nginx {
            port,
            _process: process,
        }
    }
}

/// `http_blocks` for [`Nginx::start`]: every path passed to the FastCGI server at `socket`
/// over kept connections (`fastcgi_keep_conn on`, upstream `keepalive`).
pub fn kept_connections_to(socket: &Path, keepalive: u32) -> impl FnOnce(u16) -> String {
    let socket = socket.display().to_string();
    move |port| {
        format!(
            r#"
    upstream kept {{
        server unix:{socket};
        keepalive {keepalive};
    }}
    server {{
        listen 127.0.0.1:{port};
        # Clients keep their own connection for the whole test (nginx closes one after 1000
        # requests by default, which a test client would count as a failure).
        keepalive_requests 100000;
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_keep_conn on;
            fastcgi_pass kept;
        }}
    }}"#
        )
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
