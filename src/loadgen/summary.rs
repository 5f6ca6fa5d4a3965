//! Counting outcomes and latencies per client thread ([`Tally`]), merging them, and the JSON
//! summary ([`Summary`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::outcome::Outcome;
use super::timeline::{self, TimelineBucket};

/// One client thread's counts (merged at the end, so the threads share nothing while they run).
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Attempts by [`Outcome::key`].
    pub outcomes: BTreeMap<String, u64>,
    /// Answers whose END_REQUEST carried FCGI_OVERLOADED (protocol status 2).
    pub fcgi_overloaded: u64,
    /// Latency of every answered request, µs.
    pub latencies_us: Vec<u64>,
    /// When each attempt ended (since the run started) and how: kept only when a timeline was
    /// asked for ([`Tally::timed`]), so a long run without one does not grow a list.
    pub ended: Option<Vec<(Duration, Outcome)>>,
}

impl Tally {
    /// A tally that also keeps each attempt's end time, for [`Summary::timeline`].
    pub fn timed() -> Tally {
        Tally {
            ended: Some(Vec::new()),
            ..Tally::default()
        }
    }

    /// Count one attempt that took `took` and ended `ended_at` after the run started.
    pub fn record(
        &mut self,
        outcome: Outcome,
        took: Duration,
        protocol_status: u8,
        ended_at: Duration,
    ) {
        *self.outcomes.entry(outcome.key()).or_default() += 1;
        if let Some(ended) = &mut self.ended {
            ended.push((ended_at, outcome));
        }
        if let Outcome::Answered { .. } = outcome {
            self.latencies_us.push(took.as_micros() as u64);
            if protocol_status == 2 {
                self.fcgi_overloaded += 1;
            }
        }
    }

    pub fn merge(&mut self, other: Tally) {
        for (key, n) in other.outcomes {
            *self.outcomes.entry(key).or_default() += n;
        }
        self.fcgi_overloaded += other.fcgi_overloaded;
        self.latencies_us.extend(other.latencies_us);
        if let (Some(mine), Some(theirs)) = (&mut self.ended, other.ended) {
            mine.extend(theirs);
        }
    }

    pub fn requests(&self) -> u64 {
        self.outcomes.values().sum()
    }
}

/// Latency percentiles of answered requests, milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The `q`-quantile of sorted values (nearest rank), `None` when empty.
pub fn nearest_rank(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl LatencyMs {
    pub fn of(latencies_us: &mut [u64]) -> Option<LatencyMs> {
        latencies_us.sort_unstable();
        let ms = |q| nearest_rank(latencies_us, q).map(|us| us as f64 / 1000.0);
        Some(LatencyMs {
            p50: ms(0.5)?,
            p90: ms(0.9)?,
            p99: ms(0.99)?,
            max: ms(1.0)?,
        })
    }
}

/// What `fastpm bench` prints (one JSON object).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub address: String,
    pub clients: usize,
    /// Wall time of the run, seconds.
    pub duration_s: f64,
    /// Attempts in total (every outcome).
    pub requests: u64,
    /// Attempts by kind: `ok` (2xx), each other HTTP status (`"503"`), `eagain`,
    /// `econnrefused`, `timeout`, `connect_error`, `broken`.
    pub outcomes: BTreeMap<String, u64>,
    /// Answers ended with FCGI_OVERLOADED (shed by the server's overload policy).
    pub fcgi_overloaded: u64,
    /// `ok` answers per second.
    pub ok_per_s: f64,
    /// Of answered requests (any status); `null` when none was answered.
    pub latency_ms: Option<LatencyMs>,
    /// The interval of `timeline`, ms (`--timeline-ms`); absent without a timeline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline_ms: Option<u64>,
    /// Outcomes per interval since the start (`--timeline-ms`): goodput over time, which the
    /// run's averages hide; absent without `--timeline-ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<TimelineBucket>>,
}

impl Summary {
    /// Summarise a run of `elapsed`; with `timeline_interval` (and a [`Tally::timed`] tally)
    /// also bucket the outcomes over time.
    pub fn new(
        address: String,
        clients: usize,
        elapsed: Duration,
        mut tally: Tally,
        timeline_interval: Option<Duration>,
    ) -> Summary {
        let secs = elapsed.as_secs_f64();
        let timeline = match (timeline_interval, &tally.ended) {
            (Some(interval), Some(ended)) => Some(timeline::bucket(ended, interval, elapsed)),
            _ => None,
        };
        let ok = tally.outcomes.get("ok").copied().unwrap_or(0);
        Summary {
            address,
            clients,
            duration_s: secs,
            requests: tally.requests(),
            ok_per_s: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
            latency_ms: LatencyMs::of(&mut tally.latencies_us),
            fcgi_overloaded: tally.fcgi_overloaded,
            outcomes: tally.outcomes,
            timeline_ms: timeline
                .as_ref()
                .and(timeline_interval)
                .map(|i| i.as_millis() as u64),
            timeline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_table() {
        let v = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
        let table = [
            (0.5, 50),
            (0.9, 90),
            (0.99, 100),
            (1.0, 100),
            (0.01, 10),
            (0.0, 10),
        ];
        for (q, want) in table {
            assert_eq!(nearest_rank(&v, q), Some(want), "q={q}");
        }
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn tallies_merge_and_summarise() {
        let ms = Duration::from_millis;
        let mut a = Tally::default();
        a.record(Outcome::Answered { status: 200 }, ms(10), 0, ms(10));
        a.record(Outcome::Answered { status: 503 }, ms(1), 2, ms(11));
        a.record(Outcome::Eagain, ms(0), 0, ms(11));
        let mut b = Tally::default();
        b.record(Outcome::Answered { status: 200 }, ms(30), 0, ms(30));
        b.record(Outcome::Timeout, ms(1000), 0, ms(1030));
        a.merge(b);
        assert_eq!(a.ended, None, "untimed tallies keep no end times");
        let s = Summary::new("unix:/x".into(), 2, Duration::from_secs(2), a, None);
        assert_eq!(s.requests, 5);
        assert_eq!(s.outcomes["ok"], 2);
        assert_eq!(s.outcomes["503"], 1);
        assert_eq!(s.outcomes["eagain"], 1);
        assert_eq!(s.outcomes["timeout"], 1);
        assert_eq!(s.fcgi_overloaded, 1);
        assert_eq!(s.ok_per_s, 1.0);
        let l = s.latency_ms.unwrap();
        assert_eq!((l.p50, l.max), (10.0, 30.0), "timeouts are not latencies");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["outcomes"]["ok"], 2);
        assert_eq!(json.get("timeline"), None, "no timeline unless asked");
        let empty = Summary::new("x".into(), 1, Duration::ZERO, Tally::default(), None);
        assert_eq!(
            serde_json::to_value(&empty).unwrap()["latency_ms"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn timed_tallies_merge_into_a_timeline() {
        let ms = Duration::from_millis;
        let ok = Outcome::Answered { status: 200 };
        let mut a = Tally::timed();
        a.record(ok, ms(50), 0, ms(50));
        a.record(Outcome::Timeout, ms(1000), 0, ms(1001));
        let mut b = Tally::timed();
        b.record(ok, ms(60), 0, ms(1100));
        a.merge(b);
        let s = Summary::new("x".into(), 2, ms(1200), a, Some(ms(1000)));
        assert_eq!(s.timeline_ms, Some(1000));
        let t = s.timeline.unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].outcomes["ok"], t[0].outcomes["timeout"]), (1, 0));
        assert_eq!((t[1].outcomes["ok"], t[1].outcomes["timeout"]), (1, 1));
    }
}
