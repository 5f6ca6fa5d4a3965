//! Backlog advice from this pool's own measurements (issue 11 item 7; the reasoning and the
//! experiment are in docs/OVERLOAD.md, "How long should the queue be?").
//!
//! A connection that joins the accept queue behind `q` others is answered after about
//! `q / μ + S`: the pool must first finish `q` requests at its service rate `μ`, then run this
//! one for its service time `S`. The client gives up after `client_timeout` `T` (nginx's
//! `fastcgi_read_timeout`, counted from sending the request to the first byte of the answer),
//! so a queue longer than `μ × (T − S)` holds connections that cannot be answered in time: in
//! a long overload every one of them is a 504 and, unless a worker notices the client left,
//! work done for nobody. That length is the **advised backlog**; a configured backlog far above
//! it only lengthens the wait of everyone behind. (The issue writes `≈ μ × T`; subtracting `S`
//! matters when the service time is a noticeable part of the timeout, and costs nothing when
//! it is not.)
//!
//! `μ` is measured, two ways, from the master's one-second history ([`super::history`]):
//!
//! 1. **At saturation** (preferred): in a second whose own queue and both neighbours' queues
//!    were non-empty, every worker was busy the whole second, so the requests the app finished
//!    in it are the pool's service rate, all overheads included. The median over such seconds
//!    (at least [`MIN_SATURATED_SECONDS`]) is `μ`; the median, because a second the machine
//!    stalled in should not move it. Below [`WHOLE_COUNTS`] requests a second the counts are
//!    too coarse for a median (a pool finishing one request every 3 s has a median of 0): the
//!    mean over those seconds is taken instead.
//! 2. **From the service time** (before the pool has ever been saturated): `concurrency / S̄`,
//!    `S̄` the mean time a worker spent per request the app ran, over the window. An upper
//!    bound — it assumes no time between requests — so it is used only when (1) has too few
//!    seconds.
//!
//! Everything here is pure: the history and the pool's facts go in, the advice comes out.

use std::time::Duration;

use super::history::Second;

/// Seconds of saturation needed before `μ` is taken from them rather than from the service
/// time: fewer are mostly a burst's edges.
pub const MIN_SATURATED_SECONDS: usize = 3;

/// Requests a second below which a median of whole per-second counts is too coarse (see the
/// module comment): the mean of the saturated seconds is `μ` then.
pub const WHOLE_COUNTS: f64 = 10.0;

/// A backlog more than this many times the advised length is "far above" it: in a full queue,
/// more than half of the connections wait past the client's timeout.
pub const FAR_ABOVE: u64 = 2;

/// What the advice needs to know about the pool besides its history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolFacts {
    /// `client_timeout`: how long a client waits for the answer before it gives up.
    pub client_timeout: Duration,
    /// Requests the pool runs at once at most: `max_children` (one executor per worker;
    /// held requests cost no worker and do not count).
    pub concurrency: u32,
    /// The backlog in force: the kernel's (`listen queue len`) when known, else the one fastpm
    /// passed to `listen()`.
    pub backlog: u64,
}

impl PoolFacts {
    /// The facts of a pool whose clients wait `client_timeout` and whose status (with the
    /// `max_children` in force) is `snapshot`.
    pub fn of(client_timeout: Duration, snapshot: &super::PoolSnapshot) -> PoolFacts {
        PoolFacts {
            client_timeout,
            concurrency: snapshot.max_children,
            backlog: match snapshot.listen_queue_len {
                0 => u64::from(snapshot.listen_backlog),
                kernel => kernel,
            },
        }
    }
}

/// How `μ` was obtained.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RateBasis {
    /// The requests finished per second over this many saturated seconds (their median, or
    /// their mean when that is below [`WHOLE_COUNTS`]).
    Saturated { seconds: usize },
    /// `concurrency / mean service time`.
    ServiceTime { concurrency: u32 },
}

/// The pool's service rate `μ`, requests per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServiceRate {
    pub per_second: f64,
    pub basis: RateBasis,
}

/// Whether the backlog in force suits the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No request ran in the window: nothing to measure.
    Unknown,
    /// The backlog is at most [`FAR_ABOVE`] times the advised length.
    Fits,
    /// The backlog is far above the advised length: a full queue means 504s and work for
    /// clients that left.
    TooLong,
}

/// The advice for one pool (`advised backlog`, `backlog advice` in `/status`).
#[derive(Clone, Debug, PartialEq)]
pub struct BacklogAdvice {
    pub rate: Option<ServiceRate>,
    /// Mean time a worker spent per request the app ran, over the window, milliseconds.
    pub mean_service_ms: Option<f64>,
    /// The queue length beyond which a queued request cannot be answered in time.
    pub advised: Option<u64>,
    pub facts: PoolFacts,
    pub verdict: Verdict,
    /// The queue reached the backlog within the window: connections were refused (unix: the
    /// client's `connect()` got `EAGAIN`, nginx's 502; TCP: SYNs dropped, 504s).
    pub queue_reached_backlog: bool,
    /// The advice in plain words ([`BacklogAdvice::explain`]), as status shows it.
    pub sentence: String,
}

/// The advice for a pool whose last seconds are `seconds` (oldest first, gaps included).
pub fn advise<'a>(
    seconds: impl IntoIterator<Item = &'a Second>,
    facts: PoolFacts,
) -> BacklogAdvice {
    let mut saturated_runs: Vec<u32> = Vec::new();
    // The two seconds before the one being looked at, to judge the middle one.
    let mut before: [Option<&Second>; 2] = [None, None];
    let (mut runs, mut time_us) = (0u64, 0u64);
    let mut reached = false;
    for s in seconds {
        runs += u64::from(s.app_runs);
        time_us = time_us.saturating_add(s.app_time_us);
        if let (Some(q), Some(len)) = (s.listen_queue, s.listen_queue_len) {
            reached |= len > 0 && q >= len;
        }
        if let [Some(a), Some(b)] = before {
            if [a, b, s]
                .iter()
                .all(|x| x.listen_queue.is_some_and(|q| q > 0))
            {
                saturated_runs.push(b.app_runs);
            }
        }
        before = [before[1], Some(s)];
    }
    let mean_service_ms = (runs > 0).then(|| time_us as f64 / runs as f64 / 1000.0);
    let rate = if saturated_runs.len() >= MIN_SATURATED_SECONDS {
        Some(ServiceRate {
            per_second: saturated_rate(&mut saturated_runs),
            basis: RateBasis::Saturated {
                seconds: saturated_runs.len(),
            },
        })
    } else {
        mean_service_ms
            .filter(|&ms| ms > 0.0)
            .map(|ms| ServiceRate {
                per_second: f64::from(facts.concurrency) * 1000.0 / ms,
                basis: RateBasis::ServiceTime {
                    concurrency: facts.concurrency,
                },
            })
    };
    let advised = rate.map(|r| advised_length(r.per_second, facts.client_timeout, mean_service_ms));
    let verdict = match advised {
        None => Verdict::Unknown,
        Some(a) if facts.backlog > a.saturating_mul(FAR_ABOVE) => Verdict::TooLong,
        Some(_) => Verdict::Fits,
    };
    let mut advice = BacklogAdvice {
        rate,
        mean_service_ms,
        advised,
        facts,
        verdict,
        queue_reached_backlog: reached,
        sentence: String::new(),
    };
    advice.sentence = advice.explain();
    advice
}

/// `μ × (T − S)`, rounded down; 0 when requests take the whole timeout or longer.
pub fn advised_length(per_second: f64, timeout: Duration, service_ms: Option<f64>) -> u64 {
    let left_s = timeout.as_secs_f64() - service_ms.unwrap_or(0.0) / 1000.0;
    let length = per_second * left_s;
    if length.is_finite() && length > 0.0 {
        length.floor() as u64
    } else {
        0
    }
}

/// `μ` from the saturated seconds' counts: their median, or their mean when the median is
/// below [`WHOLE_COUNTS`].
fn saturated_rate(runs: &mut [u32]) -> f64 {
    let middle = median(runs);
    if middle >= WHOLE_COUNTS {
        return middle;
    }
    runs.iter().map(|&r| f64::from(r)).sum::<f64>() / runs.len() as f64
}

fn median(values: &mut [u32]) -> f64 {
    values.sort_unstable();
    let n = values.len();
    if n % 2 == 1 {
        f64::from(values[n / 2])
    } else {
        (f64::from(values[n / 2 - 1]) + f64::from(values[n / 2])) / 2.0
    }
}

impl BacklogAdvice {
    /// Whether the advice is a warning (`backlog warning` 1 in `/status`): the backlog is far
    /// above what the pool can answer in time, or the queue reached it. The dashboard marks
    /// the advice by this, not by reading its sentence.
    pub fn warns(&self) -> bool {
        self.verdict == Verdict::TooLong || self.queue_reached_backlog
    }

    /// The advice in one or two plain sentences, for the text status, the dashboard and
    /// `fastpm status`.
    pub fn explain(&self) -> String {
        let timeout = crate::config::duration::format_duration(self.facts.client_timeout);
        let backlog = self.facts.backlog;
        let (Some(rate), Some(advised)) = (self.rate, self.advised) else {
            return "no request ran in the last 15 minutes: nothing to measure the service rate from yet".to_string();
        };
        let how = match rate.basis {
            RateBasis::Saturated { seconds } => {
                format!(
                    "{:.1}/s measured over {seconds} saturated seconds, {:.1} ms per request",
                    rate.per_second,
                    self.mean_service_ms.unwrap_or(0.0)
                )
            }
            RateBasis::ServiceTime { concurrency } => format!(
                "{:.1}/s estimated as {concurrency} at once / {:.1} ms mean service time (not saturated yet)",
                rate.per_second,
                self.mean_service_ms.unwrap_or(0.0)
            ),
        };
        let mut out = match self.verdict {
            Verdict::TooLong => format!(
                "backlog {backlog} is far above the {advised} queued requests this pool can answer within client_timeout {timeout} (service rate {how}): in an overload the rest wait past the client's timeout (504s) and the work done for them is for clients that left; lower the backlog toward {advised} or shed with [overload] policy = \"deadline\" or \"codel\""
            ),
            _ if backlog <= advised => format!(
                "backlog {backlog} is within the {advised} queued requests this pool can answer within client_timeout {timeout} (service rate {how})"
            ),
            _ => format!(
                "backlog {backlog} is a little above the {advised} queued requests this pool can answer within client_timeout {timeout} (service rate {how}): in a long overload the last {} queued wait past the client's timeout",
                backlog - advised
            ),
        };
        if self.queue_reached_backlog {
            out.push_str(&format!(
                "; the queue reached the backlog ({backlog}) in the last 15 minutes: new connections were refused (unix socket: 502 from nginx; TCP: dropped SYNs, 504s)"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second of the history: the queue's maximum and the requests the app finished in it,
    /// each taking `ms`.
    fn s(queue: u32, runs: u32, ms: u64) -> Second {
        Second {
            listen_queue: Some(queue),
            listen_queue_len: Some(511),
            app_runs: runs,
            app_time_us: u64::from(runs) * ms * 1000,
            ..Second::GAP
        }
    }

    fn facts(timeout_ms: u64, concurrency: u32, backlog: u64) -> PoolFacts {
        PoolFacts {
            client_timeout: Duration::from_millis(timeout_ms),
            concurrency,
            backlog,
        }
    }

    #[test]
    fn advised_length_table() {
        let table = [
            // (μ, T ms, S ms, want)
            (80.0, 1000, None, 80),
            (80.0, 1000, Some(50.0), 76),
            (79.3, 60_000, Some(50.0), 4754),
            (10.0, 1000, Some(1000.0), 0),
            (10.0, 1000, Some(3000.0), 0),
            (0.0, 1000, None, 0),
            (f64::INFINITY, 1000, None, 0),
        ];
        for (rate, t, service, want) in table {
            assert_eq!(
                advised_length(rate, Duration::from_millis(t), service),
                want,
                "{rate} {t} {service:?}"
            );
        }
    }

    #[test]
    fn saturated_seconds_give_the_rate_and_the_done_when_setting_flags_511() {
        // 4 workers × 50 ms, clients gone after 1 s: idle, a burst's edge, 10 s full, idle.
        let mut seconds = vec![s(0, 0, 0), s(0, 20, 50), s(30, 78, 50)];
        seconds.extend((0..10).map(|i| s(200, 79 + i % 2, 50)));
        seconds.extend([s(40, 80, 50), s(0, 12, 50), s(0, 0, 0)]);
        let advice = advise(&seconds, facts(1000, 4, 511));
        let rate = advice.rate.unwrap();
        // The run's edge seconds (queue empty on one side) are left out: its 10 interior
        // seconds, 79 and 80 requests five times each.
        assert_eq!(rate.basis, RateBasis::Saturated { seconds: 10 });
        assert_eq!(rate.per_second, 79.5);
        assert_eq!(advice.mean_service_ms, Some(50.0));
        // 79.5/s × (1 s − 50 ms) = 75.5
        assert_eq!(advice.advised, Some(75));
        assert_eq!(advice.verdict, Verdict::TooLong);
        assert!(!advice.queue_reached_backlog);
        let text = &advice.sentence;
        assert!(text.contains("backlog 511 is far above the 75"), "{text}");
        assert!(text.contains("client_timeout 1s"), "{text}");
    }

    /// (seconds, facts, want rate basis, want advised, want verdict, want reached)
    #[test]
    fn advice_table() {
        type Case = (
            Vec<Second>,
            PoolFacts,
            Option<RateBasis>,
            Option<u64>,
            Verdict,
            bool,
        );
        let idle = || vec![Second::GAP; 5];
        let light = || vec![s(0, 10, 50); 5];
        let two_saturated = || {
            vec![
                s(0, 5, 50),
                s(9, 80, 50),
                s(9, 80, 50),
                s(9, 80, 50),
                s(9, 80, 50),
                s(0, 5, 50),
            ]
        };
        let full = |len| {
            let mut v = vec![s(600, 80, 50); 5];
            for x in &mut v {
                x.listen_queue_len = Some(len);
            }
            v
        };
        let table: Vec<Case> = vec![
            // nothing ran: unknown, whatever the backlog
            (
                idle(),
                facts(1000, 4, 511),
                None,
                None,
                Verdict::Unknown,
                false,
            ),
            // light load: μ from 4 / 50 ms = 80/s
            (
                light(),
                facts(1000, 4, 511),
                Some(RateBasis::ServiceTime { concurrency: 4 }),
                Some(76),
                Verdict::TooLong,
                false,
            ),
            (
                light(),
                facts(60_000, 4, 511),
                Some(RateBasis::ServiceTime { concurrency: 4 }),
                Some(4796),
                Verdict::Fits,
                false,
            ),
            // exactly twice the advice still fits; one more is far above
            (
                light(),
                facts(1000, 4, 152),
                Some(RateBasis::ServiceTime { concurrency: 4 }),
                Some(76),
                Verdict::Fits,
                false,
            ),
            (
                light(),
                facts(1000, 4, 153),
                Some(RateBasis::ServiceTime { concurrency: 4 }),
                Some(76),
                Verdict::TooLong,
                false,
            ),
            // two interior saturated seconds are too few: service time instead
            (
                two_saturated(),
                facts(1000, 4, 64),
                Some(RateBasis::ServiceTime { concurrency: 4 }),
                Some(76),
                Verdict::Fits,
                false,
            ),
            // the queue at the backlog: refused connections, said beside the verdict
            (
                full(64),
                facts(1000, 4, 64),
                Some(RateBasis::Saturated { seconds: 3 }),
                Some(76),
                Verdict::Fits,
                true,
            ),
            // service longer than the timeout: no queue helps
            (
                vec![s(0, 1, 1500); 3],
                facts(1000, 4, 8),
                Some(RateBasis::ServiceTime { concurrency: 4 }),
                Some(0),
                Verdict::TooLong,
                false,
            ),
        ];
        for (i, (seconds, facts, basis, advised, verdict, reached)) in table.into_iter().enumerate()
        {
            let got = advise(&seconds, facts);
            assert_eq!(got.rate.map(|r| r.basis), basis, "case {i}");
            assert_eq!(got.advised, advised, "case {i}");
            assert_eq!(got.verdict, verdict, "case {i}");
            assert_eq!(got.queue_reached_backlog, reached, "case {i}");
            let text = &got.sentence;
            assert_eq!(
                text.contains("reached the backlog"),
                reached,
                "case {i}: {text}"
            );
        }
    }

    /// (backlog, words the advice must say) for 80/s, 50 ms, 1 s: advised 76.
    #[test]
    fn sentences_say_which_case() {
        let table = [
            (64, "backlog 64 is within the 76 queued requests"),
            (76, "backlog 76 is within the 76"),
            (100, "backlog 100 is a little above the 76 queued requests this pool can answer within client_timeout 1s (service rate 80.0/s estimated as 4 at once / 50.0 ms mean service time (not saturated yet)): in a long overload the last 24 queued wait"),
            (511, "backlog 511 is far above the 76"),
        ];
        for (backlog, want) in table {
            let text = advise(&vec![s(0, 10, 50); 3], facts(1000, 4, backlog)).sentence;
            assert!(text.contains(want), "{backlog}: {text}");
        }
        let idle = advise(&[Second::GAP], facts(1000, 4, 511)).sentence;
        assert!(idle.starts_with("no request ran"), "{idle}");
    }

    /// One request every 3 s, one worker, always a queue: a median of the whole counts
    /// (0, 0, 1, 0, 0, 1…) would be 0 and advise a backlog of 0.
    #[test]
    fn a_slow_saturated_pool_has_a_rate_above_zero() {
        let mut seconds = vec![s(0, 0, 0)];
        seconds.extend([0, 0, 1, 0, 0, 1, 0, 0, 1].map(|runs| s(5, runs, 3000)));
        seconds.push(s(0, 0, 0));
        let advice = advise(&seconds, facts(60_000, 1, 511));
        let rate = advice.rate.unwrap();
        assert_eq!(rate.basis, RateBasis::Saturated { seconds: 7 });
        assert!(
            (rate.per_second - 2.0 / 7.0).abs() < 1e-9,
            "{}",
            rate.per_second
        );
        // μ × (T − S) = 2/7 × 57 s.
        assert_eq!(advice.advised, Some(16));
    }

    #[test]
    fn a_stalled_second_does_not_move_the_median() {
        let mut seconds = vec![s(0, 0, 0)];
        seconds.extend([80, 80, 3, 80, 79, 80, 80].map(|runs| s(50, runs, 50)));
        seconds.push(s(0, 0, 0));
        let rate = advise(&seconds, facts(1000, 4, 511)).rate.unwrap();
        assert_eq!(rate.basis, RateBasis::Saturated { seconds: 5 });
        assert_eq!(rate.per_second, 80.0);
    }
}
