//! `fastpm bench` against a running pool: the JSON summary counts what happened — answers,
//! `EAGAIN` on a full unix queue, timeouts (which the pool then sees as abandoned requests),
//! and 503s with FCGI_OVERLOADED from a shedding pool.

mod common;

use std::time::Duration;

use common::{master_status, Server};
use serde_json::Value;

fn config(status_port: u16, workers: u32, backlog: u32, overload: &str) -> String {
    format!(
        r#"
[global]
status_listen = "127.0.0.1:{status_port}"
runtime_dir = "{{dir}}/rt"

[pool.b]
workers = "thread"
max_children = {workers}

[pool.b.listen]
address = "unix:{{dir}}/b.sock"
backlog = {backlog}

[pool.b.app]
kind = "sleep"

[pool.b.overload]
{overload}
"#
    )
}

fn bench(server: &Server, args: &[&str]) -> Value {
    common::fastpm_bench(&format!("unix:{}", server.path("b.sock").display()), args)
}

#[test]
fn counts_answers_and_latency() {
    let server = Server::start(&config(0, 2, 511, "policy = \"none\""));
    let port = server.status_port();
    let s = bench(&server, &["-c", "4", "-n", "40", "--path", "/sleep?ms=20"]);
    assert_eq!(s["requests"], 40, "{s}");
    assert_eq!(s["outcomes"]["ok"], 40, "{s}");
    assert_eq!(s["outcomes"].as_object().unwrap().len(), 1, "{s}");
    let p50 = s["latency_ms"]["p50"].as_f64().unwrap();
    // Four clients on two 20 ms workers: ~40 ms each.
    assert!((20.0..200.0).contains(&p50), "{s}");
    assert_eq!(master_status(port)["pools"][0]["accepted conn"], 40);
    // With --keep the same counts come over reused connections.
    let s = bench(
        &server,
        &["-c", "2", "-n", "10", "--keep", "--path", "/sleep?ms=1"],
    );
    assert_eq!(s["outcomes"]["ok"], 10, "{s}");
}

#[test]
fn full_unix_queue_is_eagain() {
    let server = Server::start(&config(0, 1, 2, "policy = \"none\""));
    let s = bench(
        &server,
        &[
            "-c",
            "12",
            "-d",
            "1",
            "--timeout-ms",
            "5000",
            "--path",
            "/sleep?ms=300",
        ],
    );
    let eagain = s["outcomes"]["eagain"].as_u64().unwrap_or(0);
    assert!(eagain > 0, "{s}");
    assert!(s["outcomes"]["ok"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(s["outcomes"].get("timeout"), None, "{s}");
}

#[test]
fn timeouts_abandon_and_the_pool_skips_them() {
    let server = Server::start(&config(0, 1, 511, "policy = \"none\""));
    let port = server.status_port();
    // Three clients, one worker sleeping 1 s per request, a 300 ms timeout: every client gives
    // up; the worker runs the first request, then finds the other two clients gone.
    let s = bench(
        &server,
        &[
            "-c",
            "3",
            "-n",
            "3",
            "--timeout-ms",
            "300",
            "--path",
            "/sleep?ms=1000",
        ],
    );
    assert_eq!(s["outcomes"]["timeout"], 3, "{s}");
    std::thread::sleep(Duration::from_millis(1200));
    let pool = &master_status(port)["pools"][0];
    assert_eq!(pool["abandoned requests"], 2, "{pool}");
    assert_eq!(pool["accepted conn"], 3, "{pool}");
}

#[test]
fn shed_answers_are_503_with_fcgi_overloaded() {
    let server = Server::start(&config(
        0,
        1,
        511,
        "policy = \"deadline\"\nmax_queue_wait = \"50ms\"",
    ));
    let port = server.status_port();
    let s = bench(
        &server,
        &[
            "-c",
            "6",
            "-d",
            "1",
            "--timeline-ms",
            "100",
            "--path",
            "/sleep?ms=100",
        ],
    );
    let shed = s["outcomes"]["503"].as_u64().unwrap_or(0);
    assert!(shed > 0, "{s}");
    assert_eq!(s["fcgi_overloaded"], shed, "{s}");
    assert!(s["outcomes"]["ok"].as_u64().unwrap() >= 5, "{s}");
    // The timeline splits the same attempts over 100 ms intervals covering the run's wall
    // time (a little over 1 s; more on a loaded machine).
    assert_eq!(s["timeline_ms"], 100, "{s}");
    let timeline = s["timeline"].as_array().expect("a timeline");
    let intervals = s["duration_s"].as_f64().unwrap() * 10.0;
    let len = timeline.len() as f64;
    assert!((len - intervals).abs() <= 1.0, "{s}");
    for (i, b) in timeline.iter().enumerate() {
        assert_eq!(b["t_ms"], 100 * i as u64, "{s}");
    }
    for (key, total) in s["outcomes"].as_object().unwrap() {
        let summed: u64 = timeline.iter().map(|b| b[key].as_u64().unwrap()).sum();
        assert_eq!(summed, total.as_u64().unwrap(), "{key}: {s}");
    }
    let pool = &master_status(port)["pools"][0];
    assert_eq!(pool["shed requests"], shed, "{pool}");
}
