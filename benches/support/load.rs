//! The closed-loop load generator: C client threads, each sending one request per connection
//! back to back for warm-up + D seconds. Only requests that complete inside the measured window
//! count towards throughput and latency; every failure counts, warm-up included.

use std::collections::BTreeMap;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::client::{self, Failure, Scratch};
use crate::fcgi::Expect;

/// How hard and how long one measurement pushes a server.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    /// Concurrent client threads, each with at most one request in flight.
    pub clients: usize,
    /// Load applied before measuring, so worker caches and the scheduler settle.
    pub warmup: Duration,
    /// Length of the measured window.
    pub duration: Duration,
    /// A request not answered within this is a failure (and frees its client).
    pub timeout: Duration,
}

/// What one measurement of one server saw.
#[derive(Debug, Default, Clone)]
pub struct Measurement {
    /// Requests answered with the expected body inside the window.
    pub ok: u64,
    /// Failures by kind, over warm-up and window.
    pub failures: BTreeMap<Failure, u64>,
    /// The measured window's length: requests/s is `ok` divided by it.
    pub window: Duration,
    /// Latency (connect to END_REQUEST) of every counted request, microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl Measurement {
    pub fn requests_per_sec(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    pub fn errors(&self) -> u64 {
        self.failures.values().sum()
    }

    /// The `p`-th percentile latency in milliseconds (nearest rank), `None` without requests.
    pub fn latency_ms(&self, p: f64) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies_us.len()) - 1;
        Some(self.latencies_us[index] as f64 / 1000.0)
    }
}

/// What one client thread brings back.
#[derive(Default)]
struct ClientTally {
    ok: u64,
    failures: BTreeMap<Failure, u64>,
    latencies_us: Vec<u32>,
}

/// Runs the closed loop against `socket` and returns the merged measurement.
pub fn run(socket: &Path, request: &[u8], expect: Expect, spec: LoadSpec) -> Measurement {
    let start = Instant::now();
    let window_start = start + spec.warmup;
    let window_end = window_start + spec.duration;
    let tallies: Vec<ClientTally> = thread::scope(|scope| {
        let handles: Vec<_> = (0..spec.clients)
            .map(|_| {
                scope.spawn(move || {
                    client_loop(socket, request, expect, spec, window_start, window_end)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread panicked"))
            .collect()
    });
    let mut merged = Measurement {
        window: spec.duration,
        ..Measurement::default()
    };
    for tally in tallies {
        merged.ok += tally.ok;
        merged.latencies_us.extend(tally.latencies_us);
        for (failure, count) in tally.failures {
            *merged.failures.entry(failure).or_default() += count;
        }
    }
    merged.latencies_us.sort_unstable();
    merged
}

fn client_loop(
    socket: &Path,
    request: &[u8],
    expect: Expect,
    spec: LoadSpec,
    window_start: Instant,
    window_end: Instant,
) -> ClientTally {
    let mut tally = ClientTally::default();
    let mut scratch = Scratch::default();
    loop {
        let sent = Instant::now();
        if sent >= window_end {
            return tally;
        }
        let outcome = client::request(socket, request, expect, spec.timeout, &mut scratch);
        let done = Instant::now();
        match outcome {
            Ok(()) => {
                if done > window_start && done <= window_end {
                    tally.ok += 1;
                    let micros = done.duration_since(sent).as_micros();
                    tally.latencies_us.push(micros.min(u32::MAX as u128) as u32);
                }
            }
            Err(failure) => {
                *tally.failures.entry(failure).or_default() += 1;
                if matches!(failure, Failure::Connect(_)) {
                    // A dead server refuses instantly; do not spin two shared cores on it.
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}
