//! Between a front and its executors. Complete requests go to the executors (a queue behind a
//! mutex, and an eventfd in every executor's epoll set); connections without a complete
//! request go to the front (a list, and an eventfd in the front's epoll set): ones an executor
//! just accepted whose request is not all there yet, and kept connections after their
//! response. Plus the few facts both sides look at: how many connections the front holds (the
//! accept cap), whether a draining pool's queue was found empty, whether a worker process is
//! due for recycling, and whether the front has left.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use metrics::Gauge;
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::conn::FrontConn;
use crate::fastcgi::Request;

/// A complete request and its connection, for an executor.
pub struct Job {
    pub conn: FrontConn,
    pub request: Request,
    /// When the front completed it: the time until an executor takes it is queue wait too
    /// (fastpm's own queue, after the kernel's).
    pub ready_at: Instant,
}

struct ToFront {
    conns: Vec<FrontConn>,
    /// The front has left: a connection given now has nowhere to go.
    front_gone: bool,
}

/// One front and its executors.
pub struct Handoff {
    jobs: Mutex<VecDeque<Job>>,
    /// `queued requests`: the queue's length, set under the queue's lock on every push and
    /// take (so it is exact, not sampled), in the front's scoreboard slot.
    queued: Gauge,
    /// Written for each job (and when the front leaves): wakes the executors.
    jobs_ready: EventFd,
    to_front: Mutex<ToFront>,
    /// Written when a connection is given to the front (or it should look at the flags).
    front_wake: EventFd,
    /// Connections the front holds, as it last said: executors stop accepting at the cap.
    held: AtomicUsize,
    /// Draining: an executor found the kernel queue empty; nobody accepts any more.
    drained: AtomicBool,
    /// A worker process reached `max_requests`: accept nothing more, close what is idle.
    retiring: AtomicBool,
    front_gone: AtomicBool,
}

/// A poisoned lock only means a thread panicked holding it; the data is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn eventfd() -> std::io::Result<EventFd> {
    Ok(EventFd::from_flags(
        EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
    )?)
}

impl Handoff {
    /// `queued`: where the queue's length is published (the front's `FrontGauges::queued`).
    pub fn new(queued: Gauge) -> std::io::Result<Self> {
        Ok(Self {
            jobs: Mutex::new(VecDeque::new()),
            queued,
            jobs_ready: eventfd()?,
            to_front: Mutex::new(ToFront {
                conns: Vec::new(),
                front_gone: false,
            }),
            front_wake: eventfd()?,
            held: AtomicUsize::new(0),
            drained: AtomicBool::new(false),
            retiring: AtomicBool::new(false),
            front_gone: AtomicBool::new(false),
        })
    }

    // --- complete requests, front → executors ---

    /// Publish the length of `jobs` (its lock held by the caller).
    fn publish_len(&self, jobs: &VecDeque<Job>) {
        self.queued.set(jobs.len() as f64);
    }

    /// Queue a complete request for the next free executor.
    pub fn push(&self, job: Job) {
        {
            let mut jobs = lock(&self.jobs);
            jobs.push_back(job);
            self.publish_len(&jobs);
        }
        let _ = self.jobs_ready.write(1);
    }

    /// The next queued request, if any. When more are queued, the eventfd is set again: an
    /// executor that reset it to take this one must not leave the others asleep.
    pub fn try_job(&self) -> Option<Job> {
        let mut jobs = lock(&self.jobs);
        let job = jobs.pop_front();
        if job.is_some() {
            self.publish_len(&jobs);
            if !jobs.is_empty() {
                let _ = self.jobs_ready.write(1);
            }
        }
        job
    }

    /// What an executor's epoll set watches for jobs.
    pub fn jobs_fd(&self) -> BorrowedFd<'_> {
        self.jobs_ready.as_fd()
    }

    /// An executor saw `jobs_fd` readable: reset it (it then looks at the queue again, so a
    /// job pushed in between is not missed).
    pub fn clear_jobs_ready(&self) {
        let _ = self.jobs_ready.read();
    }

    // --- connections without a complete request, executors → front ---

    /// Give `conn` to the front; back as `Err` when the front has left (the caller passes it
    /// on or closes it).
    pub fn give(&self, conn: FrontConn) -> Result<(), Box<FrontConn>> {
        {
            let mut to_front = lock(&self.to_front);
            if to_front.front_gone {
                return Err(Box::new(conn));
            }
            to_front.conns.push(conn);
        }
        let _ = self.front_wake.write(1);
        Ok(())
    }

    /// Connections given since the last call.
    pub fn take_given(&self, into: &mut Vec<FrontConn>) {
        let _ = self.front_wake.read();
        into.append(&mut lock(&self.to_front).conns);
    }

    pub fn front_wake_fd(&self) -> BorrowedFd<'_> {
        self.front_wake.as_fd()
    }

    // --- shared facts ---

    pub fn set_held(&self, held: usize) {
        self.held.store(held, SeqCst);
    }

    pub fn held(&self) -> usize {
        self.held.load(SeqCst)
    }

    pub fn set_drained(&self) {
        if !self.drained.swap(true, SeqCst) {
            let _ = self.front_wake.write(1);
        }
    }

    pub fn drained(&self) -> bool {
        self.drained.load(SeqCst)
    }

    /// A worker process reached `max_requests`: the front closes what it holds and leaves.
    pub fn retire(&self) {
        self.retiring.store(true, SeqCst);
        let _ = self.front_wake.write(1);
    }

    pub fn retiring(&self) -> bool {
        self.retiring.load(SeqCst)
    }

    /// The front leaves: connections given from now on are refused, and executors leave once
    /// the queue is empty. Returns what was given since the front last looked (the caller
    /// passes it on or closes it).
    pub fn close(&self) -> Vec<FrontConn> {
        let stranded = {
            let mut to_front = lock(&self.to_front);
            to_front.front_gone = true;
            std::mem::take(&mut to_front.conns)
        };
        self.front_gone.store(true, SeqCst);
        let _ = self.jobs_ready.write(1);
        stranded
    }

    pub fn front_gone(&self) -> bool {
        self.front_gone.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::Limits;
    use crate::listen::{Peer, Stream};
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    fn conn() -> FrontConn {
        let (ours, _) = UnixStream::pair().unwrap();
        FrontConn::new(
            Stream::Unix(ours),
            Peer::Unix,
            &Limits::default(),
            None,
            Instant::now(),
        )
    }

    fn job() -> Job {
        let request = Request {
            request_id: 1,
            role: crate::fastcgi::Role::Responder,
            keep_conn: false,
            params: Default::default(),
            stdin: Vec::new(),
        };
        Job {
            conn: conn(),
            request,
            ready_at: Instant::now(),
        }
    }

    /// Whether the executors' eventfd is set (reading resets it).
    fn jobs_ready(h: &Handoff) -> bool {
        h.jobs_ready.read().is_ok()
    }

    #[test]
    fn taking_one_of_several_jobs_wakes_the_other_executors_again() {
        let h = Handoff::new(Gauge::noop()).unwrap();
        h.push(job());
        h.push(job());
        h.clear_jobs_ready();
        assert!(h.try_job().is_some());
        assert!(jobs_ready(&h), "one job is still queued");
        assert!(h.try_job().is_some());
        assert!(!jobs_ready(&h), "nothing queued");
        assert!(h.try_job().is_none());
    }

    #[test]
    fn queued_requests_follow_every_push_and_take() {
        use crate::scoreboard::Scoreboard;
        use crate::status::recorder::FrontGauges;
        use std::sync::Arc;
        let scoreboard = Arc::new(Scoreboard::create(&[3]).unwrap());
        let h = Handoff::new(FrontGauges::register(&scoreboard, 0, 2).queued).unwrap();
        let queued = || scoreboard.slots(0)[2].front_queued.load(SeqCst);
        h.push(job());
        h.push(job());
        assert_eq!(queued(), 2);
        assert!(h.try_job().is_some());
        assert_eq!(queued(), 1);
        assert!(h.try_job().is_some());
        assert!(h.try_job().is_none());
        assert_eq!(queued(), 0);
        assert_eq!(
            scoreboard.slots(0)[1].front_queued.load(SeqCst),
            0,
            "own slot only"
        );
    }

    #[test]
    fn after_the_front_left_connections_come_back_and_executors_wake() {
        let h = Handoff::new(Gauge::noop()).unwrap();
        assert!(h.give(conn()).is_ok());
        let mut given = Vec::new();
        h.take_given(&mut given);
        assert_eq!(given.len(), 1);
        h.close();
        assert!(h.front_gone());
        assert!(h.give(conn()).is_err(), "closed: nowhere to go");
        assert!(jobs_ready(&h), "waiting executors look at front_gone");
    }
}
