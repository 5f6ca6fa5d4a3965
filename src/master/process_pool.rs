//! One pool of worker processes under supervision: keep `max_children` of the current
//! generation running, reap the ones that end, respawn (with the crash-loop guard), replace a
//! generation on reload, stop them all.
//!
//! Signals to workers: QUIT retires one (finish the connection in hand, accept nothing more) —
//! used for reload and for stopping; TERM drains (accept until the queue is empty) — used for
//! the master's graceful stop; KILL when a deadline passes.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::children::{spawn, SpawnSpec, WorkerProcess};
use super::pm::{
    is_crash, CrashGuard, CrashVerdict, WorkerExit, DEFAULT_CRASH_INTERVAL, DEFAULT_CRASH_THRESHOLD,
};
use crate::scoreboard::WorkerSlot;

pub struct ProcessPool {
    name: String,
    spec: SpawnSpec,
    /// Workers wanted from the current generation (`max_children`; pm = static).
    target: usize,
    workers: Vec<WorkerProcess>,
    generation: u64,
    crash_guard: CrashGuard,
}

impl ProcessPool {
    pub fn new(name: String, spec: SpawnSpec, target: usize) -> Self {
        Self {
            name,
            spec,
            target,
            workers: Vec::new(),
            generation: 0,
            crash_guard: CrashGuard::new(DEFAULT_CRASH_THRESHOLD, DEFAULT_CRASH_INTERVAL),
        }
    }

    /// Worker processes alive (any generation).
    pub fn live(&self) -> usize {
        self.workers.len()
    }

    fn current(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.generation == self.generation && !w.stop_requested)
            .count()
    }

    fn free_slot(&self, slots: &[WorkerSlot]) -> Option<usize> {
        (0..slots.len()).find(|s| !self.workers.iter().any(|w| w.slot == *s))
    }

    /// Start workers until the current generation has `target` (as far as slots allow and the
    /// crash guard lets us).
    pub fn fill(&mut self, slots: &[WorkerSlot]) {
        let now = Instant::now();
        if !self.crash_guard.respawn_delay(now).is_zero() {
            return;
        }
        while self.current() < self.target {
            let Some(slot) = self.free_slot(slots) else {
                return;
            };
            // The slot is the worker's from now on; it claims it again when it starts.
            slots[slot].release();
            match spawn(&self.spec, slot, self.generation) {
                Ok(worker) => {
                    tracing::debug!(pool = %self.name, pid = worker.pid(), slot, "worker started");
                    self.workers.push(worker);
                }
                Err(e) => {
                    tracing::error!(pool = %self.name, error = %e, "cannot start a worker process");
                    return;
                }
            }
        }
    }

    /// Collect the workers that ended; free their slots; feed crashes to the guard.
    pub fn reap(&mut self, slots: &[WorkerSlot]) {
        let mut i = 0;
        while i < self.workers.len() {
            let Some(exit) = self.workers[i].try_reap() else {
                i += 1;
                continue;
            };
            let worker = self.workers.swap_remove(i);
            slots[worker.slot].release();
            if !is_crash(exit) {
                tracing::debug!(pool = %self.name, pid = worker.pid(), ?exit, "worker ended");
                continue;
            }
            let how = match exit {
                WorkerExit::Signaled(sig) => format!("killed by signal {sig}"),
                WorkerExit::Exited(code) => format!("exited with status {code}"),
                WorkerExit::Requested => unreachable!("not a crash"),
            };
            tracing::warn!(pool = %self.name, pid = worker.pid(), "worker {how}; replacing it");
            if let CrashVerdict::BackOff { delay, crashes } =
                self.crash_guard.record_crash(Instant::now())
            {
                tracing::error!(
                    pool = %self.name,
                    "{crashes} worker crashes within {} s: not respawning for {} s",
                    DEFAULT_CRASH_INTERVAL.as_secs(),
                    delay.as_secs()
                );
            }
        }
    }

    /// Reload: the new generation starts (with `spec`), then the old one is retired. Old workers
    /// finish the connection they hold; the queue is never without a worker to take it.
    pub fn replace(&mut self, spec: SpawnSpec, target: usize, slots: &[WorkerSlot]) {
        let old = self.generation;
        self.generation += 1;
        self.spec = spec;
        self.target = target;
        self.fill(slots);
        for worker in self.workers.iter_mut().filter(|w| w.generation == old) {
            worker.signal(Signal::SIGQUIT);
        }
    }

    pub fn signal_all(&mut self, signal: Signal) {
        for worker in &mut self.workers {
            worker.signal(signal);
        }
    }

    /// Wait until every worker ended, until `deadline`; then kill the rest. Returns how many
    /// had to be killed.
    pub fn wait_all(&mut self, deadline: Instant, slots: &[WorkerSlot]) -> usize {
        while !self.workers.is_empty() && Instant::now() < deadline {
            self.reap(slots);
            std::thread::sleep(Duration::from_millis(10));
        }
        let killed = self.workers.len();
        self.signal_all(Signal::SIGKILL);
        for mut worker in self.workers.drain(..) {
            let _ = worker.child.wait();
            slots[worker.slot].release();
        }
        killed
    }
}
