//! Shared by the integration tests: start the real `fastpm` binary on a config written into a
//! temporary directory, wait until it is ready, read its log, stop it; find the external tools a
//! test needs (and fail — never skip — when one is missing); read `ss -ln`.
#![allow(dead_code)]

pub mod apache;
pub mod cgi_fcgi;
pub mod daemon;
pub mod http1;
pub mod lighttpd;
pub mod longpoll;
pub mod nginx;
pub mod php_fpm;
pub mod php_pages;
pub mod procs;
pub mod raw;
pub mod redis;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const FASTPM: &str = env!("CARGO_BIN_EXE_fastpm");

/// The path of a tool the test needs. Panics with the install hint when it is missing: a test
/// that needs nginx fails without nginx, it does not pass by skipping.
pub fn require(tool: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("this test needs `{tool}`; install the test dependencies with scripts/deps.sh test");
}

/// A running fastpm master for one test.
pub struct Server {
    pub child: Child,
    /// Holds the config, sockets and the log; removed when the server is dropped.
    pub dir: tempfile::TempDir,
    pub log_path: PathBuf,
}

/// How to start a server.
pub struct Launch<'a> {
    /// Config text; `{dir}` is replaced by the temporary directory.
    pub config: &'a str,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Run under `unshare -n` with this somaxconn (private network namespace).
    pub netns_somaxconn: Option<u32>,
    /// The config's `error_log`, a file name in the temporary directory: the master's log is
    /// read there (its stderr then holds one line).
    pub error_log: Option<&'a str>,
}

impl<'a> Launch<'a> {
    pub fn new(config: &'a str) -> Self {
        Self {
            config,
            args: Vec::new(),
            env: Vec::new(),
            netns_somaxconn: None,
            error_log: None,
        }
    }
    /// The config sets `error_log = "{dir}/NAME"`: read the master's log there.
    pub fn error_log(mut self, name: &'a str) -> Self {
        self.error_log = Some(name);
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
    pub fn netns_somaxconn(mut self, n: u32) -> Self {
        self.netns_somaxconn = Some(n);
        self
    }
    pub fn start(self) -> Server {
        Server::launch(self)
    }
}

impl Server {
    pub fn start(config: &str) -> Server {
        Launch::new(config).start()
    }

    fn launch(launch: Launch<'_>) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("fastpm.toml");
        let text = launch.config.replace("{dir}", dir.path().to_str().unwrap());
        std::fs::write(&config_path, text).unwrap();
        let log_path = dir.path().join("fastpm.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = match launch.netns_somaxconn {
            None => Command::new(FASTPM),
            Some(n) => {
                let mut c = Command::new(require("unshare"));
                c.arg("-n").arg("sh").arg("-c").arg(format!(
                    "ip link set lo up 2>/dev/null; sysctl -q -w net.core.somaxconn={n} && exec \"$0\" \"$@\""
                ));
                c.arg(FASTPM);
                c
            }
        };
        cmd.arg("run").arg("-c").arg(&config_path);
        cmd.args(&launch.args);
        cmd.env_remove("LISTENQ").env_remove("RUST_LOG");
        for (k, v) in &launch.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().expect("start fastpm");
        let log_path = match launch.error_log {
            Some(name) => dir.path().join(name),
            None => log_path,
        };
        let mut server = Server {
            child,
            dir,
            log_path,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.log().contains("ready:") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "fastpm exited ({status}) before it was ready; log:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!("fastpm not ready after 15 s; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The status listener's port, as the master's log says it (configure
    /// `status_listen = "127.0.0.1:0"`: the kernel picks a free port, no race with other tests).
    pub fn status_port(&self) -> u16 {
        let log = self.log();
        let rest = log
            .split("status on http://127.0.0.1:")
            .nth(1)
            .unwrap_or_else(|| panic!("no status listener in the log:\n{log}"));
        rest.split('/').next().unwrap().parse().unwrap()
    }

    /// The TCP port pool `name` listens on, as the master's log says it (configure
    /// `address = "127.0.0.1:0"`: the kernel picks a free port, no race with other tests).
    pub fn pool_port(&self, name: &str) -> u16 {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("listening on ") && l.ends_with(&format!("pool={name}")))
            .unwrap_or_else(|| panic!("pool {name} is not listening; log:\n{log}"));
        let address = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(": ").next())
            .unwrap();
        address.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send a signal and wait for the exit (bounded).
    pub fn stop_with(
        &mut self,
        signal: nix::sys::signal::Signal,
        within: Duration,
    ) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "fastpm did not stop within {within:?} after {signal}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A pool `p` of `max_children` worker processes running the built-in `sleep` app on
/// `{dir}/p.sock`, with `accept_lock = lock` and the master's status on `status_port`.
pub fn sleep_pool_config(lock: &str, status_port: u16, max_children: u32) -> String {
    format!(
        r#"
[global]
status_listen = "127.0.0.1:{status_port}"
runtime_dir = "{{dir}}/rt"
shutdown_timeout = "10s"

[pool.p]
workers = "process"
accept_lock = "{lock}"
max_children = {max_children}

[pool.p.listen]
address = "unix:{{dir}}/p.sock"

[pool.p.app]
kind = "sleep"
"#
    )
}

/// After SIGUSR2: wait until the old master (`server`) has left, and return the new master's
/// pid from `pid_file` (the new master is not the test's child; stop it with [`StopOnDrop`]).
pub fn wait_for_upgrade(server: &mut Server, pid_file: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "old master still running; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Stops (QUIT) a master the test does not own as a [`Server`], e.g. the one a binary upgrade
/// started, and waits a little for it to leave.
pub struct StopOnDrop(pub i32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGQUIT,
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && Path::new(&format!("/proc/{}", self.0)).exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid()),
                nix::sys::signal::Signal::SIGQUIT,
            );
            let deadline = Instant::now() + Duration::from_secs(3);
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
}

/// One listening socket as `ss -ln` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SsListen {
    pub recv_q: u64,
    pub send_q: u64,
}

/// `ss -lnx` (unix) or `ss -lnt` (TCP) for the listener whose local address is `local`
/// (a socket path, or `127.0.0.1:PORT`).
pub fn ss_listen(local: &str, unix: bool) -> Option<SsListen> {
    let out = Command::new(require("ss"))
        .arg(if unix { "-lnx" } else { "-lnt" })
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // unix: Netid State Recv-Q Send-Q Local Peer…; -t: State Recv-Q Send-Q Local Peer
        let (rq, sq, local_col) = if unix {
            (cols.get(2), cols.get(3), cols.get(4))
        } else {
            (cols.get(1), cols.get(2), cols.get(3))
        };
        if let (Some(rq), Some(sq), Some(l)) = (rq, sq, local_col) {
            if *l == local {
                return Some(SsListen {
                    recv_q: rq.parse().ok()?,
                    send_q: sq.parse().ok()?,
                });
            }
        }
    }
    None
}

/// Pids of the direct children of `parent` (every thread's `/proc/PID/task/TID/children`),
/// sorted.
pub fn child_pids(parent: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
        return pids;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids.sort();
    pids
}

/// A unique-ish free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from an HTTP server on 127.0.0.1:`port` (the master's status listener); returns
/// (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect status listener");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read status response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP response: {text}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// The master's `/status?json`, parsed.
pub fn master_status(port: u16) -> serde_json::Value {
    let (code, body) = http_get(port, "/status?json");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A writer the test can look into while a clone of it is held elsewhere (a log subscriber, a
/// `status --watch` loop).
#[derive(Clone, Default)]
pub struct SharedWriter(pub Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a child entry point prints when it runs in probe mode.
pub const CHILD_PROBE_OK: &str = "child entry point: probe ok";

/// For a test that doubles as a child entry point (the parent test re-executes this test binary
/// with `--exact NAME` and its instructions in `var`): run without `var`, it checks that the
/// entry point really is reachable that way — it starts itself with `var=probe` and expects
/// [`CHILD_PROBE_OK`] — instead of passing without doing anything.
pub fn child_entry_point_answers(name: &str, var: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(var, "probe")
        .output()
        .expect("re-run this test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(CHILD_PROBE_OK),
        "{name} did not answer as a child entry point ({}): {stdout}",
        out.status
    );
}

/// A pool `p` of 2 thread workers running the built-in `sleep` app on `{dir}/p.sock` (backlog
/// 64), the master's status on a port the kernel picks ([`Server::status_port`]): what the
/// history, dashboard and `status --watch` tests put a burst through.
pub const SLEEP_TWO_WORKERS: &str = r#"
[global]
status_listen = "127.0.0.1:0"
runtime_dir = "{dir}/rt"

[pool.p]
workers = "thread"
max_children = 2

[pool.p.listen]
address = "unix:{dir}/p.sock"
backlog = 64

[pool.p.app]
kind = "sleep"
"#;

/// `clients` threads each sending `sleep?ms=100` to `addr` one after another until `length`
/// has passed (the last request may end a little later); how many were served.
pub fn sleep_burst(addr: &str, clients: usize, length: Duration) -> usize {
    let deadline = Instant::now() + length;
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let mut served = 0;
                while Instant::now() < deadline {
                    let r = raw::get(&addr, "/sleep", "ms=100");
                    assert_eq!(r.app_status, 0, "{}", r.text());
                    served += 1;
                }
                served
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

/// Run `fastpm bench ADDRESS ARGS…` to the end; its JSON summary (panics, with its output,
/// when it fails).
pub fn fastpm_bench(addr: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(FASTPM)
        .arg("bench")
        .arg(addr)
        .args(args)
        .output()
        .expect("run fastpm bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
