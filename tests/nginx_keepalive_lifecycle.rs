//! The lifecycle under real keep-alive traffic: nginx with an upstream `keepalive` cache and
//! `fastcgi_keep_conn on` (conf/nginx.conf's shape) in front of worker processes, clients
//! sending GETs and POSTs on kept HTTP connections the whole time, while the master is told to
//! reload (HUP), recycles workers (`max_requests`) and stops (TERM). What a user sees: how many
//! requests failed, how long old workers lived, how long TERM took.
//!
//! Not asserted yet: failed POSTs. Closing a kept connection (the only way to retire a worker
//! process that holds one) races with nginx picking it from its cache in the same event-loop
//! turn, and nginx does not retry a POST it began to send (GETs it retries, so they never
//! fail). Measured here: a few POSTs in ten thousand during HUP, TERM and max_requests = 100.
//! The fix is to hand kept connections over instead of closing them (the async front's job);
//! until then the tests print the count, and assert everything else.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nginx::{kept_connections_to, Nginx};
use common::Server;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn start(max_requests: u32) -> (Server, Nginx) {
    let server = Server::start(&format!(
        r#"
[global]
status_listen = ""
runtime_dir = "{{dir}}/rt"
shutdown_timeout = "10s"

[pool.k]
workers = "process"
max_children = 4
max_requests = {max_requests}

[pool.k.listen]
address = "unix:{{dir}}/k.sock"

[pool.k.app]
kind = "echo"
"#
    ));
    let nginx = Nginx::start(
        server.dir.path(),
        kept_connections_to(&server.path("k.sock"), 8),
    );
    (server, nginx)
}

/// Counts of what the clients saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed_get: AtomicU64,
    failed_post: AtomicU64,
}

/// One HTTP/1.1 request on a kept connection; the status code (0 when the connection broke).
fn http(conn: &mut BufReader<TcpStream>, post: bool) -> u16 {
    let request = if post {
        "POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\n\r\na=1&b=two"
    } else {
        "GET /g?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    };
    if conn.get_mut().write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut status = String::new();
    if conn.read_line(&mut status).unwrap_or(0) == 0 {
        return 0;
    }
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = None;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).unwrap_or(0) == 0 {
            return 0;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if line == "\r\n" {
            break;
        }
    }
    if chunked {
        loop {
            let mut size = String::new();
            if conn.read_line(&mut size).unwrap_or(0) == 0 {
                return 0;
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            if conn.read_exact(&mut chunk).is_err() {
                return 0;
            }
            if n == 0 {
                break;
            }
        }
    } else if let Some(n) = length {
        let mut body = vec![0; n];
        if conn.read_exact(&mut body).is_err() {
            return 0;
        }
    }
    code
}

/// `clients` threads sending GET and POST alternately on kept connections until `stop`.
fn load(
    port: u16,
    clients: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (stop, tally) = (stop.clone(), tally.clone());
            std::thread::spawn(move || {
                let connect = || {
                    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                    BufReader::new(s)
                };
                let mut conn = connect();
                let mut post = false;
                while !stop.load(Relaxed) {
                    post = !post;
                    match http(&mut conn, post) {
                        200 => {
                            tally.ok.fetch_add(1, Relaxed);
                        }
                        _ => {
                            let counter = if post {
                                &tally.failed_post
                            } else {
                                &tally.failed_get
                            };
                            counter.fetch_add(1, Relaxed);
                            conn = connect();
                        }
                    }
                }
            })
        })
        .collect()
}

fn summary(tally: &Tally) -> (u64, u64, u64) {
    (
        tally.ok.load(Relaxed),
        tally.failed_get.load(Relaxed),
        tally.failed_post.load(Relaxed),
    )
}

#[test]
fn hup_under_keepalive_traffic_retires_old_workers_within_5_s() {
    let (server, nginx) = start(0);
    let before = common::child_pids(server.pid());
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients = load(nginx.port, 8, stop.clone(), tally.clone());
    std::thread::sleep(Duration::from_secs(1));
    kill(Pid::from_raw(server.pid()), Signal::SIGHUP).unwrap();
    let hup = Instant::now();
    let deadline = hup + Duration::from_secs(5);
    loop {
        let now = common::child_pids(server.pid());
        if now.iter().all(|p| !before.contains(p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old workers still there 5 s after HUP: {before:?} vs {now:?}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let retired_in = hup.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed_get, failed_post) = summary(&tally);
    eprintln!("HUP: old workers gone in {retired_in:?}; ok {ok}, failed GET {failed_get}, failed POST {failed_post}");
    assert!(ok > 100, "too little traffic to judge: {ok}");
    assert_eq!(failed_get, 0, "log:\n{}", server.log());
}

#[test]
fn term_after_keepalive_traffic_exits_within_5_s() {
    let (mut server, nginx) = start(0);
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients = load(nginx.port, 8, stop.clone(), tally.clone());
    std::thread::sleep(Duration::from_secs(1));
    // The clients finish their last request, then TERM: nginx's cache is full of idle kept
    // connections, which must not hold the stop (a request sent after fastpm has left can only
    // fail, so the load stops first).
    stop.store(true, Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let term = Instant::now();
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(5));
    let took = term.elapsed();
    let (ok, failed_get, failed_post) = summary(&tally);
    eprintln!("TERM: exit in {took:?} ({status}); ok {ok}, failed GET {failed_get}, failed POST {failed_post}");
    assert!(status.success(), "{status}; log:\n{}", server.log());
    assert!(took < Duration::from_secs(5), "TERM took {took:?}");
    assert_eq!(failed_get, 0);
}

#[test]
fn max_requests_under_keepalive_traffic_recycles_workers() {
    let (server, nginx) = start(100);
    let before = common::child_pids(server.pid());
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients = load(nginx.port, 8, stop.clone(), tally.clone());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed_get, failed_post) = summary(&tally);
    eprintln!(
        "max_requests = 100: ok {ok} (≈{} per worker generation of 4), failed GET {failed_get}, failed POST {failed_post}; workers now {:?} (were {before:?})",
        ok / 4,
        common::child_pids(server.pid())
    );
    if failed_post > 0 {
        // What nginx saw, once per kind of error: the cause of a failed POST.
        let log = std::fs::read_to_string(server.path("nginx-error.log")).unwrap_or_default();
        let mut kinds = std::collections::BTreeMap::new();
        for line in log.lines().filter(|l| l.contains("upstream")) {
            let kind = line.split("] ").nth(1).unwrap_or(line);
            let kind = kind.split(", client").next().unwrap_or(kind);
            let kind: String = kind.chars().filter(|c| !c.is_ascii_digit()).collect();
            *kinds.entry(kind).or_insert(0) += 1;
        }
        eprintln!("nginx errors: {kinds:#?}");
        let mut ours = std::collections::BTreeMap::new();
        for line in server.log().lines().filter(|l| {
            l.contains("closed")
                || l.contains("cannot")
                || l.contains("lost")
                || l.contains("max_requests")
                || l.contains("DEBUG")
        }) {
            let kind: String = line
                .chars()
                .skip(28)
                .filter(|c| !c.is_ascii_digit())
                .collect();
            *ours.entry(kind).or_insert(0) += 1;
        }
        eprintln!("fastpm: {ours:#?}");
    }
    // Every worker served at most max_requests: about ok / 100 recycles happened.
    assert!(
        common::child_pids(server.pid())
            .iter()
            .all(|p| !before.contains(p)),
        "no worker was recycled after {ok} requests"
    );
    assert_eq!(failed_get, 0, "GETs failed while workers recycled");
    // nginx never retries a POST: a kept connection closed under it is a 502. A retiring
    // worker passes its kept connections on instead (front::pass).
    assert_eq!(failed_post, 0, "POSTs failed while workers recycled");
}
