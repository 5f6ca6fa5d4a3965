//! The front's thread: one epoll set with the pool's listening socket (while the accept rule
//! allows), the connections it holds (one-shot, re-armed after each read) and the handoff's
//! eventfd. Each turn: kept connections given back, connections that became readable, then
//! new connections; every [`TICK`] the deadlines and the stop flags.
//!
//! The common case costs one `recv` more than nothing: nginx sends the whole request right
//! after connecting, so a connection is read once right after `accept()` and, complete, goes
//! to an executor without ever entering the epoll set.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::Ordering::{AcqRel, Relaxed};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{send, MsgFlags};

use super::conn::{End, FrontConn, Step};
use super::handoff::{Handoff, Job};
use super::policy::{self, AcceptView, Ending, Phase, TICK};
use crate::listen::{Peer, Stream};
use crate::overload::monotonic_us;
use crate::scoreboard::WorkerSlot;
use crate::worker::serve::{after_accept_error, AfterAcceptError};
use crate::worker::PoolContext;

const LISTENER: u64 = u64::MAX;
const WAKE: u64 = u64::MAX - 1;
/// Read buffer shared by every connection of the front: holds the largest record twice.
const SCRATCH: usize = 128 * 1024;
/// Connections taken per turn at most, so readable connections are not starved by a flood.
const ACCEPT_BATCH: usize = 64;

struct Front<'a> {
    ctx: &'a PoolContext,
    handoff: &'a Handoff,
    /// Where the front publishes `reading connections` and `idle kept connections`.
    gauges: &'a WorkerSlot,
    epoll: Epoll,
    conns: HashMap<RawFd, FrontConn>,
    /// The listener is in the epoll set.
    listening: bool,
    scratch: Vec<u8>,
    replies: Vec<u8>,
    returned: Vec<FrontConn>,
    ending: Ending,
    /// Draining: the queue was found empty once; accept nothing more.
    drained: bool,
    /// accept() failed for want of resources: not before this.
    backoff_until: Option<Instant>,
    last_error_log: Option<Instant>,
    next_sweep: Instant,
}

/// Run the front of one pool in this process until the pool stops (or, in a worker process,
/// until it retires). Closes the handoff when it leaves, so the executors finish what is
/// queued and leave too.
pub fn run_front(ctx: &PoolContext, handoff: &Handoff, gauges: &WorkerSlot) -> std::io::Result<()> {
    struct CloseOnExit<'h>(&'h Handoff);
    impl Drop for CloseOnExit<'_> {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _close = CloseOnExit(handoff);
    // Shared by every worker of the pool (and set by the master for non-exec pools): a
    // connection another worker took first must give EAGAIN here, not block.
    ctx.listener.set_nonblocking(true)?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(
        handoff.wake_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, WAKE),
    )?;
    let mut front = Front {
        ctx,
        handoff,
        gauges,
        epoll,
        conns: HashMap::new(),
        listening: false,
        scratch: vec![0; SCRATCH],
        replies: Vec::new(),
        returned: Vec::new(),
        ending: Ending::No,
        drained: false,
        backoff_until: None,
        last_error_log: None,
        next_sweep: Instant::now() + TICK,
    };
    let result = front.run();
    front.listening = false;
    front.publish_gauges(0, 0);
    result
}

impl Front<'_> {
    fn run(&mut self) -> std::io::Result<()> {
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            self.look_at_stop();
            if self.done() {
                return Ok(());
            }
            if self.ending == Ending::Drain && !self.drained && self.accept_view_allows() {
                // The queue may hold connections without a new readiness event: look.
                self.accept_some();
            }
            let timeout = self.sync_listener();
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            let (mut wake, mut listener) = (false, false);
            let now = Instant::now();
            for event in &events[..n] {
                match event.data() {
                    WAKE => wake = true,
                    LISTENER => listener = true,
                    fd => {
                        if let Some(conn) = self.conns.remove(&(fd as RawFd)) {
                            self.advance(conn, now, true);
                        }
                    }
                }
            }
            if wake {
                self.take_returned(now);
            }
            if listener {
                self.accept_some();
            }
            if Instant::now() >= self.next_sweep {
                self.sweep();
                if self.listening {
                    // EPOLLEXCLUSIVE wakes one front per connection; one that could not take
                    // it (accept() failed, or it became busy in the same turn) leaves it
                    // queued with no one woken. Every front looks again each tick.
                    self.accept_some();
                }
            }
        }
    }

    /// The stop flags (and recycling) as this front's [`Ending`]; an ending closes what it
    /// must at once.
    fn look_at_stop(&mut self) {
        let ending = if self.ctx.quitting.load(Relaxed) || self.handoff.retiring() {
            Ending::Now
        } else if self.ctx.stopping.load(Relaxed) {
            Ending::Drain
        } else {
            Ending::No
        };
        if ending != self.ending && ending != Ending::No {
            // Never back from Now to Drain.
            if self.ending != Ending::Now {
                self.ending = ending;
                self.close_for_stop(Instant::now());
            }
        }
    }

    /// Stopping, nothing held, and nothing more to accept.
    fn done(&self) -> bool {
        match self.ending {
            Ending::No => false,
            Ending::Now => self.conns.is_empty(),
            Ending::Drain => self.drained && self.conns.is_empty(),
        }
    }

    fn view(&self) -> AcceptView {
        AcceptView {
            held: self.conns.len(),
            in_flight: self.handoff.in_flight(),
            executors: self.handoff.executors(),
            drained: self.drained,
            retiring: self.ending == Ending::Now,
        }
    }

    fn accept_view_allows(&self) -> bool {
        policy::may_accept(self.view()) && self.backoff_until.is_none_or(|t| Instant::now() >= t)
    }

    /// Put the listener in or out of the epoll set as the accept rule says; the wait's timeout.
    fn sync_listener(&mut self) -> EpollTimeout {
        let mut timeout = TICK;
        let mut want = policy::may_accept(self.view());
        if !want {
            let v = self.view();
            if v.in_flight >= v.executors && !self.drained && self.ending != Ending::Now {
                // Ask to be woken when an executor is free; it may have become free already.
                let in_flight = self.handoff.want_free_executor();
                want = policy::may_accept(AcceptView { in_flight, ..v });
            }
        }
        if let Some(until) = self.backoff_until {
            let now = Instant::now();
            if now < until {
                want = false;
                timeout = timeout.min(until - now);
            } else {
                self.backoff_until = None;
            }
        }
        if want != self.listening {
            let result = if want {
                self.epoll.add(
                    &self.ctx.listener,
                    EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, LISTENER),
                )
            } else {
                self.epoll.delete(&self.ctx.listener)
            };
            match result {
                Ok(()) => {
                    self.listening = want;
                    self.gauges.holds_lock.store(u32::from(want), Relaxed);
                    self.gauges.beat();
                }
                Err(e) => {
                    tracing::error!(pool = %self.ctx.config.name, error = %e, "front: cannot watch the listening socket");
                    timeout = timeout.min(Duration::from_millis(10));
                }
            }
        }
        EpollTimeout::try_from(timeout).unwrap_or(EpollTimeout::NONE)
    }

    /// Take connections off the queue while the accept rule allows.
    fn accept_some(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            if !self.accept_view_allows() {
                return;
            }
            let accepted = {
                // Held around one non-blocking accept(), never while waiting.
                let _turn = self.ctx.lock.acquire();
                self.ctx.listener.accept()
            };
            let error = match accepted {
                Ok((stream, peer)) => {
                    self.admit(stream, peer);
                    continue;
                }
                Err(error) => error,
            };
            match after_accept_error(&error) {
                AfterAcceptError::CheckStop => {
                    if self.ending == Ending::Drain {
                        self.drained = true;
                    }
                    return;
                }
                AfterAcceptError::Retry => {}
                AfterAcceptError::BackOff(delay) => {
                    self.ctx.board().accept_errors.fetch_add(1, Relaxed);
                    if self
                        .last_error_log
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
                    {
                        tracing::error!(pool = %self.ctx.config.name, %error, "accept failed; backing off without the accept lock");
                        self.last_error_log = Some(Instant::now());
                    }
                    self.backoff_until = Some(Instant::now() + delay);
                    if self.ending == Ending::Drain {
                        // Draining needs accept(), which keeps failing here: the others drain.
                        self.drained = true;
                    }
                    return;
                }
            }
        }
    }

    /// A new connection: queue-wait accounting, `allowed_clients`, then its first read.
    fn admit(&mut self, stream: Stream, peer: Peer) {
        let board = self.ctx.board();
        let accepted_at = monotonic_us();
        // This connection is the k-th taken off the queue (DESIGN.md §4): when did it arrive?
        let k = board.accept_seq.fetch_add(1, AcqRel) + 1;
        let queue_wait_us = board.arrivals.wait_us(k, accepted_at);
        board.queue_wait.record(queue_wait_us);
        if let Peer::Tcp(addr) = &peer {
            if !self.ctx.clients.allows(&addr.ip()) {
                board.refused_clients.fetch_add(1, Relaxed);
                tracing::warn!(pool = %self.ctx.config.name, peer = %addr, "connection refused: peer is not in allowed_clients");
                return;
            }
            // The kernel's own measure of the same wait: one getsockopt per TCP connection.
            if let Ok(ms) = crate::sys::sockopt::tcp_last_data_recv_ms(stream.as_fd()) {
                board.queue_wait_tcp_info.record(Some(u64::from(ms) * 1000));
            }
        }
        let now = Instant::now();
        let conn = FrontConn::new(stream, peer, &self.ctx.limits, queue_wait_us, now);
        self.advance(conn, now, true);
    }

    /// Read (when `read`) and feed `conn`; hand it over, hold it, or close it.
    fn advance(&mut self, mut conn: FrontConn, now: Instant, read: bool) {
        let step = conn.step(&mut self.scratch, &mut self.replies, now, read);
        if !self.replies.is_empty() {
            let sent = send_all_now(&conn.stream, &self.replies);
            self.replies.clear();
            if let Err(e) = sent {
                if let Step::Wait | Step::Complete(_) = step {
                    tracing::debug!(pool = %self.ctx.config.name, peer = ?conn.peer, error = %e, "connection ended: cannot send a protocol reply");
                    return;
                }
            }
        }
        match step {
            Step::Complete(request) => self.handoff.push(Job { conn, request }),
            Step::Wait => self.hold(conn),
            Step::Close(end) => self.log_end(&conn, end),
        }
    }

    /// Keep `conn` until it is readable (or its deadline).
    fn hold(&mut self, mut conn: FrontConn) {
        let fd = conn.stream.as_fd().as_raw_fd();
        let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, fd as u64);
        let result = if conn.registered {
            self.epoll.modify(&conn.stream, &mut event.clone())
        } else {
            self.epoll.add(&conn.stream, event)
        };
        match result {
            Ok(()) => {
                conn.registered = true;
                self.conns.insert(fd, conn);
            }
            Err(e) => {
                tracing::warn!(pool = %self.ctx.config.name, error = %e, "front: cannot watch a connection; closed");
            }
        }
    }

    /// Kept connections back from the executors: idle (or already with a next request).
    fn take_returned(&mut self, now: Instant) {
        let mut returned = std::mem::take(&mut self.returned);
        self.handoff.take_returned(&mut returned);
        for mut conn in returned.drain(..) {
            conn.returned(now);
            if self.ending == Ending::Now
                || (!conn.has_pending()
                    && policy::close_on_stop(self.ending, conn.phase, false, now))
            {
                continue; // closed: stopping, and the connection was idle
            }
            let read = false;
            self.advance(conn, now, read);
        }
        self.returned = returned;
    }

    /// Close what a stop closes (idle kept connections; silent ones; everything for QUIT).
    fn close_for_stop(&mut self, now: Instant) {
        let ending = self.ending;
        self.conns
            .retain(|_, c| !policy::close_on_stop(ending, c.phase, c.bytes_seen, now));
    }

    /// Deadlines, stop closes, and the gauges.
    fn sweep(&mut self) {
        let now = Instant::now();
        self.next_sweep = now + TICK;
        let name = &self.ctx.config.name;
        self.conns.retain(|_, c| {
            let open = now < policy::deadline(c.phase);
            if !open {
                tracing::debug!(pool = %name, peer = ?c.peer, phase = ?c.phase, "connection closed at its deadline");
            }
            open
        });
        self.close_for_stop(now);
        let (mut reading, mut idle) = (0, 0);
        for c in self.conns.values() {
            match c.phase {
                Phase::Reading { .. } => reading += 1,
                Phase::Idle { .. } => idle += 1,
            }
        }
        self.publish_gauges(reading, idle);
    }

    /// The gauges, and the front's sign of life: while it watches the listening socket it
    /// counts as holding the accept turn (`holds_lock`), so a frozen worker process — whose
    /// queued connections nobody else may be taking — is found silent and replaced
    /// (`master::process_pool::is_hung`), as a frozen lock holder was before.
    fn publish_gauges(&self, reading: u32, idle: u32) {
        self.gauges.front_reading.store(reading, Relaxed);
        self.gauges.front_idle.store(idle, Relaxed);
        self.gauges
            .holds_lock
            .store(u32::from(self.listening), Relaxed);
        self.gauges.beat();
    }

    fn log_end(&self, conn: &FrontConn, end: End) {
        let pool = &self.ctx.config.name;
        match end {
            End::PeerClosed | End::Done => {}
            End::Io(e) => {
                // Resets and the like end one connection; they are the client's business.
                tracing::debug!(pool = %pool, peer = ?conn.peer, error = %e, "connection ended");
            }
            End::Protocol(e) => {
                self.ctx.board().protocol_errors.fetch_add(1, Relaxed);
                tracing::warn!(pool = %pool, peer = ?conn.peer, error = %e, "closed connection");
            }
            End::Limit(e) => {
                self.ctx.board().protocol_errors.fetch_add(1, Relaxed);
                tracing::warn!(pool = %pool, peer = ?conn.peer, error = %e, "closed connection");
            }
        }
    }
}

/// Send `bytes` without blocking (protocol replies are small and the socket's buffer empty);
/// a reply that does not fit ends the connection rather than stall the front.
fn send_all_now(stream: &Stream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match send(
            stream.as_fd().as_raw_fd(),
            bytes,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
