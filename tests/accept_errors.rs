//! A worker that cannot accept (EMFILE: it is at its descriptor limit) must not stall the pool:
//! it backs off *without* the accept lock, so the other workers keep taking connections; each
//! back-off is counted (`accept errors`), and the worker serves again once it has descriptors.
//!
//! Linux's accept() reserves the new descriptor before it waits, so a worker whose soft
//! RLIMIT_NOFILE is below its open descriptors fails every accept() at once, queue or not.
//! Before the fix, the failing worker slept with the lock held and tried again, still holding
//! it: every other worker waited on the lock forever and the pool stopped serving.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::procs::children_named;
use common::{http_get, master_status, raw, require, Server};

/// Set the soft descriptor limit of process `pid` (prlimit(2) on another process; root).
fn set_nofile(pid: i32, soft: u32) {
    let out = Command::new(require("prlimit"))
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
        .output()
        .unwrap();
    assert!(out.status.success(), "prlimit: {out:?}");
}

/// One /sleep request; Ok(elapsed) when answered within 3 s.
fn sleep_request(socket: &std::path::Path, ms: u32) -> Result<Duration, String> {
    let started = Instant::now();
    let mut c = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(&raw::request("/sleep", &format!("ms={ms}"), b"", false))
        .map_err(|e| e.to_string())?;
    let mut reader: &mut dyn std::io::Read = &mut c;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        raw::read_response(&mut reader)
    })) {
        Ok(Some(r)) if r.body().contains(&format!("slept {ms} ms")) => Ok(started.elapsed()),
        other => Err(format!(
            "no answer after {:?}: {:?}",
            started.elapsed(),
            other.map(|r| r.map(|r| r.text()))
        )),
    }
}

fn accept_errors(port: u16) -> u64 {
    let pool = &master_status(port)["pools"][0];
    pool["accept errors"]
        .as_u64()
        .unwrap_or_else(|| panic!("`accept errors` missing: {pool}"))
}

/// Requests served by worker `pid`, from the master's `?full` status.
fn served_by(port: u16, pid: i32) -> u64 {
    let (code, body) = http_get(port, "/status?json&full");
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    status["pools"][0]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .map(|p| p["requests"].as_u64().unwrap())
        .unwrap_or_else(|| panic!("worker {pid} not on the status page: {status}"))
}

fn pool_survives_a_worker_at_its_fd_limit(lock: &str) {
    let server = Server::start(&common::sleep_pool_config(lock, 0, 2));
    let port = server.status_port();
    let socket = server.path("p.sock");
    let deadline = Instant::now() + Duration::from_secs(5);
    let workers = loop {
        let kids = children_named(server.pid(), "exe");
        if kids.len() == 2 {
            break kids;
        }
        assert!(Instant::now() < deadline, "2 workers expected: {kids:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    // Both workers up (a worker makes its epoll sets and eventfds before it claims its slot
    // and shows on the status page): the limit must meet one that is serving, not starting.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !workers.iter().all(|pid| {
        let body = http_get(port, "/status?json&full").1;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        status["pools"][0]["processes"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["pid"] == *pid))
    }) {
        assert!(
            Instant::now() < deadline,
            "workers {workers:?} not on the status page"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    sleep_request(&socket, 1).unwrap();
    let stuck = workers[0];
    set_nofile(stuck, 3);

    // The other worker serves every request, one after the other, whoever holds the lock.
    for i in 0..20 {
        if let Err(e) = sleep_request(&socket, 1) {
            panic!(
                "accept_lock = {lock}: request {i} with worker {stuck} at its fd limit: {e}; log:\n{}",
                server.log()
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while accept_errors(port) == 0 {
        assert!(
            Instant::now() < deadline,
            "accept errors not counted; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = http_get(port, "/status").1;
    assert!(text.contains("accept errors:"), "{text}");
    let metrics = http_get(port, "/metrics").1;
    assert!(metrics.contains("fastpm_accept_errors_total{"), "{metrics}");
    assert!(server.log().contains("accept failed"), "{}", server.log());

    // Descriptors again: the worker serves again and the counter stands still.
    set_nofile(stuck, 1024);
    let before = served_by(port, stuck);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_by(port, stuck) == before {
        assert!(
            Instant::now() < deadline,
            "worker {stuck} did not serve again; log:\n{}",
            server.log()
        );
        // Two at once: one of them must go to the recovered worker.
        let a = std::thread::spawn({
            let socket = socket.clone();
            move || sleep_request(&socket, 50)
        });
        sleep_request(&socket, 50).unwrap();
        a.join().unwrap().unwrap();
    }
    let settled = accept_errors(port);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        assert_eq!(accept_errors(port), settled, "still failing after recovery");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_worker_at_its_fd_limit_does_not_stall_the_mutex_pool() {
    pool_survives_a_worker_at_its_fd_limit("mutex");
}

#[test]
fn a_worker_at_its_fd_limit_does_not_stall_the_fcntl_pool() {
    pool_survives_a_worker_at_its_fd_limit("fcntl");
}
