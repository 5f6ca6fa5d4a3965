//! The worker loop: take the accept lock, wait for a connection, accept it, let go of the lock,
//! serve the connection, repeat — until the master asks the pool to stop.
//!
//! The listening socket is non-blocking: the lock holder tries `accept()` first (one syscall when
//! connections are queued) and only polls when the queue is empty, waking every
//! [`STOP_CHECK_INTERVAL`] to look at the stop flags. A graceful stop therefore still serves what
//! was queued: the holder keeps accepting until the queue is empty, then exits.

use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::context::{PoolContext, READ_TIMEOUT, STOP_CHECK_INTERVAL, WRITE_TIMEOUT};
use super::request::RequestHandler;
use crate::app::App;
use crate::fastcgi::{serve_connection, ConnectionError};
use crate::listen::{Peer, Stream};
use crate::scoreboard::WorkerState;

/// What the lock holder came back with.
enum Accepted {
    Connection(Stream, Peer),
    Stop,
}

/// Run worker number `worker` of the pool until the pool stops. Claims and releases the worker's
/// scoreboard slot.
pub fn run_worker(ctx: &PoolContext, worker: usize, app: Box<dyn App>) {
    let slot = ctx.slot(worker);
    slot.claim(std::process::id());
    let mut handler = RequestHandler::new(ctx, slot, app);
    loop {
        slot.set_state(WorkerState::Idle);
        let accepted = {
            let _turn = ctx.lock.acquire();
            wait_and_accept(ctx)
        };
        match accepted {
            Accepted::Connection(stream, peer) => serve_one(ctx, &mut handler, stream, peer),
            Accepted::Stop => break,
        }
    }
    slot.release();
}

/// Called with the accept lock held.
fn wait_and_accept(ctx: &PoolContext) -> Accepted {
    let mut last_error_log: Option<Instant> = None;
    loop {
        if ctx.quitting.load(Relaxed) {
            return Accepted::Stop;
        }
        match ctx.listener.accept() {
            Ok((stream, peer)) => return Accepted::Connection(stream, peer),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if ctx.stopping.load(Relaxed) {
                    // Graceful stop and nothing left in the queue.
                    return Accepted::Stop;
                }
                wait_readable(ctx, STOP_CHECK_INTERVAL);
            }
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => {
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS…: the connection stays queued; back off, say so once a
                // second at most.
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::error!(pool = %ctx.config.name, error = %e, "accept failed");
                    last_error_log = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn wait_readable(ctx: &PoolContext, timeout: Duration) {
    let mut fds = [PollFd::new(ctx.listener.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    // EINTR or a timeout both just mean "look at the flags and try again".
    let _ = poll(&mut fds, PollTimeout::from(ms));
}

fn serve_one(ctx: &PoolContext, handler: &mut RequestHandler<'_>, mut stream: Stream, peer: Peer) {
    ctx.board().accept_seq.fetch_add(1, Relaxed);
    if let Peer::Tcp(addr) = &peer {
        if !ctx.clients.allows(&addr.ip()) {
            ctx.board().refused_clients.fetch_add(1, Relaxed);
            tracing::warn!(pool = %ctx.config.name, peer = %addr, "connection refused: peer is not in allowed_clients");
            return;
        }
    }
    handler.slot().set_state(WorkerState::Reading);
    if let Err(e) = stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .and_then(|_| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
    {
        tracing::warn!(pool = %ctx.config.name, error = %e, "cannot set socket timeouts");
    }
    match serve_connection(&mut stream, &ctx.limits, handler) {
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
