//! The accept queue of a unix listening socket through `unix_diag` (what `ss -lx` shows).
//!
//! The kernel looks the socket up by its inode (an exact query, no dump) and with
//! `UDIAG_SHOW_RQLEN` answers, for a listener, (receive queue length, `sk_max_ack_backlog`) =
//! (connections waiting, effective backlog). Unix sockets count no drops: a client refused
//! because the queue is full gets `EAGAIN` and the kernel records nothing.
//!
//! The lookup walks every unix socket of the network namespace until it meets ours (the kernel
//! has no index by inode), so it costs in proportion to the unix sockets that exist: two per
//! held request. Measured on Linux 6.18 with 18,000 unix sockets: the exact query 2–100 µs
//! (where our listener's hash bucket falls in the walk), a dump filtered to listening sockets
//! (`udiag_states = 1 << TCP_LISTEN`) 480–620 µs, since it walks them all; the filter saves the
//! formatting, not the walk. A cache-cold walk costs more: ~6 ms per lookup on an idle master
//! holding 19,000 requests (perf), ~0.25 ms when walks follow each other every 2 ms.
//!
//! So the sampler's path, [`UnixDiagProbe::sample`], decides per tick ([`decide`]):
//! - it first asks an epoll set watching the listener ([`super::readiness`], O(1)): not
//!   readable means no connection is waiting, and the last answer's backlog still holds;
//! - the kernel is asked when one is waiting, on the first sample, after a failure or
//!   [`UnixDiagProbe::forget`] (a `listen()` with a new backlog), and at least every
//!   [`REFRESH`] (a listener that was closed, which epoll cannot tell, shows within that time);
//! - but while connections wait, a walk comes at most every [`WALK_SPACING`] × the CPU time the
//!   last one took, so the walks cost at most a tenth of a core however many unix sockets exist
//!   (a walk of 10 µs: no limit below the sampler's own 2 ms; of 1 ms: one per 10 ms). A tick
//!   in between is no sample: the pool's last one stands, and the sampler stays at its busy
//!   pace.
//!
//! [`UnixDiagProbe::read`] always asks.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use crate::sys::rusage;

use netlink_packet_sock_diag::constants::TCP_LISTEN;
use netlink_packet_sock_diag::unix::{ShowFlags, StateFlags, UnixRequest};
use netlink_packet_sock_diag::SockDiagMessage;

use super::diag::{DiagSocket, QueryKind};
use super::readiness::Readiness;
use super::QueueReading;

/// Longest time [`UnixDiagProbe::sample`] goes without asking the kernel while the queue is
/// seen empty: how late a listener closed elsewhere shows as a failure. Long, because the walk
/// is dear exactly when it is useless (many unix sockets, nothing waiting); a new backlog does
/// not wait for it: whoever calls `listen()` again says so ([`UnixDiagProbe::forget`]).
pub const REFRESH: Duration = Duration::from_secs(60);

/// While connections wait, the next walk comes no sooner than this many times the CPU time the
/// last walk took: walks then take at most 1/`WALK_SPACING` of a core.
pub const WALK_SPACING: u32 = 10;

/// What the epoll set said of the listener before a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Readable (or an error or hang-up): a connection is waiting.
    Waiting,
    /// Not readable: the queue is empty.
    Empty,
    /// No epoll set, or it failed: nothing known.
    Unknown,
}

/// What one sample does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ask `unix_diag` (walk the unix sockets).
    Ask,
    /// Report an empty queue with the last answer's backlog.
    Empty,
    /// No sample this tick: connections wait, but the last walk was too recent for its cost.
    Skip,
}

/// The sample's decision, from what epoll saw, how long ago the kernel last answered a sample
/// (`None`: never, or the last ask failed) and the CPU time that answer's walk took.
pub fn decide(seen: Seen, since_answer: Option<Duration>, last_walk: Duration) -> Decision {
    let Some(age) = since_answer else {
        return Decision::Ask;
    };
    match seen {
        Seen::Empty if age < REFRESH => Decision::Empty,
        Seen::Empty => Decision::Ask,
        Seen::Waiting | Seen::Unknown if age < last_walk * WALK_SPACING => Decision::Skip,
        Seen::Waiting | Seen::Unknown => Decision::Ask,
    }
}

fn not_found(inode: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("unix_diag knows no socket with inode {inode} in this network namespace (closed?)"),
    )
}

/// "No cookie": the kernel then matches on the inode alone.
const NO_COOKIE: [u8; 8] = [0xff; 8];

pub struct UnixDiagProbe {
    socket: DiagSocket,
    /// The listening socket's inode (`fstat(fd).st_ino`, not the socket file's inode).
    inode: u32,
    /// Watches the listener for waiting connections; `None` when it could not be set up (then
    /// the queue is never known to be empty: samples ask the kernel, spaced by `last_walk`).
    readiness: Option<Readiness>,
    /// The kernel's last answer to [`Self::sample`] and when it came: its backlog is what a
    /// sample that finds the queue empty reports. `None` before the first and after a failure.
    last: Option<(QueueReading, Instant)>,
    /// CPU time the last walk of [`Self::sample`] took: what spaces the next while
    /// connections wait.
    last_walk: Duration,
    /// `unix_diag` queries sent, for tests and measurements.
    asks: u64,
}

impl UnixDiagProbe {
    /// A probe of the listener `listener` whose socket inode is `inode`.
    pub fn new(listener: BorrowedFd<'_>, inode: u32) -> io::Result<Self> {
        let readiness = Readiness::watch(listener)
            .inspect_err(|e| {
                tracing::debug!(inode, error = %e, "cannot watch the listener with epoll; every sample asks unix_diag");
            })
            .ok();
        Ok(Self {
            socket: DiagSocket::open()?,
            inode,
            readiness,
            last: None,
            last_walk: Duration::ZERO,
            asks: 0,
        })
    }

    /// Drop the last answer, so the next [`Self::sample`] asks the kernel: after a `listen()`
    /// that changed the backlog.
    pub fn forget(&mut self) {
        self.last = None;
    }

    /// `unix_diag` queries sent so far.
    pub fn asks(&self) -> u64 {
        self.asks
    }

    /// The sampler's reading ([`decide`]): the kernel's answer, an empty queue with the last
    /// answer's backlog, or `None` (no sample this tick: connections wait and the last walk
    /// was too recent).
    pub fn sample(&mut self) -> io::Result<Option<QueueReading>> {
        let seen = match &self.readiness {
            None => Seen::Unknown,
            Some(readiness) => match readiness.waiting() {
                Ok(true) => Seen::Waiting,
                Ok(false) => Seen::Empty,
                Err(_) => Seen::Unknown,
            },
        };
        let now = Instant::now();
        let since = self.last.map(|(_, at)| now.saturating_duration_since(at));
        match (decide(seen, since, self.last_walk), self.last) {
            (Decision::Empty, Some((last, _))) => {
                return Ok(Some(QueueReading { queued: 0, ..last }))
            }
            (Decision::Skip, Some(_)) => return Ok(None),
            _ => {}
        }
        let cpu = rusage::thread_cpu();
        let answer = self.read();
        let spent = rusage::thread_cpu().since(cpu);
        self.last_walk = spent.user + spent.system;
        match answer {
            Ok(reading) => {
                self.last = Some((reading, now));
                Ok(Some(reading))
            }
            Err(e) => {
                self.last = None;
                Err(e)
            }
        }
    }

    /// Ask the kernel now.
    pub fn read(&mut self) -> io::Result<QueueReading> {
        self.asks += 1;
        let request = SockDiagMessage::UnixRequest(UnixRequest {
            state_flags: StateFlags::LISTEN,
            inode: self.inode,
            show_flags: ShowFlags::RQLEN,
            cookie: NO_COOKIE,
        });
        let inode = self.inode;
        let mut found: Option<io::Result<QueueReading>> = None;
        self.socket
            .query(request, QueryKind::Exact, |answer| {
                if let SockDiagMessage::UnixResponse(response) = answer {
                    if response.header.inode != inode {
                        return;
                    }
                    found = Some(if response.header.state != TCP_LISTEN {
                        Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("unix socket inode {inode} is not listening"),
                        ))
                    } else {
                        match (
                            response.number_of_pending_connection(),
                            response.max_number_of_pending_connection(),
                        ) {
                            (Some(queued), Some(backlog)) => Ok(QueueReading {
                                queued,
                                backlog,
                                drops: None,
                            }),
                            _ => Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "unix_diag answered without UNIX_DIAG_RQLEN",
                            )),
                        }
                    });
                }
            })
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => not_found(inode),
                _ => e,
            })?;
        found.unwrap_or_else(|| Err(not_found(inode)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_table() {
        use Decision::*;
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        let table: &[(Seen, Option<Duration>, Duration, Decision)] = &[
            // Never answered (first sample, or the last ask failed): ask, whatever epoll says
            // and whatever the last walk cost.
            (Seen::Empty, None, ms(5), Ask),
            (Seen::Waiting, None, ms(5), Ask),
            (Seen::Unknown, None, ms(5), Ask),
            // Empty and an answer younger than REFRESH: its backlog holds, walk cost or not.
            (Seen::Empty, Some(ms(0)), ms(5), Empty),
            (Seen::Empty, Some(ms(59_999)), us(10), Empty),
            // Empty, but the answer is old: ask (a listener closed elsewhere shows).
            (Seen::Empty, Some(REFRESH), us(10), Ask),
            // A connection waits (or nothing is known) and walks are cheap: every tick asks.
            (Seen::Waiting, Some(ms(2)), us(10), Ask),
            (Seen::Unknown, Some(ms(2)), us(10), Ask),
            (Seen::Waiting, Some(us(100)), us(10), Ask),
            // ... dear: at most one walk per WALK_SPACING × its cost.
            (Seen::Waiting, Some(ms(2)), us(200), Ask),
            (Seen::Waiting, Some(ms(2)), us(500), Skip),
            (Seen::Waiting, Some(ms(5)), us(500), Ask),
            (Seen::Waiting, Some(ms(9)), ms(1), Skip),
            (Seen::Unknown, Some(ms(9)), ms(1), Skip),
            (Seen::Waiting, Some(ms(10)), ms(1), Ask),
        ];
        for &(seen, age, walk, want) in table {
            assert_eq!(decide(seen, age, walk), want, "{seen:?} {age:?} {walk:?}");
        }
        assert_eq!(
            WALK_SPACING, 10,
            "the table's figures assume a tenth of a core"
        );
    }
}
