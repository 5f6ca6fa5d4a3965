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
//! formatting, not the walk. So the sampler's path, [`UnixDiagProbe::sample`], first asks an
//! epoll set watching the listener ([`super::readiness`], O(1)): not readable means no
//! connection is waiting, and the last answer's backlog still holds. The kernel is asked when
//! one is waiting, on the first sample, after a failure or [`UnixDiagProbe::forget`] (a
//! `listen()` with a new backlog), and at least every [`REFRESH`] (a listener that was closed,
//! which epoll cannot tell, shows within that time). [`UnixDiagProbe::read`] always asks.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use netlink_packet_sock_diag::constants::TCP_LISTEN;
use netlink_packet_sock_diag::unix::{ShowFlags, StateFlags, UnixRequest};
use netlink_packet_sock_diag::SockDiagMessage;

use super::diag::{DiagSocket, QueryKind};
use super::readiness::Readiness;
use super::QueueReading;

/// Longest time [`UnixDiagProbe::sample`] goes without asking the kernel while the queue is
/// seen empty: how late a listener closed elsewhere shows as a failure. Not shorter: with tens
/// of thousands of unix sockets one cache-cold walk costs milliseconds (perf on an idle master
/// holding 19,000 requests: ~4 ms). A new backlog does not wait for it: whoever calls
/// `listen()` again says so ([`UnixDiagProbe::forget`]).
pub const REFRESH: Duration = Duration::from_secs(10);

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

/// Whether a sample must ask `unix_diag`, given what epoll saw and how long ago the kernel last
/// answered a sample (`None`: never, or the last ask failed).
pub fn must_ask(seen: Seen, since_answer: Option<Duration>) -> bool {
    match (seen, since_answer) {
        (Seen::Empty, Some(age)) => age >= REFRESH,
        _ => true,
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
    /// Watches the listener for waiting connections; `None` when it could not be set up (every
    /// sample then asks the kernel, as before).
    readiness: Option<Readiness>,
    /// The kernel's last answer to [`Self::sample`] and when it came: its backlog is what a
    /// sample that finds the queue empty reports. `None` before the first and after a failure.
    last: Option<(QueueReading, Instant)>,
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

    /// The sampler's reading: the kernel's answer when it must be asked ([`must_ask`]),
    /// otherwise an empty queue with the last answer's backlog.
    pub fn sample(&mut self) -> io::Result<QueueReading> {
        let seen = match &self.readiness {
            None => Seen::Unknown,
            Some(readiness) => match readiness.waiting() {
                Ok(true) => Seen::Waiting,
                Ok(false) => Seen::Empty,
                Err(_) => Seen::Unknown,
            },
        };
        let now = Instant::now();
        if let Some((last, at)) = self.last {
            if !must_ask(seen, Some(now.saturating_duration_since(at))) {
                return Ok(QueueReading { queued: 0, ..last });
            }
        }
        match self.read() {
            Ok(reading) => {
                self.last = Some((reading, now));
                Ok(reading)
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
    fn must_ask_table() {
        let ms = Duration::from_millis;
        let table: &[(Seen, Option<Duration>, bool)] = &[
            // Never answered (first sample, or the last ask failed): ask, whatever epoll says.
            (Seen::Empty, None, true),
            (Seen::Waiting, None, true),
            (Seen::Unknown, None, true),
            // A connection waits: only the kernel knows how many.
            (Seen::Waiting, Some(ms(0)), true),
            // Nothing known of the queue: ask.
            (Seen::Unknown, Some(ms(0)), true),
            // Empty and a recent answer: the answer's backlog holds.
            (Seen::Empty, Some(ms(0)), false),
            (Seen::Empty, Some(ms(9_999)), false),
            // Empty, but the answer is old: ask (a new backlog, a closed listener).
            (Seen::Empty, Some(REFRESH), true),
            (Seen::Empty, Some(ms(60_000)), true),
        ];
        for &(seen, age, want) in table {
            assert_eq!(must_ask(seen, age), want, "{seen:?} {age:?}");
        }
    }
}
