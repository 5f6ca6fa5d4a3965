//! Signals that arrive while fastpm is still starting are handled, never fatal: a HUP during
//! start is a reload once the master is up, a TERM a clean stop (exit 0), for the master and
//! for a worker process alike. Before the fix, the handlers were installed after the workers
//! (and their php-cgi) had started: until then HUP, TERM and QUIT took their default action
//! and ended the process.
//!
//! The signals are sent from the master's first log line (it has parsed its config and set up
//! logging; what comes before is the program loader's, where no program can have handlers yet)
//! until it says it is ready.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::procs::descendants;
use common::{require, FASTPM};
use fastpm::master::signals::HANDLED;

/// Many workers, each with a php-cgi to start: the start takes a while.
fn config(dir: &std::path::Path) -> String {
    format!(
        r#"
[global]
status_listen = ""
runtime_dir = "{dir}/rt"
shutdown_timeout = "5s"

[pool.p]
workers = "process"
max_children = 8
ping_path = "/ping"

[pool.p.listen]
address = "unix:{dir}/p.sock"

[pool.p.app]
kind = "php"
php_cgi = "{php_cgi}"
document_root = "{root}/php-examples"
"#,
        dir = dir.display(),
        php_cgi = require("php-cgi").display(),
        root = env!("CARGO_MANIFEST_DIR"),
    )
}

struct Master {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Master {
    fn start() -> Master {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("fastpm.toml");
        std::fs::write(&config_path, config(dir.path())).unwrap();
        let log = dir.path().join("fastpm.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(FASTPM)
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Master {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send `signal` every half millisecond from the first log line until the ready line.
    /// Returns how many were sent.
    fn pelt_until_ready(&mut self, signal: Signal) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.log().is_empty() {
            assert!(Instant::now() < deadline, "no log line");
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "ended before logging"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        let mut sent = 0;
        while !self.log().contains("ready:") {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the master ended ({status}) after {sent} {signal}s during its start; log:\n{}",
                    self.log()
                );
            }
            assert!(Instant::now() < deadline, "not ready; log:\n{}", self.log());
            let _ = kill(Pid::from_raw(self.pid()), signal);
            sent += 1;
            std::thread::sleep(Duration::from_micros(500));
        }
        sent
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn hup_during_start_is_a_reload_not_a_death() {
    let mut master = Master::start();
    let sent = master.pelt_until_ready(Signal::SIGHUP);
    assert!(sent > 0, "no signal was sent during the start");
    // The HUPs that came during the start are handled once it is up: a reload.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !master.log().contains("SIGHUP: reloaded") {
        assert!(
            master.child.try_wait().unwrap().is_none(),
            "the master died; log:\n{}",
            master.log()
        );
        assert!(
            Instant::now() < deadline,
            "no reload; log:\n{}",
            master.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // And it keeps running and serving.
    let status = common::raw::get(
        &format!("unix:{}", master._dir.path().join("p.sock").display()),
        "/ping",
        "",
    );
    assert!(status.body().contains("pong"), "{}", status.text());
    assert!(master.child.try_wait().unwrap().is_none());
    // Deferring left nothing blocked: not in the master, its workers, nor their php-cgi (once
    // the reload's old generation has left).
    let deadline = Instant::now() + Duration::from_secs(10);
    let below = loop {
        let below = descendants(master.pid());
        let named = |name: &str| below.iter().filter(|p| p.name == name).count();
        // php_children = "shared": one php-cgi parent and its 8 children.
        if named("exe") == 8 && named("php-cgi") == 9 {
            break below;
        }
        assert!(Instant::now() < deadline, "pool not settled: {below:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let handled = HANDLED
        .iter()
        .fold(0u64, |mask, s| mask | 1 << (*s as i32 - 1));
    for pid in std::iter::once(master.pid()).chain(below.iter().map(|p| p.pid)) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
            .unwrap();
        assert_eq!(blocked & handled, 0, "process {pid} blocks {blocked:#x}");
    }
}

#[test]
fn term_during_start_is_a_clean_stop() {
    let mut master = Master::start();
    master.pelt_until_ready(Signal::SIGTERM);
    let status = master.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "TERM during start: {status}; log:\n{}",
        master.log()
    );
    assert!(master.log().contains("graceful stop"), "{}", master.log());
}

/// A worker process that gets TERM while it is still starting (here: while it waits for its
/// config on stdin, before it has built its app) drains and exits 0 once started: the master
/// may stop a generation it has just spawned.
#[test]
fn worker_process_term_during_start_is_a_clean_exit() {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    let dir = tempfile::tempdir().unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("w.sock")).unwrap();
    // As the master leaves it: accept() returns every 200 ms to look at the stop flags.
    nix::sys::socket::setsockopt(
        &listener,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(0, 200_000),
    )
    .unwrap();
    let board = fastpm::scoreboard::Scoreboard::create(&[1]).unwrap();
    for fd in [listener.as_raw_fd(), board.raw_fd()] {
        // Inherited by number, as the master hands them over.
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .unwrap();
    }
    let log = dir.path().join("worker.log");
    let mut worker = Command::new(FASTPM)
        .args(["worker", "--pool-index", "0", "--slot", "0", "--slots", "1"])
        .args(["--lock", "none", "--backlog", "511"])
        .arg("--listener-fd")
        .arg(listener.as_raw_fd().to_string())
        .arg("--scoreboard-fd")
        .arg(board.raw_fd().to_string())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = worker.id() as i32;
    // Wait until it blocks reading its config (read(2) is syscall 0 on x86-64, 63 on arm64).
    let read_nr = if cfg!(target_arch = "aarch64") {
        "63"
    } else {
        "0"
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        let mut fields = syscall.split_whitespace();
        if fields.next() == Some(read_nr) && fields.next() == Some("0x0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker not reading stdin: {syscall}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    let config = format!(
        r#"
[global]
status_listen = ""
runtime_dir = "{}/rt"

[pool.w]
workers = "process"

[pool.w.listen]
address = "unix:{}/w.sock"

[pool.w.app]
kind = "hello"
"#,
        dir.path().display(),
        dir.path().display()
    );
    let mut stdin = worker.stdin.take().unwrap();
    // A worker killed by the TERM is gone: the write may fail, the exit status tells.
    let _ = stdin.write_all(config.as_bytes());
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = worker.kill();
            panic!("the worker did not stop after TERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        status.success(),
        "TERM during the worker's start: {status}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
