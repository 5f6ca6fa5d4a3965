//! The overload policies as pure functions (DESIGN.md §4 "Overload"), and the answer a shed
//! request gets.
//!
//! - `deadline`: shed a request whose queue wait exceeds `max_queue_wait`. The web server in
//!   front has its own read timeout; a request that waited longer than that is answered to
//!   nobody, so running it only delays the requests behind it.
//! - `codel`: shed while the queue wait has *stayed* above `target` for `interval` (CoDel's
//!   test, Nichols & Jacobson 2012, applied to requests instead of packets): a short burst
//!   that queues briefly is served in full; a standing queue is cut back to `target` by
//!   answering the requests that waited too long with a cheap 503, which drains the queue at
//!   the speed of writing a 503 instead of the speed of the app.
//!
//! A request whose wait is unknown is never shed: the policy acts on measurements only.

use std::time::Duration;

use crate::config::{OverloadConfig, OverloadPolicy};

/// A request that waited less than this for a worker runs without asking the kernel whether
/// its client is still there (one `recv(MSG_PEEK)` per request; with the accept-before-wait it
/// took a relayed request from 8.2 system calls to 6.2, docs/BENCHMARKS.md): a web server does
/// not give up on a request within a millisecond, and one that did costs a run php-fpm would
/// have made too. Longer or unknown waits are asked.
pub const GONE_CHECK_AFTER: Duration = Duration::from_millis(1);

/// Pure: ask whether the client left before running a request that waited `queue_wait`?
pub fn ask_if_client_gone(queue_wait: Option<Duration>) -> bool {
    queue_wait.is_none_or(|wait| wait >= GONE_CHECK_AFTER)
}

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Run,
    Shed,
}

/// CoDel's memory, per pool: since when (monotonic µs) every wait has been above `target`;
/// `None` while waits are at or below it. Stored in shared memory as one `u64` (0 = `None`),
/// see [`CodelState::to_raw`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CodelState {
    pub above_since_us: Option<u64>,
}

impl CodelState {
    pub fn to_raw(self) -> u64 {
        self.above_since_us.map_or(0, |t| t.max(1))
    }

    pub fn from_raw(raw: u64) -> Self {
        Self {
            above_since_us: (raw != 0).then_some(raw),
        }
    }
}

/// `deadline`: shed when the wait exceeds `max_wait`.
pub fn deadline(wait: Duration, max_wait: Duration) -> Decision {
    if wait > max_wait {
        Decision::Shed
    } else {
        Decision::Run
    }
}

/// `codel`: given the time now, this request's wait and the pool's state, decide and return
/// the new state. A wait at or below `target` ends the standing queue; the first wait above it
/// starts the clock; once the clock has run `interval`, every request that waited above
/// `target` is shed.
pub fn codel(
    now_us: u64,
    wait: Duration,
    state: CodelState,
    target: Duration,
    interval: Duration,
) -> (Decision, CodelState) {
    if wait <= target {
        return (Decision::Run, CodelState::default());
    }
    let since = state.above_since_us.unwrap_or(now_us);
    let new_state = CodelState {
        above_since_us: Some(since),
    };
    let above_for = Duration::from_micros(now_us.saturating_sub(since));
    if above_for >= interval {
        (Decision::Shed, new_state)
    } else {
        (Decision::Run, new_state)
    }
}

/// The pool's policy applied to one request whose wait is `wait` (`None` = unknown: run),
/// with `queued_behind` connections known to be waiting behind it. Returns the decision and
/// CoDel's new state (unchanged for other policies).
///
/// Work-conserving: a request with nobody queued behind it is never shed, whatever the policy
/// says — shedding it would leave the worker idle, which helps nobody (the client's departure
/// has been checked already). This is CoDel's "never drop from a queue shorter than one
/// packet"; without it a shedding pool empties its queue in a burst of 503s and then idles
/// until clients come back (measured: 66% of capacity at backlog 64 instead of ~100%).
pub fn decide(
    config: &OverloadConfig,
    now_us: u64,
    wait: Option<Duration>,
    queued_behind: u64,
    state: CodelState,
) -> (Decision, CodelState) {
    let Some(wait) = wait else {
        return (Decision::Run, state);
    };
    let (decision, new_state) = match config.policy {
        OverloadPolicy::None => (Decision::Run, state),
        OverloadPolicy::Deadline => (deadline(wait, config.max_queue_wait), state),
        OverloadPolicy::Codel => codel(now_us, wait, state, config.target, config.interval),
    };
    if queued_behind == 0 {
        (Decision::Run, new_state)
    } else {
        (decision, new_state)
    }
}

/// The CGI response of a shed request: 503 with `Retry-After: 1` (the client may try again in
/// a second, when the queue will have drained) and a short text body.
pub const SHED_RESPONSE: &[u8] = b"Status: 503 Service Unavailable\r\n\
Retry-After: 1\r\n\
Content-Type: text/plain\r\n\
\r\n\
503 Service Unavailable: the server is overloaded (the request waited too long in the queue)\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_gone_is_asked_after_a_wait_or_when_unknown() {
        let table = [
            (None, true),
            (Some(Duration::ZERO), false),
            (Some(Duration::from_micros(999)), false),
            (Some(GONE_CHECK_AFTER), true),
            (Some(Duration::from_secs(3)), true),
        ];
        for (wait, want) in table {
            assert_eq!(ask_if_client_gone(wait), want, "{wait:?}");
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn deadline_table() {
        let table = [
            (0, 100, Decision::Run),
            (100, 100, Decision::Run),
            (101, 100, Decision::Shed),
            (5_000, 1_000, Decision::Shed),
        ];
        for (wait, max, want) in table {
            assert_eq!(deadline(ms(wait), ms(max)), want, "{wait} {max}");
        }
    }

    /// A sequence of requests (time ms, wait ms) through one pool's CoDel state, target 5 ms,
    /// interval 100 ms.
    #[test]
    fn codel_sequence() {
        use Decision::*;
        let steps: &[(u64, u64, Decision, Option<u64>)] = &[
            (0, 1, Run, None),          // below target
            (10, 6, Run, Some(10)),     // above: the clock starts
            (50, 50, Run, Some(10)),    // above for 40 ms: not yet
            (109, 9, Run, Some(10)),    // 99 ms
            (110, 9, Shed, Some(10)),   // 100 ms above: shed
            (120, 300, Shed, Some(10)), // still above
            (130, 5, Run, None),        // at target: the standing queue is gone
            (140, 80, Run, Some(140)),  // a new burst starts a new clock
            (239, 80, Run, Some(140)),
            (240, 80, Shed, Some(140)),
        ];
        let mut state = CodelState::default();
        for &(now, wait, want, since) in steps {
            let (d, s) = codel(now * 1000, ms(wait), state, ms(5), ms(100));
            assert_eq!(d, want, "t={now} wait={wait}");
            assert_eq!(s.above_since_us, since.map(|t| t * 1000), "t={now}");
            state = s;
        }
    }

    #[test]
    fn codel_state_round_trips_through_raw() {
        for s in [None, Some(1), Some(123_456)] {
            let state = CodelState { above_since_us: s };
            assert_eq!(CodelState::from_raw(state.to_raw()), state);
        }
        assert_eq!(CodelState::from_raw(0).above_since_us, None);
    }

    #[test]
    fn decide_table() {
        let conf = |policy, max, target, interval| OverloadConfig {
            policy,
            max_queue_wait: ms(max),
            target: ms(target),
            interval: ms(interval),
        };
        let none = conf(OverloadPolicy::None, 0, 5, 100);
        let dl = conf(OverloadPolicy::Deadline, 200, 5, 100);
        let cd = conf(OverloadPolicy::Codel, 0, 5, 0);
        let st = CodelState::default();
        let table = [
            (&none, Some(10_000), 5, Decision::Run),
            (&dl, Some(199), 5, Decision::Run),
            (&dl, Some(201), 5, Decision::Shed),
            (&dl, Some(201), 0, Decision::Run), // nobody behind: the worker would idle
            (&dl, None, 5, Decision::Run),
            (&cd, Some(6), 1, Decision::Shed), // interval 0: shed at once
            (&cd, Some(6), 0, Decision::Run),
            (&cd, Some(5), 1, Decision::Run),
            (&cd, None, 1, Decision::Run),
        ];
        for (config, wait, behind, want) in table {
            let (d, _) = decide(config, 1_000, wait.map(ms), behind, st);
            assert_eq!(d, want, "{:?} {wait:?} behind {behind}", config.policy);
        }
        // Not shedding for lack of work behind still keeps CoDel's clock running.
        let cd100 = conf(OverloadPolicy::Codel, 0, 5, 100);
        let (_, s) = decide(&cd100, 1_000, Some(ms(50)), 0, st);
        assert_eq!(s.above_since_us, Some(1_000));
    }

    #[test]
    fn shed_response_is_a_503_with_retry_after() {
        let text = std::str::from_utf8(SHED_RESPONSE).unwrap();
        assert!(text.starts_with("Status: 503"));
        assert!(text.contains("\r\nRetry-After: 1\r\n"));
        assert!(text.contains("\r\n\r\n503"));
    }
}
