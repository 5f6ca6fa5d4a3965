//! A real `redis-server` for the tests of held requests' Redis broker (DESIGN.md §8): started on
//! a unix socket in a temporary directory or on a loopback TCP port, nothing persisted, stopped
//! when dropped. The test fails when redis-server is not installed (`scripts/deps.sh test`
//! installs it); it never passes by skipping. Killing it and starting it again on the same
//! address is how the tests take Redis away and bring it back.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use super::daemon::Daemon;

/// Where a redis-server listens; the same value starts it again at the same place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisAddr {
    /// A unix socket (TCP off: `--port 0`).
    Unix(PathBuf),
    /// 127.0.0.1:PORT.
    Tcp(u16),
}

impl RedisAddr {
    /// `<dir>/redis.sock`.
    pub fn unix_in(dir: &Path) -> RedisAddr {
        RedisAddr::Unix(dir.join("redis.sock"))
    }

    /// A loopback port free now (the kernel's pick).
    pub fn free_tcp() -> RedisAddr {
        RedisAddr::Tcp(super::free_port())
    }

    /// The `[global] broker` value (and the broker library's URL) for this address, database 0.
    pub fn url(&self) -> String {
        match self {
            RedisAddr::Unix(path) => format!("unix:{}", path.display()),
            RedisAddr::Tcp(port) => format!("redis://127.0.0.1:{port}"),
        }
    }

    fn listen_args(&self) -> Vec<String> {
        match self {
            RedisAddr::Unix(path) => vec![
                "--port".into(),
                "0".into(),
                "--unixsocket".into(),
                path.display().to_string(),
                "--unixsocketperm".into(),
                "700".into(),
            ],
            RedisAddr::Tcp(port) => vec![
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
            ],
        }
    }

    /// Something accepts connections there.
    fn accepts(&self) -> bool {
        match self {
            RedisAddr::Unix(path) => std::os::unix::net::UnixStream::connect(path).is_ok(),
            RedisAddr::Tcp(port) => std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok(),
        }
    }
}

/// A running redis-server; stopped (TERM) when dropped.
pub struct RedisServer {
    addr: RedisAddr,
    process: Daemon,
}

impl RedisServer {
    /// On `<dir>/redis.sock`.
    pub fn start(dir: &Path) -> RedisServer {
        RedisServer::start_at(dir, &RedisAddr::unix_in(dir))
    }

    /// At `addr`, with its log (`redis.log`, appended to across restarts) and working directory
    /// in `dir`; returns once it accepts connections, fails with its log if it exits first.
    pub fn start_at(dir: &Path, addr: &RedisAddr) -> RedisServer {
        let binary = super::require("redis-server");
        let log = dir.join("redis.log");
        let mut process = Daemon::spawn(
            "redis-server",
            Command::new(binary)
                .args(addr.listen_args())
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir)
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            Signal::SIGTERM,
        );
        process.wait_ready(|| addr.accepts(), &[&log]);
        RedisServer {
            addr: addr.clone(),
            process,
        }
    }

    pub fn url(&self) -> String {
        self.addr.url()
    }

    pub fn signal(&self, signal: Signal) {
        let pid = nix::unistd::Pid::from_raw(self.process.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Gone at once, as a crash would be (no goodbye to its clients beyond the closed socket).
    pub fn kill(self) {
        self.signal(Signal::SIGKILL);
        drop(self); // reaps it
    }
}
