//! `workers = "process"`: the master re-executes fastpm as worker processes that share the
//! listening socket behind each accept lock kind; a killed worker is replaced; TERM lets
//! in-flight requests finish; HUP reloads with no failed request; the master's status answers
//! while every worker is busy.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{master_status, raw, Launch, Server};

fn config(lock: &str, status_port: u16) -> String {
    common::sleep_pool_config(lock, status_port, 4)
}

/// The master's direct children (sorted pids).
fn children(pid: i32) -> Vec<i32> {
    common::child_pids(pid)
}

fn wait_for_children(server: &Server, n: usize, within: Duration) -> Vec<i32> {
    let deadline = Instant::now() + within;
    loop {
        let kids = children(server.pid());
        if kids.len() == n {
            return kids;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} worker processes, found {kids:?}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `clients` threads each send `each` requests to /sleep?ms=`ms`; returns (ok, failed).
fn load(addr: &str, clients: usize, each: usize, ms: u32) -> (u64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, ok, failed) = (addr.to_string(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                for _ in 0..each {
                    if one_request(&addr, ms) {
                        ok.fetch_add(1, Relaxed);
                    } else {
                        failed.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    (ok.load(Relaxed), failed.load(Relaxed))
}

fn one_request(addr: &str, ms: u32) -> bool {
    let path = addr.strip_prefix("unix:").unwrap();
    let Ok(mut c) = std::os::unix::net::UnixStream::connect(path) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    if c.write_all(&raw::request("/sleep", &format!("ms={ms}"), b"", false))
        .is_err()
    {
        return false;
    }
    let mut reader: &mut dyn std::io::Read = &mut c;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        raw::read_response(&mut reader)
    })) {
        Ok(Some(r)) => r.body().contains(&format!("slept {ms} ms")),
        _ => false,
    }
}

/// Closed-loop clients that keep sending /sleep?ms=`ms` until stopped; counts outcomes.
struct ContinuousLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ContinuousLoad {
    fn start(addr: &str, clients: usize, ms: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (addr, stop, ok, failed) =
                    (addr.to_string(), stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    while !stop.load(Relaxed) {
                        let counter = if one_request(&addr, ms) { &ok } else { &failed };
                        counter.fetch_add(1, Relaxed);
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// Stop the clients; (ok, failed).
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (self.ok.load(Relaxed), self.failed.load(Relaxed))
    }
}

#[test]
fn every_lock_kind_serves_with_four_worker_processes() {
    for lock in ["mutex", "fcntl", "flock", "none"] {
        let server = Server::start(&config(lock, 0));
        let port = server.status_port();
        let addr = format!("unix:{}", server.path("p.sock").display());
        let kids = wait_for_children(&server, 4, Duration::from_secs(5));
        let (ok, failed) = load(&addr, 8, 25, 5);
        assert_eq!((ok, failed), (200, 0), "lock {lock}");
        let (code, body) = common::http_get(port, "/status?json&full");
        assert_eq!(code, 200);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        let pool = &status["pools"][0];
        assert_eq!(pool["total processes"], 4, "lock {lock}: {pool}");
        let procs = pool["processes"].as_array().expect("processes");
        assert_eq!(procs.len(), 4, "lock {lock}");
        let mut pids: Vec<i32> = procs
            .iter()
            .map(|p| p["pid"].as_i64().unwrap() as i32)
            .collect();
        pids.sort();
        let mut kids = kids;
        kids.sort();
        assert_eq!(
            pids, kids,
            "lock {lock}: status lists the master's children"
        );
        for p in procs {
            assert!(
                p["requests"].as_u64().unwrap() > 0,
                "lock {lock}: idle worker {p}"
            );
        }
    }
}

#[test]
fn a_killed_worker_is_replaced_within_a_second_under_load() {
    let server = Server::start(&config("mutex", 0));
    let port = server.status_port();
    let addr = format!("unix:{}", server.path("p.sock").display());
    let kids = wait_for_children(&server, 4, Duration::from_secs(5));
    let load = ContinuousLoad::start(&addr, 6, 20);
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(kids[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed_at = Instant::now();
    let deadline = killed_at + Duration::from_secs(1);
    loop {
        let now = children(server.pid());
        if now.len() == 4 && !now.contains(&kids[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pool not whole 1 s after kill -9: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failed) = load.finish();
    assert!(
        failed <= 1,
        "lost {} requests (at most the killed one's)",
        failed
    );
    assert!(ok > 50);
    assert_eq!(master_status(port)["pools"][0]["total processes"], 4);
}

#[test]
fn term_lets_in_flight_requests_finish() {
    let mut server = Server::start(&config("mutex", 0));
    let addr = format!("unix:{}", server.path("p.sock").display());
    wait_for_children(&server, 4, Duration::from_secs(5));
    let mut conns = Vec::new();
    for _ in 0..6 {
        let mut c = raw::connect(&addr);
        c.write_all(&raw::request("/sleep", "ms=700", b"", false))
            .unwrap();
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(150));
    let status = server.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "{status}: {}", server.log());
    for mut c in conns {
        let r =
            raw::read_response(&mut *c).expect("every in-flight and queued request is answered");
        assert!(r.body().contains("slept 700 ms"));
    }
}

#[test]
fn master_status_answers_while_every_worker_process_is_busy() {
    let server = Server::start(&config("mutex", 0));
    let port = server.status_port();
    let addr = format!("unix:{}", server.path("p.sock").display());
    wait_for_children(&server, 4, Duration::from_secs(5));
    let mut conns = Vec::new();
    for _ in 0..6 {
        let mut c = raw::connect(&addr);
        c.write_all(&raw::request("/sleep", "ms=2000", b"", false))
            .unwrap();
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let status = master_status(port);
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(status["pools"][0]["active processes"], 4, "{status}");
}

#[test]
fn three_reloads_under_load_lose_nothing() {
    let server = Launch::new(&config("mutex", 0)).start();
    let addr = format!("unix:{}", server.path("p.sock").display());
    let first = wait_for_children(&server, 4, Duration::from_secs(5));
    let load = ContinuousLoad::start(&addr, 8, 10);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server.pid()),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(800));
    let (ok, failed) = load.finish();
    assert_eq!(
        failed,
        0,
        "failed requests across 3 reloads; log:\n{}",
        server.log()
    );
    assert!(ok > 100);
    let now = wait_for_children(&server, 4, Duration::from_secs(5));
    assert!(
        now.iter().all(|p| !first.contains(p)),
        "workers were replaced: {first:?} → {now:?}"
    );
}

#[test]
fn reload_applies_a_changed_backlog() {
    let server = Server::start(&config("none", 0));
    let port = server.status_port();
    wait_for_children(&server, 4, Duration::from_secs(5));
    let path = server.path("fastpm.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("address = \"unix:", "backlog = 100\naddress = \"unix:");
    std::fs::write(&path, text).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let len = master_status(port)["pools"][0]["listen queue len"]
            .as_u64()
            .unwrap();
        if len == 100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backlog still {len}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sock = server.path("p.sock");
    assert_eq!(
        common::ss_listen(sock.to_str().unwrap(), true)
            .unwrap()
            .send_q,
        100
    );
}

#[test]
fn max_requests_recycles_worker_processes() {
    let text = config("mutex", 0).replace("max_children = 4", "max_children = 2\nmax_requests = 5");
    let server = Server::start(&text);
    let addr = format!("unix:{}", server.path("p.sock").display());
    let first = wait_for_children(&server, 2, Duration::from_secs(5));
    let (ok, failed) = load(&addr, 1, 30, 1);
    assert_eq!((ok, failed), (30, 0));
    let now = wait_for_children(&server, 2, Duration::from_secs(5));
    // 30 requests, 2 workers, 5 each: at least one worker was recycled (how the lock shares the
    // requests between the two is the kernel's business).
    assert!(
        now.iter().any(|p| !first.contains(p)),
        "workers recycled after 5 requests: {first:?} → {now:?}"
    );
    assert!(
        !server.log().contains("WARN"),
        "a recycled worker is not a crash:\n{}",
        server.log()
    );
}

#[test]
fn worker_processes_run_as_the_pool_user() {
    let text =
        config("flock", 0).replace("max_children = 4", "max_children = 2\nuser = \"nobody\"");
    let server = Server::start(&text);
    let addr = format!("unix:{}", server.path("p.sock").display());
    let kids = wait_for_children(&server, 2, Duration::from_secs(5));
    let (ok, failed) = load(&addr, 2, 5, 1);
    assert_eq!((ok, failed), (10, 0), "log:\n{}", server.log());
    for pid in kids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace().skip(1).all(|u| u == "65534"),
            "{pid}: {uid}"
        );
    }
}

#[test]
fn ondemand_starts_workers_for_queued_connections_and_stops_idle_ones() {
    let text = config("mutex", 0).replace(
        "max_children = 4",
        "max_children = 4\npm = \"ondemand\"\nidle_timeout = \"1s\"",
    );
    let server = Server::start(&text);
    let port = server.status_port();
    let addr = format!("unix:{}", server.path("p.sock").display());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        children(server.pid()).is_empty(),
        "ondemand starts with no worker"
    );
    let (ok, failed) = load(&addr, 4, 3, 200);
    assert_eq!((ok, failed), (12, 0), "log:\n{}", server.log());
    let busy = master_status(port)["pools"][0]["max active processes"]
        .as_u64()
        .unwrap();
    assert!(
        busy >= 2,
        "workers were started for the queue (max active {busy})"
    );
    // Idle longer than idle_timeout: stopped again.
    wait_for_children(&server, 0, Duration::from_secs(4));
}

#[test]
fn dynamic_starts_start_servers_and_grows_under_load() {
    let text = config("mutex", 0).replace(
        "max_children = 4",
        "max_children = 6\npm = \"dynamic\"\nstart_servers = 2\nmin_spare_servers = 1\nmax_spare_servers = 2",
    );
    let server = Server::start(&text);
    let addr = format!("unix:{}", server.path("p.sock").display());
    wait_for_children(&server, 2, Duration::from_secs(5));
    let loader = {
        let addr = addr.clone();
        std::thread::spawn(move || load(&addr, 5, 2, 1500))
    };
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut most = 0;
    while Instant::now() < deadline {
        most = most.max(children(server.pid()).len());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        most > 2,
        "dynamic spawned above start_servers under load (saw {most})"
    );
    let (ok, failed) = loader.join().unwrap();
    assert_eq!((ok, failed), (10, 0));
}

#[test]
fn request_timeout_answers_504_for_that_request_only_and_replaces_the_worker() {
    let text = config("mutex", 0).replace(
        "max_children = 4",
        "max_children = 2\nrequest_timeout = \"500ms\"",
    );
    let server = Server::start(&text);
    let addr = format!("unix:{}", server.path("p.sock").display());
    wait_for_children(&server, 2, Duration::from_secs(5));
    let started = Instant::now();
    let mut slow = raw::connect(&addr);
    slow.write_all(&raw::request("/sleep", "ms=5000", b"", false))
        .unwrap();
    // Meanwhile the other worker serves normally.
    assert!(one_request(&addr, 10));
    let r = raw::read_response(&mut *slow).expect("the slow request gets an answer");
    assert!(r.text().starts_with("Status: 504"), "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(one_request(&addr, 10));
    wait_for_children(&server, 2, Duration::from_secs(2));
    let log = server.log();
    assert!(
        log.contains("request_timeout") && log.contains("/sleep"),
        "{log}"
    );
    assert!(
        !log.contains("WARN"),
        "a timed-out worker is not a crash:\n{log}"
    );
}

#[test]
fn a_hung_lock_holder_is_replaced() {
    let text = config("mutex", 0).replace("max_children = 4", "max_children = 1");
    let server = Server::start(&text);
    let addr = format!("unix:{}", server.path("p.sock").display());
    let kids = wait_for_children(&server, 1, Duration::from_secs(5));
    // Once it has served a request and is idle again it waits for the next one, holding the
    // accept turn (a worker frozen while it starts or finishes a response holds nothing and is
    // rightly not taken for a hung lock holder; under load those windows are wide).
    assert!(
        one_request(&addr, 1),
        "the worker serves before it is frozen"
    );
    // …and back to idle (a worker frozen while it finishes a response is not a lock holder).
    let port = server.status_port();
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::master_status(port)["pools"][0]["idle processes"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the worker did not come back to idle"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Frozen while it holds the accept lock (it waits in accept()): no more heartbeats.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(kids[0]),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    // Connect only once it is really stopped (state T): a connection it took just before
    // freezing would die with it, as any frozen worker's in-flight connection does.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !std::fs::read_to_string(format!("/proc/{}/stat", kids[0]))
        .unwrap()
        .contains(") T ")
    {
        assert!(Instant::now() < deadline, "worker did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    assert!(
        one_request(&addr, 1),
        "the queued request is served by the replacement; log:\n{}",
        server.log()
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(server.log().contains("no sign of life"), "{}", server.log());
    let now = wait_for_children(&server, 1, Duration::from_secs(2));
    assert_ne!(now, kids);
}

#[test]
fn usr2_binary_upgrade_keeps_the_socket_and_loses_nothing() {
    let text = config("mutex", 0).replace(
        "shutdown_timeout = \"10s\"",
        "shutdown_timeout = \"10s\"\npid_file = \"{dir}/fastpm.pid\"",
    );
    let mut server = Server::start(&text);
    let port = server.status_port();
    let addr = format!("unix:{}", server.path("p.sock").display());
    let old_pid = server.pid();
    wait_for_children(&server, 4, Duration::from_secs(5));
    let load = ContinuousLoad::start(&addr, 6, 10);
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .unwrap();
    // The old master leaves once the new one serves.
    let pid_file = server.path("fastpm.pid");
    let new_pid = common::wait_for_upgrade(&mut server, &pid_file);
    // Stop the new master at the end, whatever happens.
    let _stop = common::StopOnDrop(new_pid);
    assert_ne!(new_pid, old_pid);
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed) = load.finish();
    assert_eq!(
        failed,
        0,
        "failed requests across the upgrade; log:\n{}",
        server.log()
    );
    assert!(ok > 50);
    assert!(
        server.path("p.sock").exists(),
        "the old master left the socket file to the new one"
    );
    let status = master_status(port);
    assert_eq!(status["pools"][0]["total processes"], 4, "{status}");
    assert_eq!(children(new_pid).len(), 4);
}
