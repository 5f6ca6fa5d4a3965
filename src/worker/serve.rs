//! The worker loop: take the accept lock, wait for a connection, accept it, let go of the lock,
//! serve the connection, repeat — until the master asks the pool to stop.
//!
//! The listening socket is blocking with a receive timeout of [`STOP_CHECK_INTERVAL`]
//! (`SO_RCVTIMEO` bounds `accept()` too): one syscall per connection, and a worker that waits
//! looks at the stop flags at least that often. A graceful stop therefore still serves what was
//! queued: workers keep accepting until `accept()` finds the queue empty, then exit.
//!
//! A kept connection (FCGI_KEEP_CONN) is served until the web server closes it — except that
//! while it sits idle between requests, a connection left waiting in the queue makes the worker
//! give it up (`worker::io`), so idle kept connections never hold back queued ones.
//!
//! An `accept()` that fails for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM)
//! leaves the connection queued; the worker lets go of the lock *before* it backs off
//! ([`after_accept_error`]), so another worker takes the connection, and counts it
//! (`accept errors`). Sleeping with the lock held would stall every worker of the pool.
//!
//! Right after `accept()` the worker takes the connection's sequence number and looks up how
//! long it waited in the kernel queue (`overload::arrival`); the wait goes to the pool's
//! histogram and to the overload policy of the connection's first request.

use std::cell::Cell;
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::context::{PoolContext, READ_TIMEOUT, WRITE_TIMEOUT};
use super::io::{TimedIo, YieldTo};
use super::request::{Connection, RequestHandler};
use crate::app::App;
use crate::config::WorkerKind;
use crate::fastcgi::{serve_connection_with, ConnectionBuffers, ConnectionError};
use crate::listen::{Peer, Stream};
use crate::master::pm::should_recycle;
use crate::overload::monotonic_us;
use crate::scoreboard::{WorkerSlot, WorkerState};

/// What the lock holder came back with.
enum Accepted {
    Connection(Stream, Peer),
    Stop,
    /// accept() failed in a way that waiting may cure (EMFILE, ENFILE, ENOBUFS, ENOMEM): the
    /// connection stays queued for another worker; this one waits `delay` after letting go
    /// of the lock.
    BackOff {
        error: std::io::Error,
        delay: Duration,
    },
}

/// How long a worker whose accept() failed for want of resources waits before it tries again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a worker does after `accept()` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterAcceptError {
    /// The receive timeout passed with nothing queued: look at the stop flags, wait again.
    CheckStop,
    /// A transient failure of this one connection (a signal; the client left; an error the
    /// kernel passes on from the new socket): accept again at once.
    Retry,
    /// Out of descriptors or memory: nothing this worker can accept now. Let go of the accept
    /// lock, count it, wait this long, try again — holding the lock while waiting would stall
    /// every other worker of the pool, which may well have descriptors to spare.
    BackOff(Duration),
}

/// Pure: what to do after `accept()` failed with `error`.
pub fn after_accept_error(error: &std::io::Error) -> AfterAcceptError {
    match error.kind() {
        ErrorKind::WouldBlock => return AfterAcceptError::CheckStop,
        ErrorKind::Interrupted | ErrorKind::ConnectionAborted => return AfterAcceptError::Retry,
        _ => {}
    }
    // accept(2): "Linux accept() passes already-pending network errors on the new socket as
    // an error code from accept()"; retry on those as on EAGAIN.
    let pending_network_error = [
        libc::ENETDOWN,
        libc::EPROTO,
        libc::ENOPROTOOPT,
        libc::EHOSTDOWN,
        libc::ENONET,
        libc::EHOSTUNREACH,
        libc::EOPNOTSUPP,
        libc::ENETUNREACH,
    ];
    match error.raw_os_error() {
        Some(errno) if pending_network_error.contains(&errno) => AfterAcceptError::Retry,
        _ => AfterAcceptError::BackOff(ACCEPT_BACKOFF),
    }
}

/// Run worker number `worker` of the pool until the pool stops. Claims and releases the worker's
/// scoreboard slot.
pub fn run_worker(ctx: &PoolContext, worker: usize, app: Box<dyn App>) {
    let slot = ctx.slot(worker);
    slot.claim(std::process::id());
    let mut handler = RequestHandler::new(ctx, slot, app);
    // Read and write buffers kept across connections: serving one allocates nothing.
    let mut buffers = ConnectionBuffers::new();
    let mut last_error_log: Option<Instant> = None;
    loop {
        slot.set_state(WorkerState::Idle);
        let accepted = {
            let _turn = ctx.lock.acquire();
            slot.holds_lock.store(1, Relaxed);
            let accepted = wait_and_accept(ctx, slot);
            slot.holds_lock.store(0, Relaxed);
            accepted
        };
        match accepted {
            Accepted::Connection(stream, peer) => {
                serve_one(ctx, &mut handler, &mut buffers, stream, peer)
            }
            Accepted::Stop => break,
            Accepted::BackOff { error, delay } => {
                // The lock is released: the other workers go on accepting meanwhile.
                ctx.board().accept_errors.fetch_add(1, Relaxed);
                // Said once a second at most.
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::error!(pool = %ctx.config.name, %error, "accept failed; backing off without the accept lock");
                    last_error_log = Some(Instant::now());
                }
                std::thread::sleep(delay);
                if ctx.stopping.load(Relaxed) {
                    // Draining needs accept(), which keeps failing here: the others drain.
                    break;
                }
                continue;
            }
        }
        if recycle(ctx, slot.requests.load(Relaxed)) {
            tracing::debug!(pool = %ctx.config.name, "max_requests reached; the master starts a fresh worker");
            break;
        }
    }
    slot.release();
}

/// The master asked the pool to stop (graceful or not): an idle kept connection is given up.
pub(super) fn stop_asked(ctx: &PoolContext) -> bool {
    ctx.stopping.load(Relaxed) || ctx.quitting.load(Relaxed)
}

/// A worker process leaves after `max_requests` (the master replaces it); a thread would not be
/// replaced, so thread workers never recycle.
pub(super) fn recycle(ctx: &PoolContext, served: u64) -> bool {
    ctx.config.workers == WorkerKind::Process && should_recycle(ctx.config.max_requests, served)
}

/// Called with the accept lock held; returns as soon as there is something to do without it.
fn wait_and_accept(ctx: &PoolContext, slot: &WorkerSlot) -> Accepted {
    loop {
        slot.beat();
        if ctx.quitting.load(Relaxed) {
            return Accepted::Stop;
        }
        let error = match ctx.listener.accept() {
            Ok((stream, peer)) => return Accepted::Connection(stream, peer),
            Err(error) => error,
        };
        match after_accept_error(&error) {
            AfterAcceptError::CheckStop => {
                if ctx.stopping.load(Relaxed) {
                    return Accepted::Stop;
                }
            }
            AfterAcceptError::Retry => {}
            AfterAcceptError::BackOff(delay) => return Accepted::BackOff { error, delay },
        }
    }
}

fn serve_one(
    ctx: &PoolContext,
    handler: &mut RequestHandler<'_>,
    buffers: &mut ConnectionBuffers,
    stream: Stream,
    peer: Peer,
) {
    let accepted_at = monotonic_us();
    // This connection is the k-th taken off the queue (DESIGN.md §4): look up when it arrived.
    let k = ctx.board().accept_seq.fetch_add(1, AcqRel) + 1;
    let queue_wait_us = ctx.board().arrivals.wait_us(k, accepted_at);
    ctx.board().queue_wait.record(queue_wait_us);
    if let Peer::Tcp(addr) = &peer {
        if !ctx.clients.allows(&addr.ip()) {
            ctx.board().refused_clients.fetch_add(1, Relaxed);
            tracing::warn!(pool = %ctx.config.name, peer = %addr, "connection refused: peer is not in allowed_clients");
            return;
        }
        // The kernel's own measure of the same wait: one getsockopt per served TCP connection.
        if let Ok(ms) = crate::sys::sockopt::tcp_last_data_recv_ms(stream.as_fd()) {
            ctx.board()
                .queue_wait_tcp_info
                .record(Some(u64::from(ms) * 1000));
        }
    }
    handler.slot().set_state(WorkerState::Reading);
    let _armed = super::watchdog::arm(&stream);
    let (idle, yielded) = (Cell::new(false), Cell::new(false));
    let give_up = || stop_asked(ctx);
    let mut io = TimedIo::new(&stream, READ_TIMEOUT, WRITE_TIMEOUT)
        .yielding_to(YieldTo {
            listener: ctx.listener.as_fd(),
            idle: &idle,
            yielded: &yielded,
            give_up: &give_up,
        })
        .beating(handler.slot());
    let mut connection = Connection::new(handler, &stream, queue_wait_us, &idle);
    match serve_connection_with(&mut io, &ctx.limits, &mut connection, buffers) {
        Ok(_) if yielded.get() => {
            tracing::debug!(pool = %ctx.config.name, peer = ?peer, "idle kept connection closed: connections are waiting in the queue");
        }
        Ok(_) => {}
        Err(ConnectionError::Io(e)) => {
            // Timeouts, resets and broken pipes end one connection; they are the client's
            // business, not an operator's.
            tracing::debug!(pool = %ctx.config.name, peer = ?peer, error = %e, "connection ended");
        }
        Err(e) => {
            ctx.board().protocol_errors.fetch_add(1, Relaxed);
            tracing::warn!(pool = %ctx.config.name, peer = ?peer, error = %e, "closed connection");
        }
    }
}

/// A pool's worker threads.
pub struct WorkerThreads {
    handles: Vec<JoinHandle<()>>,
}

/// Start `max_children` worker threads for a pool; `make_app` builds each worker's own app.
pub fn spawn_thread_workers(
    ctx: Arc<PoolContext>,
    make_app: &dyn Fn() -> Box<dyn App>,
) -> std::io::Result<WorkerThreads> {
    let count = ctx.config.max_children as usize;
    let mut handles = Vec::with_capacity(count);
    for worker in 0..count {
        let ctx = Arc::clone(&ctx);
        let app = make_app();
        let handle = std::thread::Builder::new()
            .name(format!("{}-{worker}", ctx.config.name))
            .spawn(move || run_worker(&ctx, worker, app))?;
        handles.push(handle);
    }
    Ok(WorkerThreads { handles })
}

impl WorkerThreads {
    /// Wait for every thread to finish, until `deadline`. Returns how many are still running.
    pub fn join_until(self, deadline: Instant) -> usize {
        let mut left = Vec::new();
        for handle in self.handles {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                left.push(handle);
            }
        }
        left.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_accept_error_table() {
        use std::io::Error;
        let os = Error::from_raw_os_error;
        let back_off = AfterAcceptError::BackOff(ACCEPT_BACKOFF);
        let table = [
            // SO_RCVTIMEO passed.
            (os(libc::EAGAIN), AfterAcceptError::CheckStop),
            (os(libc::EINTR), AfterAcceptError::Retry),
            (os(libc::ECONNABORTED), AfterAcceptError::Retry),
            (os(libc::EPROTO), AfterAcceptError::Retry),
            (os(libc::ENETUNREACH), AfterAcceptError::Retry),
            // Out of resources: let go of the lock, wait, try again.
            (os(libc::EMFILE), back_off),
            (os(libc::ENFILE), back_off),
            (os(libc::ENOBUFS), back_off),
            (os(libc::ENOMEM), back_off),
            // Anything unforeseen (EBADF, EINVAL…) is backed off too, never spun on.
            (os(libc::EBADF), back_off),
            (os(libc::EINVAL), back_off),
        ];
        for (error, want) in table {
            assert_eq!(after_accept_error(&error), want, "{error}");
        }
    }
}
