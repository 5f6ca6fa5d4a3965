//! The master's history and its dashboard end to end: a real `fastpm` with 2 workers of the
//! built-in `sleep` app takes a 3-second burst (40 clients × `sleep?ms=100`); seconds later
//! `/history?json` still shows the queue the burst built (≥ 30), and headless Chromium (Debian's
//! `chromium`) loads `/`, runs its script and draws the charts from that history — the dumped
//! DOM has SVG polylines with points — while the page names no outside URL. A screenshot is
//! left at `target/dashboard.png` for people to look at.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_get, require, sleep_burst, Server, SLEEP_TWO_WORKERS};
use serde_json::Value;

const CLIENTS: usize = 40;
const BURST: Duration = Duration::from_secs(3);

fn history(port: u16, query: &str) -> Value {
    let (code, body) = http_get(port, &format!("/history?json{query}"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Run chromium headless with `args` then `url`, at most 60 s; its stdout.
fn chromium(args: &[String], url: &str) -> String {
    let browser = require("chromium");
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).ok();
        out
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// The `points` of every `<polyline … data-series="NAME" …>` in a serialized DOM.
fn polyline_points(dom: &str, series: &str) -> Vec<String> {
    dom.split("<polyline")
        .skip(1)
        .map(|rest| &rest[..rest.find('>').unwrap_or(rest.len())])
        .filter(|attrs| attrs.contains(&format!("data-series=\"{series}\"")))
        .filter_map(|attrs| {
            let start = attrs.find("points=\"")? + "points=\"".len();
            let len = attrs[start..].find('"')?;
            Some(attrs[start..start + len].to_string())
        })
        .collect()
}

#[test]
fn burst_stays_in_history_and_the_dashboard_draws_it() {
    let browser = require("chromium");
    let server = Server::start(SLEEP_TWO_WORKERS);
    let port = server.status_port();
    let addr = format!("unix:{}", server.path("p.sock").display());
    let served = sleep_burst(&addr, CLIENTS, BURST);
    assert!(served >= 40, "only {served} requests served");
    // A few seconds later the queue is empty again, but the history still holds the burst.
    std::thread::sleep(Duration::from_secs(3));
    let status = common::master_status(port);
    assert_eq!(status["pools"][0]["listen queue"], 0, "{status}");
    let h = history(port, "");
    let pool = &h["pools"][0];
    assert_eq!(pool["pool"], "p");
    let queue: Vec<u64> = pool["listen queue"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let peak = queue.iter().copied().max().unwrap_or(0);
    assert!(
        peak >= 30,
        "max listen queue {peak} in the series {queue:?}; log:\n{}",
        server.log()
    );
    assert_eq!(pool["listen queue len"], 64, "{pool}");
    let n = pool["t"].as_array().unwrap().len();
    for key in [
        "listen queue",
        "active processes",
        "queue wait p99 ms",
        "rejected conn",
    ] {
        assert_eq!(pool[key].as_array().map(Vec::len), Some(n), "{key}: {pool}");
    }
    let t: Vec<u64> = pool["t"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(
        t.windows(2).all(|w| w[1] == w[0] + 1),
        "one slot a second: {t:?}"
    );
    let active_peak = pool["active processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .max();
    assert_eq!(active_peak, Some(2), "{pool}");
    let waits: Vec<f64> = pool["queue wait p99 ms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(
        waits.iter().any(|&w| w > 500.0),
        "40 clients on 2 workers of 100 ms wait ~2 s: {waits:?}"
    );
    let accepted: u64 = pool["accepted conn"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert!(accepted >= 40, "{pool}");
    // ?seconds and ?pool narrow it; an unknown pool is a 404, a bad number a 400.
    let last = history(port, "&pool=p&seconds=2");
    assert_eq!(last["pools"][0]["t"].as_array().unwrap().len(), 2);
    assert_eq!(http_get(port, "/history?json&pool=nope").0, 404);
    assert_eq!(http_get(port, "/history?json&seconds=x").0, 400);

    // The page itself: embedded, no outside URL (the SVG namespace name is never fetched).
    let (code, page) = http_get(port, "/");
    assert_eq!(code, 200);
    let outside = page.replace("\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !outside.contains("http://") && !outside.contains("https://"),
        "the dashboard names an outside URL"
    );
    assert!(page.contains("name=\"viewport\""), "readable on a phone");

    let url = format!("http://127.0.0.1:{port}/");
    let dom = chromium(
        &["--virtual-time-budget=5000".into(), "--dump-dom".into()],
        &url,
    );
    assert!(dom.contains("<svg"), "no chart in the DOM:\n{dom}");
    let drawn = polyline_points(&dom, "listen queue");
    assert!(
        drawn.iter().any(|p| p.split(' ').count() >= 5),
        "the listen queue chart has no data drawn: {drawn:?}\n{dom}"
    );
    assert!(
        !polyline_points(&dom, "active processes").is_empty(),
        "workers chart"
    );
    assert!(
        dom.contains("max listen queue"),
        "the php-fpm fields beside the charts"
    );
    assert!(dom.contains("request uri"), "the per-worker table of ?full");
    assert!(dom.contains("updated "), "the script ran to the end: {dom}");
    // The backlog advice (the master's /status) beside the queue chart: its number in the
    // chart's subtitle, its sentence above the charts.
    assert!(
        dom.contains("advised ≤ "),
        "the advised backlog by the queue chart: {dom}"
    );
    assert!(
        dom.contains("Backlog advice: backlog 64 "),
        "the advice: {dom}"
    );
    // Marked as a warning exactly when the status says so (`backlog warning`), not by its words.
    let warning = common::master_status(port)["pools"][0]["backlog warning"].clone();
    assert_eq!(
        dom.contains("class=\"advice warn\""),
        warning == 1,
        "backlog warning {warning}: {dom}"
    );

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&shot);
    chromium(
        &[
            "--virtual-time-budget=5000".into(),
            "--window-size=1100,1300".into(),
            format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG at {}", shot.display());
    drop(browser);
}
