//! The status page's `listen queue` is the kernel's: with 2 workers busy on `sleep` and 60
//! clients waiting, it matches `ss -ln`'s Recv-Q within ±3, on a unix socket and on TCP, and the
//! master's HTTP status answers while every worker is busy.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::raw;
use common::{master_status, ss_listen, Server};

const WAITING: u64 = 60;

fn config(address: &str, status_port: u16) -> String {
    format!(
        r#"
[global]
status_listen = "127.0.0.1:{status_port}"
runtime_dir = "{{dir}}/rt"

[pool.q]
workers = "thread"
max_children = 2

[pool.q.listen]
address = "{address}"
backlog = 511

[pool.q.app]
kind = "sleep"
"#
    )
}

fn fill_and_compare(server: &Server, addr: &str, ss_local: &str, unix: bool, status_port: u16) {
    // 2 connections keep both workers asleep, then 60 more wait in the kernel queue.
    let mut clients = Vec::new();
    for _ in 0..(WAITING + 2) {
        let mut c = raw::connect(addr);
        c.write_all(&raw::request("/sleep", "ms=4000", b"", false))
            .unwrap();
        clients.push(c);
    }
    let started = Instant::now();
    // Let the workers take their two and the sampler see the rest.
    std::thread::sleep(Duration::from_millis(300));
    let before = ss_listen(ss_local, unix)
        .expect("ss lists the socket")
        .recv_q;
    let status = master_status(status_port);
    let after = ss_listen(ss_local, unix)
        .expect("ss lists the socket")
        .recv_q;
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "too slow to be meaningful"
    );
    let pool = &status["pools"][0];
    let queue = pool["listen queue"].as_u64().expect("listen queue");
    let lo = before.min(after).saturating_sub(3);
    let hi = before.max(after) + 3;
    assert!(
        (lo..=hi).contains(&queue),
        "status listen queue {queue}, ss Recv-Q {before}..{after}; log:\n{}",
        server.log()
    );
    assert_eq!(before, WAITING, "ss sees the 60 waiting clients");
    assert!(
        pool["max listen queue"].as_u64().unwrap() >= queue,
        "{pool}"
    );
    assert_eq!(pool["active processes"], 2, "{pool}");
    drop(clients);
}

#[test]
fn unix_queue_depth_matches_ss() {
    let server = Server::start(&config("unix:{dir}/q.sock", 0));
    let port = server.status_port();
    let sock = server.path("q.sock");
    fill_and_compare(
        &server,
        &format!("unix:{}", sock.display()),
        sock.to_str().unwrap(),
        true,
        port,
    );
}

#[test]
fn tcp_queue_depth_matches_ss() {
    let server = Server::start(&config("127.0.0.1:0", 0));
    let port = server.status_port();
    let addr = format!("127.0.0.1:{}", server.pool_port("q"));
    fill_and_compare(&server, &addr, &addr, false, port);
    // TCP: the kernel's drop counter is known (a number, not null).
    let status = master_status(port);
    assert!(status["pools"][0]["listen drops"].is_u64(), "{status}");
}

#[test]
fn master_status_answers_fast_while_every_worker_is_busy() {
    let server = Server::start(&config("unix:{dir}/q.sock", 0));
    let port = server.status_port();
    let addr = format!("unix:{}", server.path("q.sock").display());
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut c = raw::connect(&addr);
        c.write_all(&raw::request("/sleep", "ms=3000", b"", false))
            .unwrap();
        clients.push(c);
    }
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let status = master_status(port);
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(status["pools"][0]["active processes"], 2, "{status}");
    assert_eq!(status["pools"][0]["idle processes"], 0, "{status}");
}
