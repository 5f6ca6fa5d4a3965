//! An executor: the code that runs complete requests. While free it takes a connection off the
//! pool's queue itself — nginx sends the whole request right after connecting, so the common
//! case is accept, one read, run, with no thread in between — and gives the front
//! (`crate::front`) only what holds no complete request yet: a connection whose request is not
//! all there, and a kept connection after its response. Requests the front completes come back
//! through the handoff queue (fastpm's queue, `queued requests`).
//!
//! DESIGN.md §8's rule: connections being read or idle never stop the pool accepting (they are
//! the front's, up to `front::policy::MAX_FRONT_CONNECTIONS`); every executor being busy does —
//! the backlog stays in the kernel queue, where `listen queue`, drops and queue wait see it, and
//! where another worker process with a free executor takes it. A free executor takes one
//! request at a time from either queue, alternating when both wait
//! ([`policy::first_look`]): fastpm's queue first, but after running one from it, one
//! non-blocking `accept()` first (taking fastpm's queue always first starved new connections
//! behind nginx's kept ones).
//!
//! An executor waits in its own epoll set: the listening socket (EPOLLEXCLUSIVE, so one
//! connection wakes one executor, as a blocking `accept()` did) and the handoff's job eventfd.
//! While it watches the socket it counts as holding the accept turn (`holds_lock`, beaten every
//! wake-up and at least every [`TICK`]): a frozen worker process is found and replaced as a
//! frozen lock holder was. The accept lock, if any, is held around one non-blocking `accept()`.
//! An executor that woke for a connection and could not take it (EMFILE…) leaves it queued
//! with no one else woken; every free executor therefore also looks once per tick.
//!
//! A connection accepted before any of its request arrived gets a short grace
//! (`front::policy::grace`): on TCP the accept can beat the web server's first write by
//! microseconds, and parking such connections would let a burst pull requests out of the
//! kernel queue into the front, where queue wait cannot see them.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::context::{PoolContext, READ_TIMEOUT, WRITE_TIMEOUT};
use super::io::TimedIo;
use super::request::{Connection, RequestHandler};
use super::serve::{after_accept_error, recycle, AfterAcceptError};
use crate::app::App;
use crate::config::AppKind;
use crate::fastcgi::encode_whole_response;
use crate::fastcgi::{respond, ConnectionError, Request};
use crate::front::intake::{admit, look, Look, SCRATCH};
use crate::front::policy::{self, AcceptView, FirstLook, ACCEPT_GRACE, TICK};
use crate::front::{FrontConn, Handoff};
use crate::hold::grip::GripFilter;
use crate::hold::longpoll::unavailable_answer;
use crate::hold::wire::{encode_to_master, Ask, HoldMsg, ToMaster};
use crate::scoreboard::{WorkerSlot, WorkerState};
use crate::sys::fdpass::send_with_fd;

/// How long an executor waits for room in the holder's queue before it answers 503 itself.
const HOLD_PATIENCE: Duration = Duration::from_secs(1);

const LISTENER: u64 = 0;
const JOBS: u64 = 1;

struct Executor<'a> {
    ctx: &'a PoolContext,
    slot: &'a WorkerSlot,
    handoff: &'a Handoff,
    handler: RequestHandler<'a>,
    /// Buffers kept across requests: serving one allocates nothing.
    out: Vec<u8>,
    scratch: Vec<u8>,
    replies: Vec<u8>,
    epoll: Epoll,
    /// The listening socket is in the epoll set.
    listening: bool,
    /// accept() failed for want of resources: not before this.
    backoff_until: Option<Instant>,
    last_error_log: Option<Instant>,
    /// Relayed apps (php, cgi): the GRIP filter their responses go through (reset for each).
    grip: Option<GripFilter>,
    /// A datagram for the master's holder, kept across requests.
    wire: Vec<u8>,
    /// What the last turn of the loop did, which orders this one's looks.
    last: Turn,
}

/// What an executor's turn did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Waited, or found nothing to take.
    Idle,
    /// Took a connection off the kernel queue. Next turn: fastpm's queue, then one more
    /// non-blocking `accept()` before `epoll_wait` — under load the next connection is usually
    /// queued already, and the wait (a system call per request) is saved.
    Accepted,
    /// Ran a request from fastpm's queue. Next turn: the kernel's queue first
    /// ([`policy::first_look`]).
    RanQueued,
}

/// An executor's epoll set (the job eventfd; the listener joins while it may accept), made
/// before the executor claims its slot.
pub fn executor_epoll(handoff: &Handoff) -> std::io::Result<Epoll> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(
        handoff.jobs_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, JOBS),
    )?;
    Ok(epoll)
}

/// Run the executor in scoreboard slot `worker` (claimed by the caller) until its front has
/// left and nothing is queued; then release the slot.
pub fn execute(
    ctx: &PoolContext,
    worker: usize,
    app: Box<dyn App>,
    handoff: &Handoff,
    epoll: Epoll,
) {
    let slot = ctx.slot(worker);
    Executor {
        ctx,
        slot,
        handoff,
        handler: RequestHandler::new(ctx, slot, app),
        out: Vec::new(),
        scratch: vec![0; SCRATCH],
        replies: Vec::new(),
        epoll,
        listening: false,
        backoff_until: None,
        last_error_log: None,
        grip: matches!(ctx.config.app.kind, AppKind::Php | AppKind::Cgi).then(GripFilter::new),
        wire: Vec::new(),
        last: Turn::Idle,
    }
    .run();
    slot.holds_lock.store(0, Relaxed);
    slot.release();
}

impl Executor<'_> {
    fn run(&mut self) {
        let mut events = [EpollEvent::empty(); 4];
        loop {
            let accept = self.may_accept();
            let last = std::mem::replace(&mut self.last, Turn::Idle);
            if policy::first_look(accept, last == Turn::RanQueued) == FirstLook::Kernel
                && self.accept_one()
            {
                self.last = Turn::Accepted;
                continue;
            }
            if let Some(job) = self.handoff.try_job() {
                let waited = job.ready_at.elapsed();
                self.run_request(job.conn, job.request, waited);
                self.last = Turn::RanQueued;
                continue;
            }
            if self.handoff.front_gone() {
                return;
            }
            self.watch_listener(accept);
            if accept && self.ctx.stopping.load(Relaxed) {
                // Draining: take what is queued without waiting for readiness; the first
                // EAGAIN says the queue is empty.
                self.accept_one();
                continue;
            }
            if last == Turn::Accepted && accept && self.accept_one() {
                self.last = Turn::Accepted;
                continue;
            }
            let timeout = EpollTimeout::try_from(TICK).unwrap_or(EpollTimeout::NONE);
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(error) => {
                    tracing::error!(pool = %self.ctx.config.name, %error, "executor: epoll_wait failed");
                    std::thread::sleep(TICK);
                    0
                }
            };
            self.slot.beat();
            // A tick without events: look at the socket anyway (see the module comment).
            let mut connection_ready = n == 0;
            for event in &events[..n] {
                match event.data() {
                    JOBS => self.handoff.clear_jobs_ready(),
                    _ => connection_ready = true,
                }
            }
            if accept && connection_ready && self.accept_one() {
                self.last = Turn::Accepted;
            }
        }
    }

    fn may_accept(&self) -> bool {
        policy::may_accept(AcceptView {
            held: self.handoff.held(),
            drained: self.handoff.drained(),
            retiring: self.ctx.quitting.load(Relaxed)
                || self.handoff.retiring()
                || self.ctx.retiring.load(Relaxed),
        }) && self.backoff_until.is_none_or(|t| Instant::now() >= t)
    }

    /// Put the listening socket in or out of the epoll set.
    fn watch_listener(&mut self, want: bool) {
        if want == self.listening {
            return;
        }
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
                self.slot.holds_lock.store(u32::from(want), Relaxed);
                self.slot.beat();
            }
            Err(error) => {
                tracing::error!(pool = %self.ctx.config.name, %error, "executor: cannot watch the listening socket");
            }
        }
    }

    /// Take one connection off the queue and deal with it: run its request, or give it to the
    /// front. Whether a connection was taken (false: the queue was empty, or accept failed).
    fn accept_one(&mut self) -> bool {
        let accepted = {
            // Held around one non-blocking accept(), never while waiting.
            let _turn = self.ctx.lock.acquire();
            self.ctx.listener.accept()
        };
        let error = match accepted {
            Ok((stream, peer)) => {
                let Some(conn) = admit(self.ctx, stream, peer) else {
                    return true;
                };
                let mut seen = self.look(conn);
                if let Look::Park(conn) = seen {
                    seen = if policy::grace(conn.nothing_read(), self.handoff.held())
                        && readable_within(&conn, ACCEPT_GRACE)
                    {
                        self.look(conn)
                    } else {
                        Look::Park(conn)
                    };
                }
                match seen {
                    Look::Run(conn, request) => self.run_request(conn, request, Duration::ZERO),
                    Look::Park(conn) => self.give(conn),
                    Look::Gone => {}
                }
                return true;
            }
            Err(error) => error,
        };
        match after_accept_error(&error) {
            AfterAcceptError::CheckStop => {
                if self.ctx.stopping.load(Relaxed) {
                    self.handoff.set_drained();
                }
            }
            AfterAcceptError::Retry => {}
            AfterAcceptError::BackOff(delay) => {
                // The lock is released: the other workers go on accepting meanwhile.
                self.ctx.metrics.accept_errors.increment(1);
                if self
                    .last_error_log
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
                {
                    tracing::error!(pool = %self.ctx.config.name, %error, "accept failed; backing off without the accept lock");
                    self.last_error_log = Some(Instant::now());
                }
                self.backoff_until = Some(Instant::now() + delay);
                if self.ctx.stopping.load(Relaxed) {
                    // Draining needs accept(), which keeps failing here: the others drain.
                    self.handoff.set_drained();
                }
            }
        }
        false
    }

    fn look(&mut self, conn: FrontConn) -> Look {
        look(
            self.ctx,
            conn,
            &mut self.scratch,
            &mut self.replies,
            Instant::now(),
            true,
        )
    }

    /// Run a complete request (that waited `in_front` in the front's queue); a kept connection
    /// then goes to the front.
    fn run_request(&mut self, conn: FrontConn, request: Request, in_front: Duration) {
        let kept = self.serve(conn, request, in_front);
        let recycling =
            recycle(self.ctx, self.slot.requests.load(Relaxed)) || self.ctx.retiring.load(Relaxed);
        if recycling && !self.handoff.retiring() {
            tracing::debug!(pool = %self.ctx.config.name, "max_requests reached; the master starts a fresh worker");
            self.handoff.retire();
        }
        self.slot.set_state(WorkerState::Idle);
        // Quitting: a kept connection is closed here, at once. Recycling: the front passes it
        // on to another worker (through the master) instead of closing it under nginx's feet.
        if let Some(conn) = kept {
            if !self.ctx.quitting.load(Relaxed) && (!recycling || self.ctx.hold_link.is_some()) {
                self.give(conn);
            }
        }
    }

    /// To the front. If the front has left (this worker retires and the front had nothing
    /// more to hold), a kept connection is passed on to another worker through the master,
    /// like the front passes its own: closed only when that fails.
    fn give(&self, conn: FrontConn) {
        if let Err(mut conn) = self.handoff.give(conn) {
            // Only a kept connection between requests: its assembler holds no partial request.
            if !(conn.is_kept() && crate::front::pass::pass_on(self.ctx, &mut conn)) {
                tracing::debug!(pool = %self.ctx.config.name, "connection closed: the front has left");
            }
        }
    }

    /// Run one complete request and write its response; the connection when it is kept.
    fn serve(
        &mut self,
        mut conn: FrontConn,
        request: Request,
        in_front: Duration,
    ) -> Option<FrontConn> {
        let ctx = self.ctx;
        let _armed = super::watchdog::arm(&conn.stream);
        // Queue wait, recorded for every request and judged by the overload policy: a
        // connection's first request waited in the kernel's queue and then in fastpm's own (a
        // complete request waiting for an executor); a kept connection's later request only in
        // fastpm's own.
        let in_front_us = in_front.as_micros() as u64;
        let queue_wait_us = if conn.is_kept() {
            Some(in_front_us)
        } else {
            conn.queue_wait_us.take().map(|us| us + in_front_us)
        };
        ctx.metrics.record_queue_wait(queue_wait_us);
        // The request's bytes may still be in the socket (`FrontConn::peeked`); asking it
        // whether the client left must see only what came after them.
        if crate::overload::policy::ask_if_client_gone(queue_wait_us.map(Duration::from_micros)) {
            let _ = conn.drain_peeked(&mut self.scratch);
        }
        if let Some(grip) = &mut self.grip {
            grip.reset();
        }
        let result = {
            let mut io = TimedIo::new(&conn.stream, READ_TIMEOUT, WRITE_TIMEOUT).beating(self.slot);
            let mut connection = Connection::new(&mut self.handler, &conn.stream, queue_wait_us);
            respond(
                &mut io,
                &mut connection,
                &request,
                &mut self.out,
                self.grip.as_mut(),
            )
        };
        self.out.clear();
        // Answered: the request's bytes can leave the socket now without waking the client
        // for nothing (a failure here means the client is gone, which the next read sees).
        let _ = conn.drain_peeked(&mut self.scratch);
        let (request_id, keep_conn) = (request.request_id, request.keep_conn);
        conn.recycle(request);
        match result {
            Ok(Some(ask)) => {
                self.hand_to_holder(conn, request_id, keep_conn, ask);
                None
            }
            Ok(None) => conn.is_kept().then_some(conn),
            Err(ConnectionError::Io(e)) => {
                // Resets and broken pipes end one connection; they are the client's business,
                // not an operator's.
                tracing::debug!(pool = %ctx.config.name, peer = ?conn.peer, error = %e, "connection ended");
                None
            }
            Err(e) => {
                ctx.metrics.protocol_errors.increment(1);
                tracing::warn!(pool = %ctx.config.name, peer = ?conn.peer, error = %e, "closed connection");
                None
            }
        }
    }
}

impl Executor<'_> {
    /// Give a request that is to be held to the master's holder (DESIGN §8): the connection's
    /// descriptor and what the answer needs, in one datagram. Our copy of the descriptor
    /// closes when `conn` drops; the master's stays open. When the holder cannot take it
    /// (no link, its queue full for [`HOLD_PATIENCE`], a body too big for the datagram) the
    /// client gets 503 from here, at once.
    fn hand_to_holder(&mut self, mut conn: FrontConn, request_id: u16, keep_conn: bool, ask: Ask) {
        let msg = ToMaster::Hold(HoldMsg {
            request_id,
            keep_conn,
            pending: conn.take_pending(),
            ask,
        });
        encode_to_master(&msg, &mut self.wire);
        let sent = match &self.ctx.hold_link {
            Some(link) => {
                send_with_fd(link.as_fd(), &self.wire, conn.stream.as_fd(), HOLD_PATIENCE)
            }
            None => Err(std::io::Error::other("no holder in this process")),
        };
        if let Err(error) = sent {
            tracing::warn!(pool = %self.ctx.config.name, %error, "cannot hand a held request to the master; answered 503");
            self.out.clear();
            encode_whole_response(&mut self.out, request_id, &unavailable_answer(1));
            let mut io = TimedIo::new(&conn.stream, READ_TIMEOUT, WRITE_TIMEOUT);
            let _ = std::io::Write::write_all(&mut io, &self.out);
            self.out.clear();
        }
    }
}

/// Whether `conn` has bytes (or an end) to read within `wait`.
fn readable_within(conn: &FrontConn, wait: Duration) -> bool {
    let mut fds = [PollFd::new(conn.stream.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::ZERO);
    matches!(poll(&mut fds, timeout), Ok(n) if n > 0)
}
