//! The held-request counters (DESIGN.md §5, §8) over a real scoreboard, in every status
//! format: the seven keys after `idle kept connections` in text, JSON, XML and HTML, their
//! `fastpm_…` families in OpenMetrics, and `max_held` refusals inside `rejected conn`.

use std::sync::atomic::Ordering::Relaxed;

use fastpm::scoreboard::Scoreboard;
use fastpm::status::{render_pool, Format, PoolInfo, PoolSnapshot, Query};
use serde_json::Value;

/// The keys, in order, with the value the board below gives each.
const HELD: [(&str, u64); 7] = [
    ("held requests", 1),
    ("max held requests", 5),
    ("channels", 3),
    ("messages published", 11),
    ("messages delivered", 2),
    ("held timeouts", 1),
    ("held clients gone", 1),
];

/// A pool whose holder held five requests at once: two answered by a message, one timed out,
/// one client gone, one still held; three channels, eleven publishes, four refusals.
fn snapshot() -> PoolSnapshot {
    let board = Scoreboard::create(&[1]).unwrap();
    let pool = board.pool(0);
    pool.held_requests.store(1, Relaxed);
    pool.max_held_requests.store(5, Relaxed);
    pool.messages_delivered.store(2, Relaxed);
    pool.held_timeouts.store(1, Relaxed);
    pool.held_gone.store(1, Relaxed);
    pool.held_channels.store(3, Relaxed);
    pool.messages_published.store(11, Relaxed);
    pool.held_refused.store(4, Relaxed);
    pool.shed_requests.store(6, Relaxed);
    let info = PoolInfo {
        name: "lp".into(),
        process_manager: "static".into(),
        listen_address: "unix:/run/lp.sock".into(),
        listen_backlog: 511,
        somaxconn: None,
        max_children: 1,
    };
    PoolSnapshot::collect(&info, pool, board.slots(0), false)
}

fn render(format: Format) -> String {
    render_pool(
        &snapshot(),
        &Query {
            format,
            full: false,
        },
    )
    .body
}

#[test]
fn json_has_the_held_keys_in_order_after_the_front_gauges() {
    let body = render(Format::Json);
    let v: Value = serde_json::from_str(&body).unwrap();
    for (key, want) in HELD {
        assert_eq!(v[key], want, "{key}");
    }
    let at = |key: &str| {
        body.find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key}"))
    };
    let mut last = at("idle kept connections");
    for (key, _) in HELD {
        assert!(at(key) > last, "{key} out of order");
        last = at(key);
    }
    assert!(at("queue wait p50 ms") > last);
    // Refused by max_held (4) counts as turned away, beside shed (6); unix: drops unknown.
    assert_eq!(v["rejected conn"], 10);
}

#[test]
fn text_xml_and_html_show_the_same_keys() {
    let text = render(Format::Text);
    for (key, want) in HELD {
        let line = format!("{:<22}{want}", format!("{key}:"));
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    let xml = render(Format::Xml);
    for (key, want) in HELD {
        let element = key.replace(' ', "-");
        assert!(
            xml.contains(&format!("<{element}>{want}</{element}>")),
            "{element} in\n{xml}"
        );
    }
    let html = render(Format::Html);
    for (key, want) in HELD {
        assert!(
            html.contains(&format!("<tr><th>{key}</th><td>{want}</td></tr>")),
            "{key} in\n{html}"
        );
    }
}

#[test]
fn openmetrics_families() {
    let body = render(Format::OpenMetrics);
    for (family, kind, sample) in [
        (
            "fastpm_held_requests",
            "gauge",
            "fastpm_held_requests{pool=\"lp\"} 1",
        ),
        (
            "fastpm_max_held_requests",
            "gauge",
            "fastpm_max_held_requests{pool=\"lp\"} 5",
        ),
        (
            "fastpm_held_channels",
            "gauge",
            "fastpm_held_channels{pool=\"lp\"} 3",
        ),
        (
            "fastpm_messages_published",
            "counter",
            "fastpm_messages_published_total{pool=\"lp\"} 11",
        ),
        (
            "fastpm_messages_delivered",
            "counter",
            "fastpm_messages_delivered_total{pool=\"lp\"} 2",
        ),
        (
            "fastpm_held_timeouts",
            "counter",
            "fastpm_held_timeouts_total{pool=\"lp\"} 1",
        ),
        (
            "fastpm_held_clients_gone",
            "counter",
            "fastpm_held_clients_gone_total{pool=\"lp\"} 1",
        ),
        (
            "fastpm_rejected_connections",
            "counter",
            "fastpm_rejected_connections_total{pool=\"lp\"} 10",
        ),
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} in\n{body}"
        );
        assert!(body.lines().any(|l| l == sample), "{sample:?} in\n{body}");
    }
    assert!(body.ends_with("# EOF\n"));
}
