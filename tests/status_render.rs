//! Renderers over a real scoreboard: every DESIGN.md §5 key in JSON with its type, php-fpm's
//! text layout, well-formed OpenMetrics, the `rejected conn` sum, the HTML dashboard.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;

use fastpm::scoreboard::{Clock, Scoreboard, WorkerState, UNKNOWN};
use fastpm::status::{render_pool, render_pools, Format, PoolInfo, PoolSnapshot, Query, QueueWait};
use serde_json::Value;

const NOW_US: u64 = 1_795_555_600_000_000;

fn info(name: &str) -> PoolInfo {
    PoolInfo {
        name: name.to_string(),
        process_manager: "static".to_string(),
        listen_address: "unix:/tmp/fastpm/www.sock".to_string(),
        listen_backlog: 511,
        somaxconn: Some(4096),
        max_children: 3,
    }
}

/// A pool with one busy worker, one idle worker and one free slot, and every counter set to a
/// distinct value.
fn board() -> Scoreboard {
    let board = Scoreboard::create(&[3]).unwrap();
    let pool = board.pool(0);
    pool.start_time.store(1_795_555_582, Relaxed);
    pool.accepted_conn.store(42, Relaxed);
    pool.listen_queue.store(5, Relaxed);
    pool.max_listen_queue.store(9, Relaxed);
    pool.listen_queue_len.store(511, Relaxed);
    pool.max_active_processes.store(2, Relaxed);
    pool.max_children_reached.store(1, Relaxed);
    pool.slow_requests.store(3, Relaxed);
    pool.queue_full_samples.store(4, Relaxed);
    pool.shed_requests.store(6, Relaxed);
    pool.abandoned_requests.store(7, Relaxed);
    pool.accept_errors.store(8, Relaxed);
    pool.refused_clients.store(2, Relaxed);
    let slots = board.slots(0);
    slots[0].claim(1001);
    slots[0].begin_request(b"GET", b"/index.php?x=1", b"/srv/www/index.php");
    slots[1].claim(1002);
    slots[1].set_state(WorkerState::Idle);
    board
}

/// The wall clock at `wall_us`; durations measured from the real monotonic clock.
fn at(wall_us: u64) -> Clock {
    Clock {
        wall_us,
        monotonic_us: fastpm::overload::monotonic_us(),
    }
}

fn snapshot(board: &Scoreboard, full: bool, wait: Option<QueueWait>) -> PoolSnapshot {
    PoolSnapshot::collect_with(
        &info("www"),
        board.pool(0),
        board.slots(0),
        full,
        wait,
        at(NOW_US),
    )
}

fn query(format: Format, full: bool) -> Query {
    Query { format, full }
}

/// Every pool key of DESIGN.md §5 and the JSON type it must have.
const POOL_KEYS: &[(&str, &str)] = &[
    ("pool", "string"),
    ("process manager", "string"),
    ("start time", "number"),
    ("start since", "number"),
    ("accepted conn", "number"),
    ("listen queue", "number"),
    ("max listen queue", "number"),
    ("listen queue len", "number"),
    ("idle processes", "number"),
    ("active processes", "number"),
    ("total processes", "number"),
    ("max active processes", "number"),
    ("max children reached", "number"),
    ("slow requests", "number"),
    ("listen address", "string"),
    ("listen backlog", "number"),
    ("somaxconn", "number"),
    ("rejected conn", "number"),
    ("listen drops", "null"),
    ("queue full samples", "number"),
    ("shed requests", "number"),
    ("abandoned requests", "number"),
    ("accept errors", "number"),
    ("queue wait p50 ms", "null"),
    ("queue wait p99 ms", "null"),
    ("queue wait max ms", "null"),
];

const PROCESS_KEYS: &[(&str, &str)] = &[
    ("pid", "number"),
    ("state", "string"),
    ("start time", "number"),
    ("start since", "number"),
    ("requests", "number"),
    ("request duration", "number"),
    ("request method", "string"),
    ("request uri", "string"),
    ("content length", "number"),
    ("user", "string"),
    ("script", "string"),
    ("last request cpu", "number"),
    ("last request memory", "number"),
];

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn assert_keys(object: &Value, keys: &[(&str, &str)]) {
    let map = object.as_object().expect("an object");
    for (key, kind) in keys {
        let value = map
            .get(*key)
            .unwrap_or_else(|| panic!("missing {key:?} in {object}"));
        assert_eq!(json_type(value), *kind, "type of {key:?}");
    }
}

#[test]
fn json_has_every_key_with_its_type_in_order() {
    let board = board();
    let r = render_pool(&snapshot(&board, true, None), &query(Format::Json, true));
    assert_eq!(r.content_type, "application/json");
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_keys(&v, POOL_KEYS);
    // php-fpm's keys first, then fastpm's, in the order of the table (the body is written in
    // order even though a JSON object is unordered).
    let mut last = 0;
    for (key, _) in POOL_KEYS {
        let at = r.body.find(&format!("\"{key}\":")).unwrap();
        assert!(at > last || last == 0, "{key} out of order");
        last = at;
    }
    assert_eq!(v["accepted conn"], 42);
    assert_eq!(v["idle processes"], 1);
    assert_eq!(v["active processes"], 1);
    assert_eq!(v["total processes"], 2);
    assert_eq!(v["listen queue"], 5);
    assert_eq!(v["max listen queue"], 9);
    assert_eq!(v["start since"], 1_795_555_600 - 1_795_555_582);
    assert_eq!(v["somaxconn"], 4096);
    assert_eq!(v["accept errors"], 8);
    let processes = v["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 2, "the free slot is not listed");
    for p in processes {
        assert_keys(p, PROCESS_KEYS);
    }
    assert_eq!(processes[0]["pid"], 1001);
    assert_eq!(processes[0]["state"], "Running");
    assert_eq!(processes[0]["request method"], "GET");
    assert_eq!(processes[0]["request uri"], "/index.php?x=1");
    assert_eq!(processes[0]["script"], "/srv/www/index.php");
    assert_eq!(processes[1]["state"], "Idle");
    assert_eq!(
        processes[1]["request method"], "-",
        "php-fpm shows - for empty texts"
    );
}

#[test]
fn json_without_full_has_no_processes() {
    let board = board();
    let r = render_pool(&snapshot(&board, false, None), &query(Format::Json, false));
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert!(v.get("processes").is_none());
}

#[test]
fn queue_wait_and_drops_are_numbers_once_known() {
    let board = board();
    board.pool(0).listen_drops.store(10, Relaxed);
    let wait = QueueWait {
        p50_ms: 1.5,
        p99_ms: 20.25,
        max_ms: 31.0,
    };
    let r = render_pool(
        &snapshot(&board, false, Some(wait)),
        &query(Format::Json, false),
    );
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["listen drops"], 10);
    assert_eq!(v["queue wait p50 ms"], 1.5);
    assert_eq!(v["queue wait p99 ms"], 20.25);
    assert_eq!(v["queue wait max ms"], 31.0);
}

#[test]
fn rejected_conn_counts_drops_only_when_known() {
    let board = board();
    // Unix socket: drops unknown → shed (6) + refused (2).
    assert_eq!(board.pool(0).listen_drops.load(Relaxed), UNKNOWN);
    let s = snapshot(&board, false, None);
    assert_eq!((s.listen_drops, s.rejected_conn), (None, 8));
    // TCP: drops known → 10 + 6 + 2.
    board.pool(0).listen_drops.store(10, Relaxed);
    let s = snapshot(&board, false, None);
    assert_eq!((s.listen_drops, s.rejected_conn), (Some(10), 18));
    // Known zero drops is a number, not null.
    board.pool(0).listen_drops.store(0, Relaxed);
    let v: Value = serde_json::from_str(
        &render_pool(&snapshot(&board, false, None), &query(Format::Json, false)).body,
    )
    .unwrap();
    assert_eq!(v["listen drops"], 0);
    assert_eq!(v["rejected conn"], 8);
}

#[test]
fn text_matches_php_fpm_layout() {
    let board = board();
    let r = render_pool(&snapshot(&board, true, None), &query(Format::Text, true));
    assert_eq!(r.content_type, "text/plain;charset=UTF-8");
    let lines: Vec<&str> = r.body.lines().collect();
    // Lines as php-fpm 8.2's fpm_status.c formats them ("pool:                 %s\n", …),
    // and as php-fpm printed them on this machine.
    assert_eq!(lines[0], "pool:                 www");
    assert_eq!(lines[1], "process manager:      static");
    assert_eq!(lines[2], "start time:           24/Nov/2026:21:26:22 +0000");
    assert_eq!(lines[3], "start since:          18");
    assert_eq!(lines[4], "accepted conn:        42");
    assert_eq!(lines[11], "max active processes: 2");
    assert_eq!(lines[13], "slow requests:        3");
    assert_eq!(lines[14], "listen address:       unix:/tmp/fastpm/www.sock");
    assert!(lines.contains(&"listen drops:         -"));
    assert!(lines.contains(&"queue wait p50 ms:    -"));
    assert!(lines.contains(&"rejected conn:        8"));
    // The per-worker block.
    let sep = lines
        .iter()
        .position(|l| *l == "************************")
        .unwrap();
    assert_eq!(
        lines[sep - 1],
        "",
        "php-fpm writes an empty line before each block"
    );
    assert_eq!(lines[sep + 1], "pid:                  1001");
    assert_eq!(lines[sep + 2], "state:                Running");
    assert!(lines.contains(&"request URI:          /index.php?x=1"));
    assert!(lines.contains(&"last request cpu:     0.00"));
    assert!(lines.contains(&"last request memory:  0"));
    assert_eq!(r.body.matches("************************").count(), 2);
    // Every key line has its value at column 22.
    for line in lines
        .iter()
        .filter(|l| l.contains(':') && !l.starts_with('*'))
    {
        let colon = line.find(':').unwrap();
        if line.starts_with("start time") {
            continue;
        }
        if colon + 1 >= 22 {
            // Longer than php-fpm's column (fastpm's `idle kept connections`): one space.
            assert!(line[colon + 1..].starts_with(' '), "{line:?}");
            assert_ne!(line.as_bytes()[colon + 2], b' ', "{line:?}");
            continue;
        }
        assert!(
            line.len() > 22 && line[colon + 1..22].trim().is_empty(),
            "{line:?}"
        );
        assert_ne!(line.as_bytes()[22], b' ', "{line:?}");
    }
}

#[test]
fn text_of_several_pools_lists_them_in_turn() {
    let board = Scoreboard::create(&[1, 1]).unwrap();
    let a = PoolSnapshot::collect(&info("a"), board.pool(0), board.slots(0), false);
    let b = PoolSnapshot::collect(&info("b"), board.pool(1), board.slots(1), false);
    let r = render_pools(&[a, b], &query(Format::Text, false));
    let pools: Vec<&str> = r.body.lines().filter(|l| l.starts_with("pool:")).collect();
    assert_eq!(
        pools,
        ["pool:                 a", "pool:                 b"]
    );
    let v: Value =
        serde_json::from_str(&render_pools(&[], &query(Format::Json, false)).body).unwrap();
    assert_eq!(v, serde_json::json!({"pools": []}));
}

#[test]
fn master_json_wraps_pools() {
    let board = Scoreboard::create(&[1, 2]).unwrap();
    let a = PoolSnapshot::collect(&info("a"), board.pool(0), board.slots(0), true);
    let b = PoolSnapshot::collect(&info("b"), board.pool(1), board.slots(1), true);
    let r = render_pools(&[a, b], &query(Format::Json, true));
    let v: Value = serde_json::from_str(&r.body).unwrap();
    let pools = v["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 2);
    assert_eq!(pools[1]["pool"], "b");
    for p in pools {
        assert_keys(p, POOL_KEYS);
        assert_eq!(p["processes"], serde_json::json!([]));
    }
}

/// Checks the OpenMetrics 1.0 text rules this exposition relies on; returns the samples as
/// (name, labels, value).
fn check_openmetrics(body: &str) -> Vec<(String, String, String)> {
    assert!(body.ends_with("# EOF\n"), "must end with # EOF");
    assert_eq!(body.matches("# EOF").count(), 1);
    let mut families: HashSet<String> = HashSet::new();
    let mut current: Option<(String, String)> = None; // (family, type)
    let mut samples = Vec::new();
    let mut series = HashSet::new();
    for line in body.lines() {
        if line == "# EOF" {
            continue;
        }
        // A family's descriptors (TYPE, HELP, UNIT, in any order) come together, before its
        // samples; a family is described once.
        if let Some((what, rest)) = ["# TYPE ", "# HELP ", "# UNIT "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (&p[2..6], rest)))
        {
            let (name, text) = rest.split_once(' ').unwrap();
            if current.as_ref().map(|c| c.0.as_str()) != Some(name) {
                assert!(
                    families.insert(name.to_string()),
                    "family {name} declared twice"
                );
                current = Some((name.to_string(), String::new()));
            }
            if what == "TYPE" {
                assert!(
                    [
                        "gauge",
                        "counter",
                        "info",
                        "unknown",
                        "stateset",
                        "histogram",
                        "summary",
                        "gaugehistogram"
                    ]
                    .contains(&text),
                    "{line}"
                );
                current.as_mut().unwrap().1 = text.to_string();
            }
            if what == "UNIT" {
                assert!(name.ends_with(&format!("_{text}")), "{line}");
            }
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line {line:?}");
        assert!(!line.is_empty(), "empty lines are not allowed");
        let (family, kind) = current
            .clone()
            .filter(|c| !c.1.is_empty())
            .unwrap_or_else(|| panic!("sample without TYPE: {line}"));
        let (series_key, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series_key.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').unwrap()),
            None => (series_key, ""),
        };
        let want = match kind.as_str() {
            "counter" => format!("{family}_total"),
            "info" => format!("{family}_info"),
            // A histogram's samples: _bucket (with an `le` label), _count, _sum.
            "histogram" => ["_bucket", "_count", "_sum"]
                .iter()
                .map(|suffix| format!("{family}{suffix}"))
                .find(|n| n == name)
                .unwrap_or_else(|| format!("{family}_bucket|_count|_sum")),
            _ => family.clone(),
        };
        assert_eq!(name, want, "sample name for a {kind} family");
        if name.ends_with("_bucket") && kind == "histogram" {
            assert!(labels.contains("le=\""), "{line}");
        }
        assert!(
            value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
            "{line}"
        );
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        assert!(
            series.insert(series_key.to_string()),
            "duplicate series {series_key}"
        );
        samples.push((name.to_string(), labels.to_string(), value.to_string()));
    }
    samples
}

#[test]
fn openmetrics_is_well_formed_and_keeps_php_fpm_names() {
    let board = board();
    let r = render_pool(
        &snapshot(&board, false, None),
        &query(Format::OpenMetrics, false),
    );
    assert_eq!(
        r.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let samples = check_openmetrics(&r.body);
    let get = |name: &str| {
        samples
            .iter()
            .find(|s| s.0 == name)
            .map(|s| s.2.clone())
            .unwrap_or_else(|| panic!("no sample {name}"))
    };
    // php-fpm 8.2's metric names, as php-fpm printed them on this machine.
    for name in [
        "phpfpm_up",
        "phpfpm_start_since",
        "phpfpm_accepted_connections",
        "phpfpm_listen_queue",
        "phpfpm_max_listen_queue",
        "phpfpm_listen_queue_length",
        "phpfpm_idle_processes",
        "phpfpm_active_processes",
        "phpfpm_total_processes",
        "phpfpm_max_active_processes",
        "phpfpm_max_children_reached",
        "phpfpm_slow_requests",
    ] {
        get(name);
    }
    assert_eq!(get("phpfpm_accepted_connections"), "42");
    assert_eq!(get("fastpm_rejected_connections_total"), "8");
    assert_eq!(get("fastpm_shed_requests_total"), "6");
    assert_eq!(get("fastpm_listen_backlog"), "511");
    assert_eq!(get("fastpm_somaxconn"), "4096");
    assert!(
        samples
            .iter()
            .all(|s| s.1.split(',').any(|l| l == "pool=\"www\"")),
        "every sample has a pool label"
    );
    // Unknown values are left out, not written as 0.
    assert!(!samples.iter().any(|s| s.0 == "fastpm_listen_drops_total"));
    assert!(!samples
        .iter()
        .any(|s| s.0.starts_with("fastpm_queue_wait") && s.0 != "fastpm_queue_wait_unknown_total"));
    assert!(
        !r.body.contains("fastpm_listen_drops"),
        "no empty family either"
    );
}

#[test]
fn openmetrics_of_several_pools_groups_families() {
    let board = Scoreboard::create(&[1, 1]).unwrap();
    board.pool(1).listen_drops.store(3, Relaxed);
    let wait = QueueWait {
        p50_ms: 0.5,
        p99_ms: 2.0,
        max_ms: 1500.0,
    };
    let mut b_info = info("b\"q");
    b_info.somaxconn = None;
    let a = PoolSnapshot::collect_with(
        &info("a"),
        board.pool(0),
        board.slots(0),
        false,
        Some(wait),
        at(NOW_US),
    );
    let b = PoolSnapshot::collect(&b_info, board.pool(1), board.slots(1), false);
    let r = render_pools(&[a, b], &query(Format::OpenMetrics, false));
    let samples = check_openmetrics(&r.body);
    let accepted: Vec<_> = samples
        .iter()
        .filter(|s| s.0 == "phpfpm_accepted_connections")
        .map(|s| s.1.as_str())
        .collect();
    assert_eq!(accepted, ["pool=\"a\"", "pool=\"b\\\"q\""]);
    let drops: Vec<_> = samples
        .iter()
        .filter(|s| s.0 == "fastpm_listen_drops_total")
        .collect();
    assert_eq!(drops.len(), 1);
    assert_eq!(drops[0].2, "3");
    let somaxconn: Vec<_> = samples
        .iter()
        .filter(|s| s.0 == "fastpm_somaxconn")
        .collect();
    assert_eq!(somaxconn.len(), 1, "unknown somaxconn has no sample");
    let max_wait = samples
        .iter()
        .find(|s| s.0 == "fastpm_queue_wait_max_seconds")
        .unwrap();
    assert_eq!(max_wait.2, "1.5");
    assert!(r
        .body
        .contains("# UNIT fastpm_queue_wait_max_seconds seconds\n"));
    assert!(r.body.contains("fastpm_pool_info{pool=\"a\",process_manager=\"static\",listen_address=\"unix:/tmp/fastpm/www.sock\"} 1\n"));
}

#[test]
fn html_dashboard_refreshes_and_escapes() {
    let board = board();
    let mut evil = info("<pool&>");
    evil.listen_backlog = 8192; // more than the kernel holds (511): a clamp
    let s =
        PoolSnapshot::collect_with(&evil, board.pool(0), board.slots(0), true, None, at(NOW_US));
    let r = render_pools(&[s], &query(Format::Html, true));
    assert_eq!(r.content_type, "text/html;charset=UTF-8");
    assert!(r.body.starts_with("<!DOCTYPE html>"));
    assert!(r
        .body
        .contains("<meta http-equiv=\"refresh\" content=\"2\">"));
    assert!(r.body.contains("&lt;pool&amp;&gt;"));
    assert!(!r.body.contains("<pool&>"));
    assert!(r
        .body
        .contains("<tr><th>accepted conn</th><td>42</td></tr>"));
    assert!(r
        .body
        .contains("<tr><th>listen queue len</th><td class=\"warn\">511</td></tr>"));
    assert!(r.body.contains("<th>request uri</th>"));
    assert!(r.body.contains("<td>/index.php?x=1</td>"));
    assert!(!r.body.contains("src="), "no external assets");
    assert!(!r.body.contains("href="), "no external assets");
    for (key, _) in POOL_KEYS {
        assert!(r.body.contains(&format!("<th>{key}</th>")), "{key}");
    }
}

#[test]
fn xml_follows_php_fpm_element_names() {
    let board = board();
    let r = render_pool(&snapshot(&board, true, None), &query(Format::Xml, true));
    assert_eq!(r.content_type, "text/xml;charset=UTF-8");
    assert!(r
        .body
        .starts_with("<?xml version=\"1.0\" ?>\n<status>\n<pool>www</pool>\n"));
    assert!(r
        .body
        .contains("<max-active-processes>2</max-active-processes>\n"));
    assert!(r.body.contains("<listen-drops></listen-drops>\n"));
    assert!(r.body.contains("<request-uri>/index.php?x=1</request-uri>"));
    assert!(r.body.ends_with("</processes>\n</status>"));
}

#[test]
fn request_duration_of_a_running_request_grows() {
    let board = board();
    let start = board.slots(0)[0].request_start_us.load(Relaxed);
    let s = PoolSnapshot::collect_with(
        &info("www"),
        board.pool(0),
        board.slots(0),
        true,
        None,
        Clock {
            wall_us: NOW_US,
            monotonic_us: start + 2_500,
        },
    );
    let processes = s.processes.unwrap();
    assert_eq!(processes[0].request_duration_us, 2_500);
    // The idle worker shows its last request's duration.
    board.slots(0)[1].last_duration_us.store(777, Relaxed);
    let s = PoolSnapshot::collect_with(
        &info("www"),
        board.pool(0),
        board.slots(0),
        true,
        None,
        Clock {
            wall_us: NOW_US,
            monotonic_us: start + 2_500,
        },
    );
    assert_eq!(s.processes.unwrap()[1].request_duration_us, 777);
}
