//! The front's thread: one epoll set with the connections it holds (one-shot, re-armed after
//! each read) and the handoff's eventfd. Each turn: connections the executors gave it (new
//! ones whose request is not all there, kept ones after their response), then connections
//! that became readable; every [`TICK`] the deadlines, the stop flags and the gauges.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::conn::FrontConn;
use super::handoff::{Handoff, Job};
use super::intake::{look, Look, SCRATCH};
use super::policy::{self, Ending, Phase, TICK};
use crate::hold::wire;
use crate::status::recorder::FrontGauges;
use crate::sys::fdpass::{recv_with_fd, Received};
use crate::worker::PoolContext;

const WAKE: u64 = u64::MAX;
/// The pool's link with the master's holder: kept connections come back on it.
const BACK: u64 = u64::MAX - 1;

struct Front<'a> {
    ctx: &'a PoolContext,
    handoff: &'a Handoff,
    /// `reading connections` and `idle kept connections`, in the worker slot it publishes in.
    gauges: FrontGauges,
    epoll: Epoll,
    conns: HashMap<RawFd, FrontConn>,
    scratch: Vec<u8>,
    replies: Vec<u8>,
    given: Vec<FrontConn>,
    ending: Ending,
    next_sweep: Instant,
    /// The holder link is in the epoll set (taken out when this front starts ending, so a
    /// retiring worker does not take back what it passes on).
    back_watched: bool,
    /// A datagram from the holder, kept across receives.
    wire: Vec<u8>,
}

/// The front's epoll set, made before the worker starts (so a worker that cannot get its
/// descriptors fails before it claims a scoreboard slot, not later).
pub fn front_epoll(handoff: &Handoff) -> std::io::Result<Epoll> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(
        handoff.front_wake_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, WAKE),
    )?;
    Ok(epoll)
}

/// Run the front of one pool in this process until the pool stops (or, in a worker process,
/// until it retires), in the epoll set [`front_epoll`] made. Closes the handoff when it
/// leaves, so the executors finish what is queued and leave too.
pub fn run_front(
    ctx: &PoolContext,
    handoff: &Handoff,
    gauges: FrontGauges,
    epoll: Epoll,
) -> std::io::Result<()> {
    /// On the way out (a panic included): refuse further connections, and pass on what the
    /// executors gave after the front last looked — a kept connection closed here could have
    /// nginx's next request on it.
    struct CloseOnExit<'h>(&'h Handoff, &'h PoolContext);
    impl Drop for CloseOnExit<'_> {
        fn drop(&mut self) {
            let quitting = self.1.quitting.load(Relaxed);
            for mut conn in self.0.close() {
                if !quitting && (conn.is_kept() || conn.nothing_read()) {
                    super::pass::pass_on(self.1, &mut conn);
                }
            }
        }
    }
    let _close = CloseOnExit(handoff, ctx);
    let mut front = Front {
        ctx,
        handoff,
        gauges,
        epoll,
        conns: HashMap::new(),
        scratch: vec![0; SCRATCH],
        replies: Vec::new(),
        given: Vec::new(),
        ending: Ending::No,
        next_sweep: Instant::now() + TICK,
        back_watched: false,
        wire: vec![0; wire::MAX_PENDING + 64],
    };
    if let Some(link) = &ctx.hold_link {
        // EXCLUSIVE: one connection coming back wakes one worker process, not all.
        front.epoll.add(
            link,
            EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, BACK),
        )?;
        front.back_watched = true;
    }
    let result = front.run();
    front.gauges.reading.set(0.0);
    front.gauges.idle.set(0.0);
    result
}

impl Front<'_> {
    fn run(&mut self) -> std::io::Result<()> {
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            self.look_at_stop();
            // What the executors gave last (a recycling executor's kept connection comes with
            // the retire flag) is placed before the front may find itself done: it passes
            // such a connection on, never drops it.
            self.take_given(Instant::now());
            if self.done() {
                return Ok(());
            }
            let timeout = EpollTimeout::try_from(TICK).unwrap_or(EpollTimeout::NONE);
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            let now = Instant::now();
            let mut wake = false;
            for event in &events[..n] {
                match event.data() {
                    WAKE => wake = true,
                    BACK => self.take_back(now),
                    fd => {
                        if let Some(conn) = self.conns.remove(&(fd as RawFd)) {
                            self.advance(conn, now, true);
                        }
                    }
                }
            }
            if wake {
                self.take_given(now);
            }
            if Instant::now() >= self.next_sweep {
                self.sweep();
            }
            self.handoff.set_held(self.conns.len());
        }
    }

    /// The stop flags (and recycling) as this front's [`Ending`]; an ending closes what it
    /// must at once.
    fn look_at_stop(&mut self) {
        // A reload retiring this process (USR2) takes the max_requests path.
        if self.ctx.retiring.load(Relaxed) && !self.handoff.retiring() {
            self.handoff.retire();
        }
        let ending = if self.ctx.quitting.load(Relaxed) {
            Ending::Now
        } else if self.ctx.stopping.load(Relaxed) {
            Ending::Drain
        } else if self.handoff.retiring() {
            match self.ending {
                Ending::Retire { since } => Ending::Retire { since },
                _ => Ending::Retire {
                    since: Instant::now(),
                },
            }
        } else {
            Ending::No
        };
        // Only towards a harder ending (never back from Now to Drain, or to Retire).
        if ending.rank() > self.ending.rank() {
            self.ending = ending;
            self.unwatch_back();
            self.close_for_stop(Instant::now());
        }
    }

    fn unwatch_back(&mut self) {
        if self.back_watched {
            if let Some(link) = &self.ctx.hold_link {
                let _ = self.epoll.delete(link);
            }
            self.back_watched = false;
        }
    }

    /// Kept connections the master's holder gives back (after a held answer, or passed on by
    /// a retiring worker): parked idle like any kept connection.
    fn take_back(&mut self, now: Instant) {
        let Some(link) = &self.ctx.hold_link else {
            return;
        };
        loop {
            match recv_with_fd(link.as_fd(), &mut self.wire) {
                Ok(Received::Datagram(n, Some(fd))) => {
                    let back = match wire::decode_back(&self.wire[..n]) {
                        Ok(back) => back,
                        Err(error) => {
                            tracing::warn!(pool = %self.ctx.config.name, %error, "front: a bad datagram from the holder; connection closed");
                            continue;
                        }
                    };
                    match self.ctx.listener.adopt_stream(fd) {
                        Ok((stream, peer)) => {
                            let conn = FrontConn::handed_back(
                                stream,
                                peer,
                                &self.ctx.limits,
                                back.pending,
                                now,
                            );
                            self.advance(conn, now, false);
                        }
                        Err(error) => {
                            tracing::debug!(pool = %self.ctx.config.name, %error, "front: a connection given back is already gone");
                        }
                    }
                }
                Ok(Received::Datagram(_, None)) => {
                    tracing::warn!(pool = %self.ctx.config.name, "front: a connection given back was lost (out of descriptors?)");
                }
                Ok(Received::Empty) => return,
                Ok(Received::Closed) => {
                    self.unwatch_back();
                    return;
                }
                Err(error) => {
                    tracing::warn!(pool = %self.ctx.config.name, %error, "front: cannot read from the holder link");
                    return;
                }
            }
        }
    }

    /// Stopping, nothing held, and the executors accept nothing more.
    fn done(&self) -> bool {
        match self.ending {
            Ending::No => false,
            Ending::Now | Ending::Retire { .. } => self.conns.is_empty(),
            Ending::Drain => self.handoff.drained() && self.conns.is_empty(),
        }
    }

    /// Read (when `read`) and feed `conn`; queue it for an executor, hold it, or let it go.
    fn advance(&mut self, conn: FrontConn, now: Instant, read: bool) {
        match look(
            self.ctx,
            conn,
            &mut self.scratch,
            &mut self.replies,
            now,
            read,
        ) {
            Look::Run(conn, request) => self.handoff.push(Job {
                conn,
                request,
                ready_at: Instant::now(),
            }),
            Look::Park(conn) => self.hold(conn),
            Look::Gone => {}
        }
    }

    /// Keep `conn` until it is readable (or its deadline).
    fn hold(&mut self, mut conn: FrontConn) {
        let fd = conn.stream.as_fd().as_raw_fd();
        let mut event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, fd as u64);
        let result = if conn.registered {
            self.epoll.modify(&conn.stream, &mut event)
        } else {
            self.epoll.add(&conn.stream, event)
        };
        // A connection that went to the master's holder and came back may carry the same
        // descriptor number as before, for the same open socket: epoll still has it (an entry
        // lives as long as the socket does, and the holder kept the socket open; one-shot
        // left it disarmed). Re-arm that entry instead of refusing the connection.
        let result = match result {
            Err(Errno::EEXIST) => self.epoll.modify(&conn.stream, &mut event),
            Err(Errno::ENOENT) => self.epoll.add(&conn.stream, event),
            other => other,
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

    /// Connections the executors gave: new ones (read once already) and kept ones (idle, or
    /// with the next request's first bytes already read).
    fn take_given(&mut self, now: Instant) {
        let mut given = std::mem::take(&mut self.given);
        self.handoff.take_given(&mut given);
        for mut conn in given.drain(..) {
            if conn.is_kept() {
                conn.returned(now);
            }
            if policy::pass_on_stop(self.ending, conn.phase, conn.bytes_seen)
                && super::pass::pass_on(self.ctx, &mut conn)
            {
                continue;
            }
            if policy::close_on_stop(self.ending, conn.phase, conn.bytes_seen, now) {
                tracing::debug!(pool = %self.ctx.config.name, phase = ?conn.phase, seen = conn.bytes_seen, ending = ?self.ending, "front: given connection closed for the stop");
                continue; // closed: stopping, and nothing is lost
            }
            // A new connection was just read to EAGAIN by its executor; a kept one has read
            // nothing since its request: use what it holds, then wait for readiness.
            self.advance(conn, now, false);
        }
        self.given = given;
    }

    /// Close what a stop closes (idle kept connections; silent ones; everything for QUIT).
    fn close_for_stop(&mut self, now: Instant) {
        let ending = self.ending;
        let passing: Vec<RawFd> = self
            .conns
            .iter()
            .filter(|(_, c)| policy::pass_on_stop(ending, c.phase, c.bytes_seen))
            .map(|(fd, _)| *fd)
            .collect();
        for fd in passing {
            if let Some(mut conn) = self.conns.remove(&fd) {
                if conn.registered {
                    let _ = self.epoll.delete(&conn.stream);
                }
                super::pass::pass_on(self.ctx, &mut conn);
            }
        }
        let name = &self.ctx.config.name;
        self.conns.retain(|_, c| {
            let close = policy::close_on_stop(ending, c.phase, c.bytes_seen, now);
            if close {
                tracing::debug!(pool = %name, phase = ?c.phase, seen = c.bytes_seen, ?ending, "front: connection closed for the stop");
            }
            !close
        });
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
        let (mut reading, mut idle) = (0u32, 0u32);
        for c in self.conns.values() {
            match c.phase {
                Phase::Reading { .. } => reading += 1,
                Phase::Idle { .. } => idle += 1,
            }
        }
        self.gauges.reading.set(reading);
        self.gauges.idle.set(idle);
    }
}
