//! How a pool's workers are put together: a worker process is one executor (its main thread,
//! which built the app) and one front thread; a thread pool is N executor threads and one
//! front thread in the master (`worker::executor`, `crate::front`). A worker process due for
//! recycling (`max_requests`) asks its front to stop, finishes what is queued, and leaves;
//! thread workers never recycle ([`recycle`]).
//!
//! Also here: what an executor does after `accept()` failed ([`after_accept_error`]). One that
//! fails for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) leaves the
//! connection queued; the executor has already let go of the accept lock (it holds it around
//! one non-blocking `accept()` only), counts it (`accept errors`) and waits
//! [`ACCEPT_BACKOFF`] before it tries again, so another worker takes the connection.

use std::io::ErrorKind;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::epoll::Epoll;

use super::context::PoolContext;
use super::executor::{execute, executor_epoll};
use crate::app::App;
use crate::config::WorkerKind;
use crate::front::{front_epoll, run_front, Handoff};
use crate::master::pm::should_recycle;
use crate::status::recorder::FrontGauges;

/// How long a worker whose accept() failed for want of resources waits before it tries again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a worker does after `accept()` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterAcceptError {
    /// Nothing queued (EAGAIN; another worker may have taken it): wait for the next readiness.
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

/// Run worker process number `worker` of the pool until it stops: the executor on this thread
/// (which built the app: a php-cgi child is tied to it), the pool's front on a second one.
pub fn run_worker(ctx: &PoolContext, worker: usize, app: Box<dyn App>) {
    // Every descriptor the worker needs besides connections, before it claims its slot.
    // The front publishes its gauges in the worker's own slot (the handoff its queue's length).
    let gauges = FrontGauges::register(&ctx.scoreboard, ctx.index, worker);
    let made = Handoff::new(gauges.queued.clone()).and_then(|handoff| {
        let front = front_epoll(&handoff)?;
        let executor = executor_epoll(&handoff)?;
        Ok((handoff, front, executor))
    });
    let (handoff, front_epoll, executor_epoll) = match made {
        Ok(made) => made,
        Err(error) => {
            tracing::error!(pool = %ctx.config.name, %error, "worker: cannot create its epoll sets");
            return;
        }
    };
    ctx.slot(worker).claim(std::process::id());
    std::thread::scope(|scope| {
        let front = std::thread::Builder::new()
            .name(format!("{}-front", ctx.config.name))
            .spawn_scoped(scope, || {
                crate::sys::fork::keep_signals_off_this_thread();
                front_thread(ctx, &handoff, gauges, front_epoll)
            });
        if let Err(error) = front {
            tracing::error!(pool = %ctx.config.name, %error, "worker: cannot start the front thread");
            handoff.close();
        }
        execute(ctx, worker, app, &handoff, executor_epoll);
    });
}

/// The front of a pool in this process; logs why it ended if not asked to.
fn front_thread(ctx: &PoolContext, handoff: &Handoff, gauges: FrontGauges, epoll: Epoll) {
    if let Err(error) = run_front(ctx, handoff, gauges, epoll) {
        tracing::error!(pool = %ctx.config.name, %error, "front failed; its worker stops");
    }
}

/// A worker process leaves after `max_requests` (the master replaces it); a thread would not be
/// replaced, so thread workers never recycle.
pub(super) fn recycle(ctx: &PoolContext, served: u64) -> bool {
    ctx.config.workers == WorkerKind::Process && should_recycle(ctx.config.max_requests, served)
}

/// A pool's front and executor threads.
pub struct WorkerThreads {
    handles: Vec<JoinHandle<()>>,
}

/// Start a thread pool: its front and `max_children` executor threads; `make_app` builds each
/// executor's own app. The front publishes its gauges in slot 0.
pub fn spawn_thread_workers(
    ctx: Arc<PoolContext>,
    make_app: &dyn Fn() -> Box<dyn App>,
) -> std::io::Result<WorkerThreads> {
    let count = ctx.config.max_children as usize;
    let gauges = FrontGauges::register(&ctx.scoreboard, ctx.index, 0);
    let handoff = Arc::new(Handoff::new(gauges.queued.clone())?);
    let front_epoll = front_epoll(&handoff)?;
    let mut handles = Vec::with_capacity(count + 1);
    for worker in 0..count {
        let ctx = Arc::clone(&ctx);
        let handoff = Arc::clone(&handoff);
        let epoll = executor_epoll(&handoff)?;
        let app = make_app();
        let handle = std::thread::Builder::new()
            .name(format!("{}-{worker}", ctx.config.name))
            .spawn(move || {
                ctx.slot(worker).claim(std::process::id());
                execute(&ctx, worker, app, &handoff, epoll)
            })?;
        handles.push(handle);
    }
    let front = std::thread::Builder::new()
        .name(format!("{}-front", ctx.config.name))
        .spawn(move || front_thread(&ctx, &handoff, gauges, front_epoll))?;
    handles.push(front);
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
            // Nothing queued.
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
