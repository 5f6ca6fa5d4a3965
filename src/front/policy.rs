//! The front's rules as pure functions with their constants: when a free executor may accept,
//! when a connection's time is up, which connections a stop closes. The front's loop and the
//! executors only ask; the tables below are the whole policy.

use std::time::{Duration, Instant};

/// A new request's params (BEGIN_REQUEST through the empty PARAMS record) must arrive within
/// this of its first byte — for a fresh connection, of `accept()` — like nginx's
/// `client_header_timeout` (60 s there; a FastCGI client is a web server on a fast link and
/// sends its params in one write, so 10 s is generous).
pub const PARAMS_DEADLINE: Duration = Duration::from_secs(10);

/// The whole request (params and body) must arrive within this of its first byte. nginx
/// buffers request bodies by default (`fastcgi_request_buffering on`) and sends them at once;
/// a body that takes longer is a client holding a connection, not uploading.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

/// How long a kept connection (FCGI_KEEP_CONN) may stay idle in the front. Longer than
/// nginx's upstream `keepalive_timeout` (60 s by default) on purpose: the web server, which
/// knows whether it is about to send, closes first; a server that closes a kept connection
/// races the request the web server may be sending on it (issue 9's 502s). An idle kept
/// connection costs a descriptor and a few hundred bytes, no worker.
pub const IDLE_KEPT_TIMEOUT: Duration = Duration::from_secs(300);

/// Connections one front holds that are not with an executor (being read, idle kept). Past
/// this it stops accepting and the kernel queue takes the rest (DESIGN.md §8). 1024 is the
/// default soft `RLIMIT_NOFILE`; a front that meets the descriptor limit first backs off like
/// any failed `accept()` (`worker::serve::after_accept_error`).
pub const MAX_FRONT_CONNECTIONS: usize = 1024;

/// How often the front and a waiting executor wake with nothing to do: the stop flags, the
/// deadlines (kept to within this), the heartbeat.
pub const TICK: Duration = Duration::from_millis(100);

/// How long a free executor waits for the request of a connection it accepted before any of
/// it arrived, before giving the connection to the front. A web server writes its request a
/// few microseconds after `connect()` returns (on TCP the accept can win that race); without
/// the grace the executor would accept the next connection, and a burst would move requests
/// out of the kernel queue into the front, where queue wait does not see them.
pub const ACCEPT_GRACE: Duration = Duration::from_millis(1);

/// No grace while the front already holds this many connections being read: a flood of
/// silent connections must not cost executors a grace each.
pub const GRACE_MAX_HELD: usize = 8;

/// Pure: wait [`ACCEPT_GRACE`] for this fresh connection's first bytes?
pub fn grace(nothing_read: bool, held: usize) -> bool {
    nothing_read && held < GRACE_MAX_HELD
}

/// On a graceful stop (TERM), a connection that has sent nothing is closed once it is this
/// old: one accepted a moment ago may have its request in flight (TCP), one silent for longer
/// is a client holding a connection.
pub const STOP_SILENT_GRACE: Duration = Duration::from_millis(200);

/// What a free executor knows when it decides whether to accept. (It is free and no complete
/// request is queued, or it would be running that: those two parts of the rule hold by
/// construction, see `worker::executor`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptView {
    /// Connections the front holds (being read, idle kept).
    pub held: usize,
    /// The pool is stopping gracefully and the queue was found empty once: no more accepts.
    pub drained: bool,
    /// Immediate stop, reload, or recycling: no more accepts.
    pub retiring: bool,
}

/// Pure: may a free executor take a connection off the kernel queue now?
///
/// DESIGN.md §8: connections being read or idle do not stop the pool accepting, up to the
/// cap; past it the kernel queue takes the rest, where `listen queue` and drops see them.
pub fn may_accept(v: AcceptView) -> bool {
    !v.drained && !v.retiring && v.held < MAX_FRONT_CONNECTIONS
}

/// What a free executor looks at first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstLook {
    /// fastpm's own queue (complete requests the front read).
    Queued,
    /// The kernel's queue: one non-blocking `accept()`, then fastpm's queue if it was empty.
    Kernel,
}

/// Pure: which queue a free executor serves first, given that it may accept and whether the
/// request it just ran came from fastpm's queue.
///
/// Both queues hold requests that wait for a worker: fastpm's the ones on kept connections (and
/// from slow clients), the kernel's those on new connections. Serving fastpm's always first
/// starved the kernel's under nginx's `fastcgi_keep_conn on`: with `keepalive 4` and 16
/// clients, the kept connections' requests were never all served at once, and a new
/// connection waited up to 5.8 s (wrk timeouts) while the median was half the keep-conn-off
/// one. An executor that ran a queued request therefore looks at the kernel's queue once before
/// the next queued one: each queue gets at least every other turn, and a new connection still
/// leaves the kernel queue only when a worker is free to run it (the backlog stays where
/// `listen queue` and drops see it).
pub fn first_look(may_accept: bool, ran_queued: bool) -> FirstLook {
    if may_accept && ran_queued {
        FirstLook::Kernel
    } else {
        FirstLook::Queued
    }
}

/// Where a connection the front holds is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A request is being read (on a fresh connection: since accept, even before its first
    /// byte). `since`: its first byte, or the accept.
    Reading { since: Instant, params_done: bool },
    /// A kept connection between requests, nothing of the next one read.
    Idle { since: Instant },
}

/// Pure: when the connection's time is up.
pub fn deadline(phase: Phase) -> Instant {
    match phase {
        Phase::Reading {
            since,
            params_done: false,
        } => since + PARAMS_DEADLINE,
        Phase::Reading {
            since,
            params_done: true,
        } => since + REQUEST_DEADLINE,
        Phase::Idle { since } => since + IDLE_KEPT_TIMEOUT,
    }
}

/// `max_requests` reached: a parked kept connection idle this long is closed. nginx takes the
/// most recently used connection from its cache first, so one idle this long is the least
/// likely to be picked in the very turn it closes (the race that costs a POST: nginx does not
/// retry one it began to send). Closing them all at once cost ~100 POSTs in 12,700 requests.
pub const RETIRE_IDLE_GRACE: Duration = Duration::from_millis(200);

/// `max_requests`: the longest a retiring process keeps its connections (then they close as for
/// QUIT), so a connection nginx keeps busy cannot keep an old process alive.
pub const RETIRE_MAX: Duration = Duration::from_secs(2);

/// Why the front is ending, as far as its connections are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Serving normally.
    No,
    /// `max_requests` reached (since `since`): accept nothing new; a kept connection is closed
    /// right after its next answer (by the executor) or once idle [`RETIRE_IDLE_GRACE`].
    Retire { since: Instant },
    /// TERM: drain. Requests being read may finish (within their deadline).
    Drain,
    /// QUIT, reload: stop now.
    Now,
}

impl Ending {
    /// Endings only move towards a harder one: No < Retire < Drain < Now.
    pub fn rank(self) -> u8 {
        match self {
            Ending::No => 0,
            Ending::Retire { .. } => 1,
            Ending::Drain => 2,
            Ending::Now => 3,
        }
    }
}

/// Pure: close this connection now because of `ending`? Idle kept connections always (an
/// idle connection loses nothing: no request of it has begun); a connection that has sent
/// nothing when draining once [`STOP_SILENT_GRACE`] old; every connection when stopping now.
/// (Requests already complete are with an executor and served either way.)
pub fn close_on_stop(ending: Ending, phase: Phase, bytes_seen: bool, now: Instant) -> bool {
    match (ending, phase) {
        (Ending::No, _) => false,
        (Ending::Now, _) => true,
        (Ending::Drain, Phase::Idle { .. }) => true,
        (Ending::Drain, Phase::Reading { since, .. }) => {
            !bytes_seen && now.saturating_duration_since(since) >= STOP_SILENT_GRACE
        }
        (Ending::Retire { since: retiring }, _)
            if now.saturating_duration_since(retiring) >= RETIRE_MAX =>
        {
            true
        }
        (Ending::Retire { .. }, Phase::Idle { since }) => {
            now.saturating_duration_since(since) >= RETIRE_IDLE_GRACE
        }
        (Ending::Retire { .. }, Phase::Reading { since, .. }) => {
            !bytes_seen && now.saturating_duration_since(since) >= STOP_SILENT_GRACE
        }
    }
}

/// Pure: when this process retires (`max_requests`, a reload), hand an idle kept connection
/// to another worker of the pool (through the master, `hold::wire::ToMaster::Pass`) rather
/// than close it: nginx may be sending its next request on it at this very moment, and a
/// POST it cannot retry would get a 502. Only idle ones with nothing read: a request begun is
/// finished here.
pub fn pass_on_stop(ending: Ending, phase: Phase, bytes_seen: bool) -> bool {
    matches!((ending, phase), (Ending::Retire { .. }, Phase::Idle { .. })) && !bytes_seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retiring_passes_on_only_idle_connections_with_nothing_read() {
        let t0 = Instant::now();
        let retire = Ending::Retire { since: t0 };
        let idle = Phase::Idle { since: t0 };
        let reading = Phase::Reading {
            since: t0,
            params_done: false,
        };
        for (ending, phase, seen, want) in [
            (retire, idle, false, true),
            (retire, idle, true, false),
            (retire, reading, false, false),
            (Ending::Drain, idle, false, false),
            (Ending::Now, idle, false, false),
            (Ending::No, idle, false, false),
        ] {
            assert_eq!(
                pass_on_stop(ending, phase, seen),
                want,
                "{ending:?} {phase:?} {seen}"
            );
        }
    }

    #[test]
    fn retiring_closes_idle_connections_after_a_grace_and_everything_at_the_bound() {
        let t0 = Instant::now();
        let retire = Ending::Retire { since: t0 };
        let idle = Phase::Idle { since: t0 };
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(
            !close_on_stop(retire, idle, false, ms(10)),
            "just idle: may be used"
        );
        assert!(
            close_on_stop(retire, idle, false, ms(200)),
            "idle 200 ms: closed"
        );
        let reading = Phase::Reading {
            since: ms(1_000),
            params_done: false,
        };
        assert!(
            !close_on_stop(retire, reading, true, ms(1_500)),
            "a request on its way"
        );
        assert!(close_on_stop(retire, reading, true, ms(2_000)), "the bound");
        assert!(Ending::Now.rank() > Ending::Drain.rank());
        assert!(Ending::Drain.rank() > retire.rank());
    }

    #[test]
    fn first_look_table() {
        use FirstLook::*;
        // (may accept, ran a queued request last) → first look
        let table = [
            (true, false, Queued),
            (true, true, Kernel),
            (false, true, Queued),
            (false, false, Queued),
        ];
        for (may, ran_queued, want) in table {
            assert_eq!(first_look(may, ran_queued), want, "{may} {ran_queued}");
        }
    }

    #[test]
    fn may_accept_table() {
        let v = |held, drained, retiring| AcceptView {
            held,
            drained,
            retiring,
        };
        let table = [
            // However many connections are being read or idle, up to the cap.
            (v(0, false, false), true),
            (v(200, false, false), true),
            (v(MAX_FRONT_CONNECTIONS - 1, false, false), true),
            // The cap.
            (v(MAX_FRONT_CONNECTIONS, false, false), false),
            // Stopping.
            (v(0, true, false), false),
            (v(0, false, true), false),
        ];
        for (view, want) in table {
            assert_eq!(may_accept(view), want, "{view:?}");
        }
    }

    #[test]
    fn grace_table() {
        let table = [
            (true, 0, true),
            (true, GRACE_MAX_HELD - 1, true),
            (true, GRACE_MAX_HELD, false),
            (false, 0, false),
        ];
        for (nothing_read, held, want) in table {
            assert_eq!(grace(nothing_read, held), want, "{nothing_read} {held}");
        }
    }

    #[test]
    fn deadline_table() {
        let t = Instant::now();
        let table = [
            (
                Phase::Reading {
                    since: t,
                    params_done: false,
                },
                t + PARAMS_DEADLINE,
            ),
            (
                Phase::Reading {
                    since: t,
                    params_done: true,
                },
                t + REQUEST_DEADLINE,
            ),
            (Phase::Idle { since: t }, t + IDLE_KEPT_TIMEOUT),
        ];
        for (phase, want) in table {
            assert_eq!(deadline(phase), want, "{phase:?}");
        }
    }

    #[test]
    fn close_on_stop_table() {
        let t = Instant::now();
        let reading = Phase::Reading {
            since: t,
            params_done: false,
        };
        let idle = Phase::Idle { since: t };
        let young = t + STOP_SILENT_GRACE / 2;
        let old = t + STOP_SILENT_GRACE;
        let table = [
            (Ending::No, idle, false, old, false),
            (Ending::No, reading, false, old, false),
            (Ending::Now, reading, true, young, true),
            (Ending::Now, idle, false, young, true),
            (Ending::Drain, idle, false, young, true),
            // Draining: a request being read may finish; a silent connection goes once old.
            (Ending::Drain, reading, true, old, false),
            (Ending::Drain, reading, false, young, false),
            (Ending::Drain, reading, false, old, true),
        ];
        for (ending, phase, bytes, now, want) in table {
            assert_eq!(
                close_on_stop(ending, phase, bytes, now),
                want,
                "{ending:?} {phase:?} bytes={bytes}"
            );
        }
    }
}
