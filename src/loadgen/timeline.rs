//! Outcomes over time (`fastpm bench --timeline-ms`): the attempts that ended in each interval
//! since the run started, so a plot can show goodput falling and recovering instead of one
//! average over the whole run. Pure bucketing; the engine only records when attempts ended.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::outcome::Outcome;

/// One interval of the timeline. Serialised flat: `{"t_ms": 300, "ok": 7, "timeout": 2, …}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineBucket {
    /// Start of the interval, milliseconds since the run started.
    pub t_ms: u64,
    /// Attempts that ended in `[t_ms, t_ms + interval)`, by [`Outcome::key`]. Every key seen
    /// anywhere in the run is present in every bucket (0 when none), so each key reads as a
    /// complete series.
    #[serde(flatten)]
    pub outcomes: BTreeMap<String, u64>,
}

/// Buckets of `interval` from 0 covering `until` (the run's wall time) and every event, each
/// event counted in the bucket its end time falls in. A zero interval gives no buckets.
pub fn bucket(
    ended: &[(Duration, Outcome)],
    interval: Duration,
    until: Duration,
) -> Vec<TimelineBucket> {
    let step = interval.as_micros();
    if step == 0 {
        return Vec::new();
    }
    let index = |at: Duration| (at.as_micros() / step) as usize;
    let last_event = ended
        .iter()
        .map(|(at, _)| index(*at) + 1)
        .max()
        .unwrap_or(0);
    let covering_until = until.as_micros().div_ceil(step) as usize;
    let count = last_event.max(covering_until);
    let keys: BTreeMap<String, u64> = ended.iter().map(|(_, o)| (o.key(), 0)).collect();
    let mut buckets: Vec<TimelineBucket> = (0..count)
        .map(|i| TimelineBucket {
            t_ms: (i as u128 * step / 1000) as u64,
            outcomes: keys.clone(),
        })
        .collect();
    for (at, outcome) in ended {
        *buckets[index(*at)]
            .outcomes
            .entry(outcome.key())
            .or_default() += 1;
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Outcome = Outcome::Answered { status: 200 };
    const SHED: Outcome = Outcome::Answered { status: 503 };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// (events, interval ms, until ms) → per bucket: (t_ms, [(key, n)] of the non-zero keys),
    /// plus the key set every bucket must carry.
    #[test]
    fn bucket_table() {
        type Case = (
            Vec<(Duration, Outcome)>,
            u64,
            u64,
            Vec<(u64, Vec<(&'static str, u64)>)>,
            Vec<&'static str>,
        );
        let table: Vec<Case> = vec![
            // nothing happened: empty buckets still cover the run
            (
                vec![],
                100,
                250,
                vec![(0, vec![]), (100, vec![]), (200, vec![])],
                vec![],
            ),
            // boundaries: 99 ms is in the first bucket, 100 ms in the second
            (
                vec![(ms(0), OK), (ms(99), OK), (ms(100), Outcome::Timeout)],
                100,
                200,
                vec![(0, vec![("ok", 2)]), (100, vec![("timeout", 1)])],
                vec!["ok", "timeout"],
            ),
            // an attempt that ended after `until` (in flight at the stop) gets its bucket
            (
                vec![(ms(10), Outcome::Eagain), (ms(1250), SHED)],
                500,
                1000,
                vec![
                    (0, vec![("eagain", 1)]),
                    (500, vec![]),
                    (1000, vec![("503", 1)]),
                ],
                vec!["503", "eagain"],
            ),
            // sub-millisecond intervals still bucket by microseconds
            (
                vec![(Duration::from_micros(1500), OK)],
                1,
                2,
                vec![(0, vec![]), (1, vec![("ok", 1)])],
                vec!["ok"],
            ),
        ];
        for (events, interval, until, want, keys) in table {
            let got = bucket(&events, ms(interval), ms(until));
            let got_nonzero: Vec<(u64, Vec<(&str, u64)>)> = got
                .iter()
                .map(|b| {
                    let nz = b
                        .outcomes
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(k, n)| (k.as_str(), *n))
                        .collect();
                    (b.t_ms, nz)
                })
                .collect();
            assert_eq!(got_nonzero, want, "{events:?} / {interval} ms");
            for b in &got {
                let k: Vec<&str> = b.outcomes.keys().map(String::as_str).collect();
                assert_eq!(k, keys, "every bucket carries every key");
            }
            let total: u64 = got.iter().flat_map(|b| b.outcomes.values()).sum();
            assert_eq!(total, events.len() as u64, "every event counted once");
        }
        assert!(bucket(&[(ms(1), OK)], Duration::ZERO, ms(10)).is_empty());
    }

    #[test]
    fn serialises_flat() {
        let b = bucket(
            &[(ms(120), OK), (ms(130), Outcome::Timeout)],
            ms(100),
            ms(200),
        );
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"t_ms": 0, "ok": 0, "timeout": 0},
                {"t_ms": 100, "ok": 1, "timeout": 1}
            ])
        );
    }
}
