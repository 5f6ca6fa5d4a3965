//! The backlog advice (issue 11 item 7) from a real overload, in the setting of
//! docs/OVERLOAD.md: 4 workers of the built-in `sleep` app taking 50 ms a request, clients
//! (`fastpm bench`, 200 of them) giving up after 1 s like nginx's `fastcgi_read_timeout`, and
//! the pool told so with `client_timeout = "1s"`. The pool can serve 4 / 50 ms = 80 requests a
//! second, so a queue longer than about 80 holds requests that cannot be answered in time: the
//! master's `/status` must name a queue length near 80 and flag the classic backlog 511 as far
//! too long, in JSON, in `fastpm status` and on `/metrics`. A second pool with backlog 16 under
//! the same load fills its queue: the advice says the queue reached the backlog.
//!
//! The margin, from what the measurement can and cannot do: the advice is `μ × (T − S)`, with
//! `μ` the requests finished per saturated second and `S` the 50 ms service time, so on an
//! ideal machine 80/s × 0.95 s = 76. `μ` cannot exceed 80/s (the sleep does not end early), and
//! a per-second count can read one or two above only when a second's boundary splits requests
//! unevenly (the median over the saturated seconds evens that out): the advice stays ≤ 80, the
//! issue's `μ × T`. Below, the 2 shared CPUs of this machine stretch the 50 ms when other jobs
//! run (docs/OVERLOAD.md measured 74–79/s goodput for the same pool under load): 20% below the
//! ideal is allowed, an advice from 64 to 80. Counting abandoned requests as served (what
//! `accepted conn` per second does: 200/s here) would advise ~190 and fail.

mod common;

use std::process::Command;

use common::{fastpm_bench, http_get, master_status, Server, FASTPM};
use serde_json::Value;

/// Two pools alike but for their backlog: 4 process workers of `sleep`, clients that wait 1 s.
fn config() -> String {
    let pool = |name: &str, backlog: u32| {
        format!(
            r#"
[pool.{name}]
workers = "process"
max_children = 4
client_timeout = "1s"

[pool.{name}.listen]
address = "unix:{{dir}}/{name}.sock"
backlog = {backlog}

[pool.{name}.app]
kind = "sleep"
"#
        )
    };
    format!(
        "[global]\nstatus_listen = \"127.0.0.1:0\"\nruntime_dir = \"{{dir}}/rt\"\n{}{}",
        pool("classic", 511),
        pool("short", 16)
    )
}

/// `fastpm bench` with 200 clients giving up after 1 s, 50 ms requests, for `seconds`.
fn overload(server: &Server, socket: &str, seconds: u32) -> Value {
    let addr = format!("unix:{}", server.path(socket).display());
    let seconds = seconds.to_string();
    fastpm_bench(
        &addr,
        &[
            "-c",
            "200",
            "-d",
            &seconds,
            "--timeout-ms",
            "1000",
            "--path",
            "/sleep?ms=50",
        ],
    )
}

fn pool<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == name)
        .unwrap_or_else(|| panic!("no pool {name} in {status}"))
}

#[test]
fn the_overload_experiment_advises_about_80_and_flags_511() {
    let server = Server::start(&config());
    let port = server.status_port();
    let before = master_status(port);
    let classic = pool(&before, "classic");
    assert_eq!(
        classic["listen queue len"], 511,
        "the kernel must hold backlog 511 (net.core.somaxconn ≥ 511) for this setting: {classic}"
    );
    assert_eq!(classic["advised backlog"], Value::Null, "nothing ran yet");
    assert_eq!(classic["backlog warning"], 0, "nothing to warn of yet");
    assert!(classic["backlog advice"]
        .as_str()
        .unwrap()
        .starts_with("no request ran"));

    let bench = overload(&server, "classic.sock", 8);
    let status = master_status(port);
    let classic = pool(&status, "classic");
    let rate = classic["service rate"].as_f64().unwrap();
    let advised = classic["advised backlog"].as_u64().unwrap();
    let advice = classic["backlog advice"].as_str().unwrap();
    let seen = format!(
        "service rate {rate}, advised {advised}: {advice}\nbench: {bench}\nlog:\n{}",
        server.log()
    );
    eprintln!("measured: service rate {rate}/s, advised backlog {advised}: {advice}");
    assert!(
        advice.contains("saturated seconds"),
        "measured at saturation: {seen}"
    );
    assert!((67.0..=84.0).contains(&rate), "{seen}");
    assert!((64..=80).contains(&advised), "near 80: {seen}");
    assert!(
        advice.starts_with(&format!(
            "backlog 511 is far above the {advised} queued requests"
        )),
        "{seen}"
    );
    assert!(advice.contains("client_timeout 1s"), "{seen}");
    assert_eq!(
        classic["backlog warning"], 1,
        "far above: a warning ({seen})"
    );
    assert!(!advice.contains("reached the backlog"), "{seen}");

    // The same advice in `fastpm status` and on /metrics.
    let out = Command::new(FASTPM)
        .args([
            "status",
            "--url",
            &format!("http://127.0.0.1:{port}/status"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("advised backlog:") && l.ends_with(&format!(" {advised}"))),
        "{text}"
    );
    assert!(text.contains("backlog 511 is far above"), "{text}");
    let (code, metrics) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!(
            "fastpm_advised_backlog{{pool=\"classic\"}} {advised}\n"
        )),
        "{metrics}"
    );

    // A short backlog under the same load: the queue fills, new connections are refused.
    let bench = overload(&server, "short.sock", 4);
    let status = master_status(port);
    let short = pool(&status, "short");
    let advice = short["backlog advice"].as_str().unwrap();
    assert!(
        bench["outcomes"]["eagain"].as_u64().unwrap_or(0) > 0,
        "a full unix queue answers EAGAIN: {bench}"
    );
    assert!(
        advice.starts_with("backlog 16 is within the"),
        "{advice}\n{short}"
    );
    assert!(
        advice.contains("the queue reached the backlog (16)"),
        "{advice}\n{short}"
    );
    assert_eq!(
        short["backlog warning"], 1,
        "the queue reached the backlog: {short}"
    );
}
