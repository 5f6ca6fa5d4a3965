//! Between a front and its executors: complete requests go one way (a queue behind a mutex
//! and a condition variable the executors sleep on), kept connections come back the other (a
//! list plus an eventfd the front's epoll watches), and one counter says how many requests the
//! executors have — running or queued — which is what the front's accept rule looks at
//! (`policy::may_accept`).
//!
//! Wake-ups cost a syscall, so the executors write the eventfd only when the front needs it:
//! a kept connection came back, the front is waiting for a free executor (`front_waits`), or a
//! worker process is due for recycling.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard};

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::conn::FrontConn;
use crate::fastcgi::Request;

/// A complete request and its connection, for an executor.
pub struct Job {
    pub conn: FrontConn,
    pub request: Request,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// The front is gone: executors finish the queue, then leave.
    closed: bool,
}

struct Returned {
    conns: Vec<FrontConn>,
    /// The front is gone: a kept connection has nowhere to go and is closed.
    front_gone: bool,
}

/// One front and its executors.
pub struct Handoff {
    executors: usize,
    queue: Mutex<Queue>,
    job_ready: Condvar,
    /// Requests handed to executors and not finished (queued included).
    in_flight: AtomicUsize,
    /// The front is waiting for an executor to become free.
    front_waits: AtomicBool,
    /// A worker process reached `max_requests`: the front stops, then the executor.
    retiring: AtomicBool,
    returned: Mutex<Returned>,
    wake: EventFd,
}

/// A poisoned lock only means another executor panicked; the data is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Handoff {
    pub fn new(executors: usize) -> std::io::Result<Self> {
        let wake = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(Self {
            executors: executors.max(1),
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            job_ready: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            front_waits: AtomicBool::new(false),
            retiring: AtomicBool::new(false),
            returned: Mutex::new(Returned {
                conns: Vec::new(),
                front_gone: false,
            }),
            wake,
        })
    }

    pub fn executors(&self) -> usize {
        self.executors
    }

    // --- the front's side ---

    /// Give a complete request to the next free executor (queued if none is free).
    pub fn push(&self, job: Job) {
        self.in_flight.fetch_add(1, SeqCst);
        lock(&self.queue).jobs.push_back(job);
        self.job_ready.notify_one();
    }

    /// Requests the executors have, running or queued.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(SeqCst)
    }

    /// The front is about to wait because no executor is free: ask for a wake-up when one is,
    /// then look again (an executor that finished in between is seen here, not lost).
    pub fn want_free_executor(&self) -> usize {
        self.front_waits.store(true, SeqCst);
        self.in_flight.load(SeqCst)
    }

    /// Kept connections the executors gave back since the last call.
    pub fn take_returned(&self, into: &mut Vec<FrontConn>) {
        let _ = self.wake.read();
        into.append(&mut lock(&self.returned).conns);
    }

    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// A worker process is due for recycling.
    pub fn retiring(&self) -> bool {
        self.retiring.load(SeqCst)
    }

    /// The front leaves: kept connections given back from now on are closed, and executors
    /// leave once the queue is empty.
    pub fn close(&self) {
        {
            let mut returned = lock(&self.returned);
            returned.front_gone = true;
            returned.conns.clear();
        }
        lock(&self.queue).closed = true;
        self.job_ready.notify_all();
    }

    // --- the executors' side ---

    /// The next request, or `None` when the front has left and the queue is empty.
    pub fn next_job(&self) -> Option<Job> {
        let mut queue = lock(&self.queue);
        loop {
            if let Some(job) = queue.jobs.pop_front() {
                return Some(job);
            }
            if queue.closed {
                return None;
            }
            queue = self
                .job_ready
                .wait(queue)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// An executor finished a request; `kept` is its connection when it goes back to the front.
    pub fn finished(&self, kept: Option<FrontConn>) {
        let mut wake = false;
        if let Some(conn) = kept {
            let mut returned = lock(&self.returned);
            if !returned.front_gone {
                returned.conns.push(conn);
                wake = true;
            }
        }
        self.in_flight.fetch_sub(1, SeqCst);
        if self.front_waits.swap(false, SeqCst) {
            wake = true;
        }
        if wake {
            let _ = self.wake.write(1);
        }
    }

    /// A worker process reached `max_requests`: ask the front to stop.
    pub fn retire(&self) {
        self.retiring.store(true, SeqCst);
        let _ = self.wake.write(1);
    }
}
