//! `queued requests`: complete requests fastpm read ahead of its workers (on kept connections
//! its front holds) and that wait for a free worker. Status shows that queue beside the
//! kernel's (`listen queue`) in text, JSON and OpenMetrics, and it drains back to 0.
//!
//! One worker, busy with a slow request; two kept connections idle in the front each send a
//! request: both are complete and both wait for the worker — 2 queued.

mod common;

use std::time::{Duration, Instant};

use common::{raw, Server};

fn config(workers: &str) -> String {
    format!(
        r#"
[global]
status_listen = "127.0.0.1:0"
runtime_dir = "{{dir}}/rt"

[pool.q]
workers = "{workers}"
max_children = 1

[pool.q.listen]
address = "unix:{{dir}}/q.sock"

[pool.q.app]
kind = "sleep"
"#
    )
}

fn send(conn: &mut dyn raw::Conn, query: &str) {
    conn.write_all(&raw::request("/", query, b"", true))
        .unwrap();
}

/// Reads one answer on `conn`: the app's own (a 5xx would carry a `Status:` header).
fn answer(conn: &mut dyn raw::Conn) {
    let text = raw::read_response(conn).expect("a response").text();
    assert!(!text.contains("Status: 5"), "{text}");
}

/// The pool's `queued requests` once `want(value)` holds, or a panic with the last status.
fn wait_for_queued(port: u16, want: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = common::master_status(port);
        let pool = status["pools"][0].clone();
        if pool["queued requests"].as_u64() == Some(want) {
            return pool;
        }
        assert!(
            Instant::now() < deadline,
            "queued requests never reached {want}: {pool}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn queued_requests_are_shown_and_drain(workers: &str) {
    let server = Server::start(&config(workers));
    let port = server.status_port();
    let addr = format!("unix:{}", server.path("q.sock").display());
    // Three kept connections, each answered once: idle in the front.
    let mut conns: Vec<_> = (0..3).map(|_| raw::connect(&addr)).collect();
    for conn in conns.iter_mut() {
        send(&mut **conn, "ms=1");
        answer(&mut **conn);
    }
    wait_for_queued(port, 0);

    // The only worker sleeps 1.5 s on the first; the other two are complete and wait.
    send(&mut *conns[0], "ms=1500");
    std::thread::sleep(Duration::from_millis(200));
    send(&mut *conns[1], "ms=1");
    send(&mut *conns[2], "ms=1");
    let pool = wait_for_queued(port, 2);
    assert_eq!(
        pool["listen queue"], 0,
        "nothing waits in the kernel: {pool}"
    );
    let (_, text) = common::http_get(port, "/status");
    assert!(text.contains("queued requests:"), "{text}");
    let (_, metrics) = common::http_get(port, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("fastpm_queued_requests{") && l.ends_with(" 2")),
        "{metrics}"
    );

    for conn in conns.iter_mut() {
        answer(&mut **conn);
    }
    let pool = wait_for_queued(port, 0);
    // Their wait in fastpm's queue is queue wait too (about 1.3 s each).
    let p99 = pool["queue wait p99 ms"]
        .as_f64()
        .expect("queue wait known");
    assert!(
        p99 >= 1000.0,
        "queue wait misses fastpm's own queue: {pool}"
    );
}

#[test]
fn thread_workers_show_their_queued_requests() {
    queued_requests_are_shown_and_drain("thread");
}

#[test]
fn process_workers_show_their_queued_requests() {
    queued_requests_are_shown_and_drain("process");
}
