//! OpenMetrics text exposition of one or more pools (content type
//! `application/openmetrics-text; version=1.0.0`).
//!
//! php-fpm's keys keep php-fpm 8.2's metric names (`phpfpm_accepted_connections`, …) so
//! dashboards built on them work unchanged; fastpm's own keys are `fastpm_…`. Every sample has a
//! `pool` label, so several pools can share one exposition.
//!
//! One deliberate difference from php-fpm: php-fpm declares some of its families `counter` but
//! writes their samples without the `_total` suffix OpenMetrics 1.0 requires of a counter. To
//! keep the names *and* stay valid, fastpm declares the real counters among them
//! (`phpfpm_accepted_connections`, `phpfpm_max_children_reached`, `phpfpm_slow_requests`)
//! `unknown` — the type OpenMetrics provides for third-party metrics — and the high-water marks
//! and the uptime `gauge`. fastpm's own counters are proper counters with `_total` samples.

use std::fmt::Write;

use super::snapshot::PoolSnapshot;

/// OpenMetrics metric types used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MetricType {
    Gauge,
    Counter,
    Info,
    Unknown,
}

impl MetricType {
    fn name(self) -> &'static str {
        match self {
            Self::Gauge => "gauge",
            Self::Counter => "counter",
            Self::Info => "info",
            Self::Unknown => "unknown",
        }
    }

    /// The sample name OpenMetrics requires for a family of this type.
    fn sample_suffix(self) -> &'static str {
        match self {
            Self::Counter => "_total",
            Self::Info => "_info",
            Self::Gauge | Self::Unknown => "",
        }
    }
}

/// A sample value.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    Int(u64),
    Float(f64),
}

/// One metric family: how to read its value from a pool; `None` = no sample for that pool
/// (an unknown value is left out, never written as 0).
struct Family {
    name: &'static str,
    kind: MetricType,
    unit: Option<&'static str>,
    help: &'static str,
    value: fn(&PoolSnapshot) -> Option<Value>,
}

fn int(n: u64) -> Option<Value> {
    Some(Value::Int(n))
}

fn seconds_from_ms(ms: f64) -> Option<Value> {
    Some(Value::Float(ms / 1000.0))
}

const FAMILIES: &[Family] = &[
    Family {
        name: "phpfpm_up",
        kind: MetricType::Gauge,
        unit: None,
        help: "Could the pool be reached? (php-fpm name)",
        value: |_| int(1),
    },
    Family {
        name: "phpfpm_start_since",
        kind: MetricType::Gauge,
        unit: None,
        help: "The number of seconds since the pool has started.",
        value: |s| int(s.start_since),
    },
    Family {
        name: "phpfpm_accepted_connections",
        kind: MetricType::Unknown,
        unit: None,
        help: "The number of requests accepted by the pool (a counter; php-fpm's name, without _total).",
        value: |s| int(s.accepted_conn),
    },
    Family {
        name: "phpfpm_listen_queue",
        kind: MetricType::Gauge,
        unit: None,
        help: "The number of connections waiting in the kernel accept queue.",
        value: |s| int(s.listen_queue),
    },
    Family {
        name: "phpfpm_max_listen_queue",
        kind: MetricType::Gauge,
        unit: None,
        help: "The maximum number of connections seen in the accept queue since the pool started.",
        value: |s| int(s.max_listen_queue),
    },
    Family {
        name: "phpfpm_listen_queue_length",
        kind: MetricType::Gauge,
        unit: None,
        help: "The size of the accept queue as the kernel holds it (effective backlog).",
        value: |s| int(s.listen_queue_len),
    },
    Family {
        name: "phpfpm_idle_processes",
        kind: MetricType::Gauge,
        unit: None,
        help: "The number of idle workers.",
        value: |s| int(s.idle_processes),
    },
    Family {
        name: "phpfpm_active_processes",
        kind: MetricType::Gauge,
        unit: None,
        help: "The number of active workers.",
        value: |s| int(s.active_processes),
    },
    Family {
        name: "phpfpm_total_processes",
        kind: MetricType::Gauge,
        unit: None,
        help: "The number of idle + active workers.",
        value: |s| int(s.total_processes),
    },
    Family {
        name: "phpfpm_max_active_processes",
        kind: MetricType::Gauge,
        unit: None,
        help: "The maximum number of active workers since the pool started.",
        value: |s| int(s.max_active_processes),
    },
    Family {
        name: "phpfpm_max_children_reached",
        kind: MetricType::Unknown,
        unit: None,
        help: "The number of times the process limit was reached (a counter; php-fpm's name, without _total).",
        value: |s| int(s.max_children_reached),
    },
    Family {
        name: "phpfpm_slow_requests",
        kind: MetricType::Unknown,
        unit: None,
        help: "The number of requests slower than slow_request (a counter; php-fpm's name, without _total).",
        value: |s| int(s.slow_requests),
    },
    Family {
        name: "fastpm_pool",
        kind: MetricType::Info,
        unit: None,
        help: "Static facts about the pool.",
        value: |_| int(1),
    },
    Family {
        name: "fastpm_listen_backlog",
        kind: MetricType::Gauge,
        unit: None,
        help: "The backlog fastpm passed to listen(); compare with phpfpm_listen_queue_length.",
        value: |s| int(u64::from(s.listen_backlog)),
    },
    Family {
        name: "fastpm_somaxconn",
        kind: MetricType::Gauge,
        unit: None,
        help: "net.core.somaxconn of the pool's network namespace (the backlog's upper bound).",
        value: |s| s.somaxconn.and_then(|n| int(u64::from(n))),
    },
    Family {
        name: "fastpm_max_children",
        kind: MetricType::Gauge,
        unit: None,
        help: "The configured maximum number of workers.",
        value: |s| int(u64::from(s.max_children)),
    },
    Family {
        name: "fastpm_rejected_connections",
        kind: MetricType::Counter,
        unit: None,
        help: "Connections turned away: kernel listen drops (when known) + shed requests + refused clients + requests refused by max_held.",
        value: |s| int(s.rejected_conn),
    },
    Family {
        name: "fastpm_listen_drops",
        kind: MetricType::Counter,
        unit: None,
        help: "Connections the kernel dropped because the accept queue was full (TCP only).",
        value: |s| s.listen_drops.and_then(int),
    },
    Family {
        name: "fastpm_queue_full_samples",
        kind: MetricType::Counter,
        unit: None,
        help: "Sampler ticks that found the accept queue at capacity.",
        value: |s| int(s.queue_full_samples),
    },
    Family {
        name: "fastpm_shed_requests",
        kind: MetricType::Counter,
        unit: None,
        help: "Requests refused by the overload policy.",
        value: |s| int(s.shed_requests),
    },
    Family {
        name: "fastpm_abandoned_requests",
        kind: MetricType::Counter,
        unit: None,
        help: "Requests whose client left before the app started.",
        value: |s| int(s.abandoned_requests),
    },
    Family {
        name: "fastpm_accept_errors",
        kind: MetricType::Counter,
        unit: None,
        help: "accept() failures for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM); the worker backed off without the accept lock.",
        value: |s| int(s.accept_errors),
    },
    Family {
        name: "fastpm_reading_connections",
        kind: MetricType::Gauge,
        unit: None,
        help: "Connections the pool's fronts are reading a request from (no worker held).",
        value: |s| int(s.reading_connections),
    },
    Family {
        name: "fastpm_idle_kept_connections",
        kind: MetricType::Gauge,
        unit: None,
        help: "Kept connections (FCGI_KEEP_CONN) idle in the pool's fronts between requests.",
        value: |s| int(s.idle_kept_connections),
    },
    Family {
        name: "fastpm_held_requests",
        kind: MetricType::Gauge,
        unit: None,
        help: "Requests held by the master waiting for a message (long-polling, GRIP); no worker is busy with them.",
        value: |s| int(s.held_requests),
    },
    Family {
        name: "fastpm_max_held_requests",
        kind: MetricType::Gauge,
        unit: None,
        help: "The maximum number of requests held at once since the pool started.",
        value: |s| int(s.max_held_requests),
    },
    Family {
        name: "fastpm_held_channels",
        kind: MetricType::Gauge,
        unit: None,
        help: "Channels with at least one of the pool's requests held on them.",
        value: |s| int(s.channels),
    },
    Family {
        name: "fastpm_messages_published",
        kind: MetricType::Counter,
        unit: None,
        help: "Messages published on the pool's channels.",
        value: |s| int(s.messages_published),
    },
    Family {
        name: "fastpm_messages_delivered",
        kind: MetricType::Counter,
        unit: None,
        help: "Held requests answered with a published message.",
        value: |s| int(s.messages_delivered),
    },
    Family {
        name: "fastpm_held_timeouts",
        kind: MetricType::Counter,
        unit: None,
        help: "Held requests answered with their timeout response.",
        value: |s| int(s.held_timeouts),
    },
    Family {
        name: "fastpm_held_clients_gone",
        kind: MetricType::Counter,
        unit: None,
        help: "Held requests whose client left before the answer (the subscription was dropped).",
        value: |s| int(s.held_gone),
    },
    Family {
        name: "fastpm_queue_wait_p50_seconds",
        kind: MetricType::Gauge,
        unit: Some("seconds"),
        help: "Median time connections waited in the kernel accept queue.",
        value: |s| s.queue_wait.and_then(|w| seconds_from_ms(w.p50_ms)),
    },
    Family {
        name: "fastpm_queue_wait_p99_seconds",
        kind: MetricType::Gauge,
        unit: Some("seconds"),
        help: "99th percentile of the time connections waited in the kernel accept queue.",
        value: |s| s.queue_wait.and_then(|w| seconds_from_ms(w.p99_ms)),
    },
    Family {
        name: "fastpm_queue_wait_max_seconds",
        kind: MetricType::Gauge,
        unit: Some("seconds"),
        help: "Longest time a connection waited in the kernel accept queue.",
        value: |s| s.queue_wait.and_then(|w| seconds_from_ms(w.max_ms)),
    },
];

/// The exposition for the given pools, ending with `# EOF`.
pub fn render(snapshots: &[PoolSnapshot]) -> String {
    let mut out = String::new();
    for family in FAMILIES {
        let samples: Vec<(&PoolSnapshot, Value)> = snapshots
            .iter()
            .filter_map(|s| (family.value)(s).map(|v| (s, v)))
            .collect();
        if samples.is_empty() {
            continue;
        }
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.name());
        if let Some(unit) = family.unit {
            let _ = writeln!(out, "# UNIT {} {unit}", family.name);
        }
        let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(family.help));
        for (s, value) in samples {
            let _ = writeln!(
                out,
                "{}{}{{{}}} {}",
                family.name,
                family.kind.sample_suffix(),
                labels(family, s),
                number(value)
            );
        }
    }
    render_queue_wait_histogram(&mut out, snapshots);
    out.push_str("# EOF\n");
    out
}

/// `fastpm_queue_wait_seconds`: an OpenMetrics histogram of the time connections waited in
/// the kernel accept queue (buckets one per doubling from 0.1 ms, see
/// `overload::histogram`). Like every other unknown value, a pool whose wait has not been
/// measured yet has no samples (and with no such pool, no family).
fn render_queue_wait_histogram(out: &mut String, snapshots: &[PoolSnapshot]) {
    let measured: Vec<&PoolSnapshot> = snapshots
        .iter()
        .filter(|s| s.queue_wait_histogram.count > 0)
        .collect();
    if measured.is_empty() {
        return;
    }
    let name = "fastpm_queue_wait_seconds";
    let _ = writeln!(out, "# TYPE {name} histogram");
    let _ = writeln!(out, "# UNIT {name} seconds");
    let _ = writeln!(
        out,
        "# HELP {name} Time connections waited in the kernel accept queue before a worker took them."
    );
    for s in measured {
        let pool = escape_label(&s.pool);
        let h = &s.queue_wait_histogram;
        for (le, count) in h.cumulative_by_doubling() {
            let le = number(Value::Float(le));
            let _ = writeln!(out, "{name}_bucket{{pool=\"{pool}\",le=\"{le}\"}} {count}");
        }
        let sum = number(Value::Float(h.sum_us as f64 / 1e6));
        let _ = writeln!(out, "{name}_count{{pool=\"{pool}\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{{pool=\"{pool}\"}} {sum}");
    }
}

fn labels(family: &Family, s: &PoolSnapshot) -> String {
    let mut out = format!("pool=\"{}\"", escape_label(&s.pool));
    if family.kind == MetricType::Info {
        let _ = write!(
            out,
            ",process_manager=\"{}\",listen_address=\"{}\"",
            escape_label(&s.process_manager),
            escape_label(&s.listen_address)
        );
    }
    out
}

fn number(value: Value) -> String {
    match value {
        Value::Int(n) => n.to_string(),
        Value::Float(f) if f.is_nan() => "NaN".to_string(),
        Value::Float(f) if f == f64::INFINITY => "+Inf".to_string(),
        Value::Float(f) if f == f64::NEG_INFINITY => "-Inf".to_string(),
        Value::Float(f) => format!("{f:?}"),
    }
}

/// Label values escape `\`, `"` and newline.
fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text escapes `\`, `"` and newline (OpenMetrics uses the label escaping for HELP).
fn escape_help(text: &str) -> String {
    escape_label(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_are_unique_and_units_match_suffixes() {
        let mut names: Vec<_> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
        for f in FAMILIES {
            if let Some(unit) = f.unit {
                assert!(f.name.ends_with(&format!("_{unit}")), "{}", f.name);
            }
            assert!(
                !f.name.ends_with("_total"),
                "{}: suffix belongs to the sample",
                f.name
            );
        }
    }

    #[test]
    fn queue_wait_histogram_only_once_measured() {
        use crate::scoreboard::Scoreboard;
        use crate::status::PoolInfo;
        let board = Scoreboard::create(&[1]).unwrap();
        let info = PoolInfo {
            name: "w".into(),
            process_manager: "static".into(),
            listen_address: "unix:/x".into(),
            listen_backlog: 511,
            somaxconn: None,
            max_children: 1,
        };
        let snap = |b: &Scoreboard| PoolSnapshot::collect(&info, b.pool(0), b.slots(0), false);
        assert!(!render(&[snap(&board)]).contains("fastpm_queue_wait_seconds"));
        for us in [50, 300, 1_500_000] {
            board.pool(0).queue_wait.record(Some(us));
        }
        let text = render(&[snap(&board)]);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("fastpm_queue_wait_seconds_"))
            .collect();
        assert_eq!(lines.len(), 21 + 2, "{text}");
        assert_eq!(
            lines[0],
            "fastpm_queue_wait_seconds_bucket{pool=\"w\",le=\"0.0001\"} 1"
        );
        assert_eq!(
            lines[2],
            "fastpm_queue_wait_seconds_bucket{pool=\"w\",le=\"0.0004\"} 2"
        );
        assert_eq!(
            lines[20],
            "fastpm_queue_wait_seconds_bucket{pool=\"w\",le=\"+Inf\"} 3"
        );
        assert_eq!(lines[21], "fastpm_queue_wait_seconds_count{pool=\"w\"} 3");
        assert_eq!(
            lines[22],
            "fastpm_queue_wait_seconds_sum{pool=\"w\"} 1.50035"
        );
        assert!(text.contains("# TYPE fastpm_queue_wait_seconds histogram\n"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn numbers_and_labels_are_escaped() {
        assert_eq!(number(Value::Float(0.0015)), "0.0015");
        assert_eq!(number(Value::Float(2.0)), "2.0");
        assert_eq!(number(Value::Float(f64::INFINITY)), "+Inf");
        assert_eq!(number(Value::Int(7)), "7");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
