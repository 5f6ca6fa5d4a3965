//! OpenMetrics text exposition of one or more pools (content type
//! `application/openmetrics-text; version=1.0.0`), encoded by the Prometheus project's Rust
//! client (`prometheus-client`) from the status snapshot.
//!
//! The numbers are counted through the `metrics` facade into the scoreboard
//! ([`super::recorder`]), read into a [`PoolSnapshot`] like every other status format, and
//! handed to `prometheus-client`'s OpenMetrics encoder as one collector; this file only says
//! which family shows which snapshot field, with what type and help. Why `prometheus-client`
//! and not `metrics-exporter-prometheus` (which DESIGN.md names): the latter writes the
//! Prometheus 0.0.4 text format only — no `# EOF`, the `_total` suffix on the family name, no
//! `unknown` or `info` type, histograms only from raw observations — so its output is not
//! valid OpenMetrics and could not carry the scoreboard's pre-bucketed queue-wait histogram.
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

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::recorder::names;
use super::snapshot::{BrokerStatus, PoolSnapshot};

/// A sample value.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    Int(u64),
    Float(f64),
}

/// One metric family: how to read its value from a pool; `None` = no sample for that pool
/// (an unknown value is left out, never written as 0).
struct Family {
    /// The name without the unit suffix, which the encoder appends (`_seconds`).
    name: &'static str,
    kind: MetricType,
    unit: Option<Unit>,
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
        name: names::ACCEPTED_CONNECTIONS,
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
        name: names::MAX_CHILDREN_REACHED,
        kind: MetricType::Unknown,
        unit: None,
        help: "The number of times the process limit was reached (a counter; php-fpm's name, without _total).",
        value: |s| int(s.max_children_reached),
    },
    Family {
        name: names::SLOW_REQUESTS,
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
        name: names::SHED_REQUESTS,
        kind: MetricType::Counter,
        unit: None,
        help: "Requests refused by the overload policy.",
        value: |s| int(s.shed_requests),
    },
    Family {
        name: names::ABANDONED_REQUESTS,
        kind: MetricType::Counter,
        unit: None,
        help: "Requests whose client left before the app started.",
        value: |s| int(s.abandoned_requests),
    },
    Family {
        name: names::ACCEPT_ERRORS,
        kind: MetricType::Counter,
        unit: None,
        help: "accept() failures for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM); the worker backed off without the accept lock.",
        value: |s| int(s.accept_errors),
    },
    Family {
        name: names::READING_CONNECTIONS,
        kind: MetricType::Gauge,
        unit: None,
        help: "Connections the pool's fronts are reading a request from (no worker held).",
        value: |s| int(s.reading_connections),
    },
    Family {
        name: names::QUEUED_REQUESTS,
        kind: MetricType::Gauge,
        unit: None,
        help: "Complete requests the pool's fronts read, waiting for a free worker: fastpm's own queue, after the kernel's listen queue.",
        value: |s| int(s.queued_requests),
    },
    Family {
        name: names::IDLE_KEPT_CONNECTIONS,
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
        help: "Messages published through the pool's longpoll pub path (the master's POST /publish/ counts in fastpm_master_messages_published).",
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
        name: names::REFUSED_CLIENTS,
        kind: MetricType::Counter,
        unit: None,
        help: "TCP peers refused by allowed_clients (part of fastpm_rejected_connections).",
        value: |s| int(s.refused_clients),
    },
    Family {
        name: names::PROTOCOL_ERRORS,
        kind: MetricType::Counter,
        unit: None,
        help: "Connections closed because of malformed or over-limit FastCGI input.",
        value: |s| int(s.protocol_errors),
    },
    Family {
        name: names::QUEUE_WAIT_UNKNOWN,
        kind: MetricType::Counter,
        unit: None,
        help: "Accepted connections whose time in the accept queue could not be known (left out of fastpm_queue_wait_seconds).",
        value: |s| int(s.queue_wait_histogram.unknown),
    },
    Family {
        name: "fastpm_advised_backlog",
        kind: MetricType::Gauge,
        unit: None,
        help: "The queue length beyond which a queued request cannot be answered within client_timeout (service rate x (client_timeout - service time)); the master only, once a request ran.",
        value: |s| s.backlog_advice.as_ref().and_then(|a| a.advised).and_then(int),
    },
    Family {
        name: "fastpm_queue_wait_p50",
        kind: MetricType::Gauge,
        unit: Some(Unit::Seconds),
        help: "Median time connections waited in the kernel accept queue.",
        value: |s| s.queue_wait.and_then(|w| seconds_from_ms(w.p50_ms)),
    },
    Family {
        name: "fastpm_queue_wait_p99",
        kind: MetricType::Gauge,
        unit: Some(Unit::Seconds),
        help: "99th percentile of the time connections waited in the kernel accept queue.",
        value: |s| s.queue_wait.and_then(|w| seconds_from_ms(w.p99_ms)),
    },
    Family {
        name: "fastpm_queue_wait_max",
        kind: MetricType::Gauge,
        unit: Some(Unit::Seconds),
        help: "Longest time a connection waited in the kernel accept queue.",
        value: |s| s.queue_wait.and_then(|w| seconds_from_ms(w.max_ms)),
    },
];

/// The exposition for the given pools, ending with `# EOF`.
pub fn render(snapshots: &[PoolSnapshot]) -> String {
    render_master(None, snapshots)
}

/// The master's exposition: its broker's families ([`Master`]) when it has one, then the pools.
pub fn render_master(broker: Option<&BrokerStatus>, snapshots: &[PoolSnapshot]) -> String {
    let mut registry = Registry::default();
    if let Some(broker) = broker {
        registry.register_collector(Box::new(Master(broker.clone())));
    }
    registry.register_collector(Box::new(Pools(snapshots.to_vec())));
    let mut out = String::new();
    // Encoding into a String fails only if a collector does, and ours writes nothing fallible.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "cannot encode /metrics");
    }
    out
}

/// The master's own families, without a `pool` label (they are no pool's):
/// `fastpm_broker_connected{broker="…"}` (1 or 0) and
/// `fastpm_master_messages_published_total` (through `POST /publish/`; a `longpoll` pool's
/// `pub` path counts in `fastpm_messages_published_total{pool="…"}`, so the two add up).
#[derive(Debug)]
struct Master(BrokerStatus);

impl Collector for Master {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encoder
            .encode_descriptor(
                "fastpm_broker_connected",
                "Can the master reach the broker of held requests now (1) or not (0, publishes answer 503)? Always 1 for memory.",
                None,
                MetricType::Gauge,
            )?
            .encode_family(&[("broker", self.0.broker.as_str())])?
            .encode_gauge(&u64::from(self.0.connected))?;
        encoder
            .encode_descriptor(
                "fastpm_master_messages_published",
                "Messages published through the master's POST /publish/ (fastpm publish, GRIP publishers); a longpoll pool's pub path counts in fastpm_messages_published.",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&self.0.messages_published, None)
    }
}

/// The snapshots, as `prometheus-client` collects them when it encodes.
#[derive(Debug)]
struct Pools(Vec<PoolSnapshot>);

impl Collector for Pools {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in FAMILIES {
            let samples: Vec<(&PoolSnapshot, Value)> = self
                .0
                .iter()
                .filter_map(|s| (family.value)(s).map(|v| (s, v)))
                .collect();
            if samples.is_empty() {
                continue;
            }
            let mut metric = encoder.encode_descriptor(
                family.name,
                family.help,
                family.unit.as_ref(),
                family.kind,
            )?;
            for (s, value) in samples {
                let pool = [("pool", s.pool.as_str())];
                match (family.kind, value) {
                    (MetricType::Info, _) => metric.encode_info(&[
                        ("pool", s.pool.as_str()),
                        ("process_manager", s.process_manager.as_str()),
                        ("listen_address", s.listen_address.as_str()),
                    ])?,
                    (MetricType::Counter, Value::Int(n)) => {
                        metric
                            .encode_family(&pool)?
                            .encode_counter::<NoLabelSet, _, u64>(&n, None)?
                    }
                    (MetricType::Counter, Value::Float(f)) => {
                        metric
                            .encode_family(&pool)?
                            .encode_counter::<NoLabelSet, _, f64>(&f, None)?
                    }
                    (_, Value::Int(n)) => metric.encode_family(&pool)?.encode_gauge(&n)?,
                    (_, Value::Float(f)) => metric.encode_family(&pool)?.encode_gauge(&f)?,
                }
            }
        }
        encode_queue_wait(&mut encoder, &self.0)?;
        encode_request_duration(&mut encoder, &self.0)
    }
}

/// One histogram of a pool: its `pool`, the sum in seconds, the count, per-bucket counts.
struct PoolHistogram<'a> {
    pool: &'a str,
    sum_seconds: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

/// A histogram family (`NAME_seconds`) with one histogram per pool in `pools`; no pool, no
/// family.
fn encode_histograms(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    pools: Vec<PoolHistogram<'_>>,
) -> Result<(), std::fmt::Error> {
    if pools.is_empty() {
        return Ok(());
    }
    let mut metric =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for h in pools {
        metric
            .encode_family(&[("pool", h.pool)])?
            .encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
    }
    Ok(())
}

/// `fastpm_queue_wait_seconds`: an OpenMetrics histogram of the time connections waited in
/// the kernel accept queue (buckets one per doubling from 0.1 ms, see
/// `overload::histogram`). Like every other unknown value, a pool whose wait has not been
/// measured yet has no samples (and with no such pool, no family).
fn encode_queue_wait(
    encoder: &mut DescriptorEncoder,
    snapshots: &[PoolSnapshot],
) -> Result<(), std::fmt::Error> {
    let measured = snapshots
        .iter()
        .filter(|s| s.queue_wait_histogram.count > 0)
        .map(|s| {
            let h = &s.queue_wait_histogram;
            PoolHistogram {
                pool: &s.pool,
                sum_seconds: h.sum_us as f64 / 1e6,
                count: h.count,
                buckets: per_bucket(&h.cumulative_by_doubling()),
            }
        })
        .collect();
    encode_histograms(
        encoder,
        without_unit(names::QUEUE_WAIT),
        "Time requests waited for a worker: in the kernel accept queue, then in fastpm's own queue (complete requests read ahead of the workers).",
        measured,
    )
}

/// `fastpm_request_duration_seconds`: the time a worker spent per request the app ran, as a count
/// and a sum (the scoreboard keeps no buckets for it: one `+Inf` bucket). `rate(_sum) /
/// rate(_count)` is the mean service time the backlog advice uses.
fn encode_request_duration(
    encoder: &mut DescriptorEncoder,
    snapshots: &[PoolSnapshot],
) -> Result<(), std::fmt::Error> {
    let pools = snapshots
        .iter()
        .map(|s| PoolHistogram {
            pool: &s.pool,
            sum_seconds: s.service_time_us as f64 / 1e6,
            count: s.served_requests,
            buckets: vec![(f64::INFINITY, s.served_requests)],
        })
        .collect();
    encode_histograms(
        encoder,
        without_unit(names::REQUEST_DURATION),
        "Time a worker spent per request the app ran, from taking it to answering it (not shed, abandoned, status or ping requests); count and sum only.",
        pools,
    )
}

/// A histogram's name as the recorder knows it (`names`), without the `_seconds` the encoder
/// appends from the unit.
fn without_unit(name: &'static str) -> &'static str {
    name.strip_suffix("_seconds")
        .expect("a histogram name ends with its unit")
}

/// Cumulative `(le, count)` buckets to the per-bucket counts the encoder sums up again.
fn per_bucket(cumulative: &[(f64, u64)]) -> Vec<(f64, u64)> {
    let mut below = 0;
    cumulative
        .iter()
        .map(|&(le, total)| {
            let n = total.saturating_sub(below);
            below = total.max(below);
            (le, n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_are_unique_and_plain() {
        let mut names: Vec<_> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
        for f in FAMILIES {
            for suffix in ["_total", "_seconds", "_info"] {
                assert!(
                    !f.name.ends_with(suffix),
                    "{}: the encoder appends {suffix}",
                    f.name
                );
            }
            // The encoder writes HELP as given: nothing in it may need escaping.
            assert!(!f.help.contains(['\\', '"', '\n']), "{}", f.name);
        }
    }

    #[test]
    fn per_bucket_undoes_cumulation() {
        assert_eq!(
            per_bucket(&[(0.1, 1), (0.2, 1), (0.4, 5), (f64::INFINITY, 6)]),
            [(0.1, 1), (0.2, 0), (0.4, 4), (f64::INFINITY, 1)]
        );
        assert_eq!(per_bucket(&[]), []);
    }

    fn info() -> crate::status::PoolInfo {
        crate::status::PoolInfo {
            name: "w".into(),
            process_manager: "static".into(),
            listen_address: "unix:/x".into(),
            listen_backlog: 511,
            somaxconn: None,
            max_children: 1,
        }
    }

    #[test]
    fn queue_wait_histogram_only_once_measured() {
        use crate::scoreboard::Scoreboard;
        let board = Scoreboard::create(&[1]).unwrap();
        let info = info();
        let snap = |b: &Scoreboard| PoolSnapshot::collect(&info, b.pool(0), b.slots(0), false);
        assert!(!render(&[snap(&board)]).contains("fastpm_queue_wait_seconds_"));
        for us in [50, 300, 1_500_000] {
            board.pool(0).queue_wait.record(Some(us));
        }
        let text = render(&[snap(&board)]);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("fastpm_queue_wait_seconds_"))
            .collect();
        assert_eq!(lines.len(), 2 + 21, "{text}");
        assert_eq!(
            lines[0],
            "fastpm_queue_wait_seconds_sum{pool=\"w\"} 1.50035"
        );
        assert_eq!(lines[1], "fastpm_queue_wait_seconds_count{pool=\"w\"} 3");
        assert_eq!(
            lines[2],
            "fastpm_queue_wait_seconds_bucket{le=\"0.0001\",pool=\"w\"} 1"
        );
        assert_eq!(
            lines[4],
            "fastpm_queue_wait_seconds_bucket{le=\"0.0004\",pool=\"w\"} 2"
        );
        assert_eq!(
            lines[22],
            "fastpm_queue_wait_seconds_bucket{le=\"+Inf\",pool=\"w\"} 3"
        );
        assert!(text.contains("# TYPE fastpm_queue_wait_seconds histogram\n"));
        assert!(text.contains("# UNIT fastpm_queue_wait_seconds seconds\n"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn counters_unknowns_info_and_units_as_openmetrics_wants() {
        use crate::scoreboard::Scoreboard;
        let board = Scoreboard::create(&[1]).unwrap();
        board
            .pool(0)
            .shed_requests
            .store(4, std::sync::atomic::Ordering::Relaxed);
        board
            .pool(0)
            .accepted_conn
            .store(9, std::sync::atomic::Ordering::Relaxed);
        board.pool(0).app_served(50_000);
        board.pool(0).queue_wait.record(Some(2_000));
        let mut info = info();
        info.name = "a\"b".into();
        let text = render(&[PoolSnapshot::collect(
            &info,
            board.pool(0),
            board.slots(0),
            false,
        )]);
        for want in [
            "# TYPE fastpm_shed_requests counter\n",
            "fastpm_shed_requests_total{pool=\"a\\\"b\"} 4\n",
            "# TYPE phpfpm_accepted_connections unknown\n",
            "phpfpm_accepted_connections{pool=\"a\\\"b\"} 9\n",
            "fastpm_pool_info{pool=\"a\\\"b\",process_manager=\"static\",listen_address=\"unix:/x\"} 1\n",
            "# UNIT fastpm_queue_wait_p99_seconds seconds\n",
            "fastpm_request_duration_seconds_count{pool=\"a\\\"b\"} 1\n",
            "fastpm_request_duration_seconds_sum{pool=\"a\\\"b\"} 0.05\n",
        ] {
            assert!(text.contains(want), "{want}\n---\n{text}");
        }
        assert!(!text.contains("fastpm_listen_drops"), "unknown: left out");
        assert!(
            !text.contains("fastpm_advised_backlog"),
            "no advice from a worker"
        );
    }
}
