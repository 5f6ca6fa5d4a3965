//! One pool of worker processes under supervision: keep `max_children` of the current
//! generation running, reap the ones that end, respawn (with the crash-loop guard), replace a
//! generation on reload, stop them all.
//!
//! Signals to workers: QUIT retires one (finish the connection in hand, accept nothing more) —
//! used for reload and for stopping; TERM drains (accept until the queue is empty) — used for
//! the master's graceful stop; KILL when a deadline passes.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::children::{spawn, SpawnSpec, WorkerProcess};
use super::pm::{
    self, report_exit, Activity, CrashGuard, CrashVerdict, ExitReport, PmSettings, PmState,
    PoolView, WorkerExit, WorkerView, DEFAULT_CRASH_INTERVAL, DEFAULT_CRASH_THRESHOLD,
};
use crate::config::PmKind;
use crate::overload::monotonic_us;
use crate::scoreboard::{PoolBoard, WorkerSlot, WorkerState};

/// How often `dynamic` runs its maintenance (php-fpm: once a second, which paces its spawn-rate
/// ramp); `ondemand` looks more often so a queued connection finds a worker quickly.
const DYNAMIC_PERIOD: Duration = Duration::from_secs(1);
const ONDEMAND_PERIOD: Duration = Duration::from_millis(100);

/// A worker holding the accept lock beats at least every 200 ms (its accept timeout); silent
/// this long it is stuck, and every other worker waits behind it.
pub const LOCK_HOLDER_SILENCE: Duration = Duration::from_secs(5);
/// Reading a request and writing a response are bounded by the worker's own timeouts (10 s,
/// 30 s); silent this long in those states it is stuck. (Running requests are
/// `request_timeout`'s business.)
pub const IO_SILENCE: Duration = Duration::from_secs(60);

/// Pure: how many serving workers of earlier generations to ask to leave, with `current`
/// workers of the new generation running, `old` of earlier ones still serving, and `target`
/// wanted: as many as the pool has beyond its target, never more than there are. (`target` 0,
/// `ondemand`: all of them; the pm starts workers when connections wait.)
pub fn to_retire(current: usize, old: usize, target: usize) -> usize {
    old.min((current + old).saturating_sub(target))
}

/// Pure: is a worker in `state`, holding the lock or not, silent for `silent`, hung?
pub fn is_hung(state: WorkerState, holds_lock: bool, silent: Duration) -> bool {
    match state {
        WorkerState::Idle => holds_lock && silent > LOCK_HOLDER_SILENCE,
        WorkerState::Reading | WorkerState::Finishing => silent > IO_SILENCE,
        WorkerState::Running | WorkerState::Free => false,
    }
}

pub struct ProcessPool {
    name: String,
    spec: SpawnSpec,
    /// Workers to start for a fresh generation (pm's initial count: `static` all,
    /// `dynamic` `start_servers`, `ondemand` none); `static` keeps exactly this many.
    target: usize,
    workers: Vec<WorkerProcess>,
    generation: u64,
    crash_guard: CrashGuard,
    /// The pool's `pm` keys, for `dynamic` and `ondemand`.
    pm: PmSettings,
    pm_state: PmState,
    last_pm_tick: Instant,
    /// `max children reached`, counted through the pool's metrics like every other counter.
    max_children_reached: metrics::Counter,
}

impl ProcessPool {
    pub fn new(
        name: String,
        spec: SpawnSpec,
        pm: PmSettings,
        max_children_reached: metrics::Counter,
    ) -> Self {
        prestart_php(&spec);
        Self {
            name,
            spec,
            target: pm::initial_workers(&pm) as usize,
            workers: Vec::new(),
            generation: 0,
            crash_guard: CrashGuard::new(DEFAULT_CRASH_THRESHOLD, DEFAULT_CRASH_INTERVAL),
            pm,
            pm_state: PmState::default(),
            last_pm_tick: Instant::now(),
            max_children_reached,
        }
    }

    /// One supervisor tick after reaping: `static` refills to `max_children`; `dynamic` and
    /// `ondemand` ask the pm policy (`pm.rs`) what to start and stop.
    pub fn maintain(&mut self, board: &PoolBoard, slots: &[WorkerSlot]) {
        self.retire_old(slots);
        if self.pm.kind == PmKind::Static {
            return self.fill(slots);
        }
        let now = Instant::now();
        let period = match self.pm.kind {
            PmKind::Dynamic => DYNAMIC_PERIOD,
            _ => ONDEMAND_PERIOD,
        };
        if now.duration_since(self.last_pm_tick) < period
            || !self.crash_guard.respawn_delay(now).is_zero()
        {
            return;
        }
        self.last_pm_tick = now;
        let views = self.views(slots, now);
        let decision = pm::maintain(
            &self.pm,
            &PoolView {
                workers: &views,
                queued: board.listen_queue.load(Relaxed),
                now,
            },
            self.pm_state,
        );
        self.pm_state = decision.next;
        if decision.max_children_reached {
            self.max_children_reached.increment(1);
        }
        if let Some(warning) = decision.warning {
            tracing::warn!(pool = %self.name, "{warning}");
        }
        for id in decision.stop {
            if let Some(worker) = self.workers.iter_mut().find(|w| w.slot as u64 == id) {
                tracing::debug!(pool = %self.name, pid = worker.pid(), "pm: stopping an idle worker");
                worker.signal(Signal::SIGQUIT);
            }
        }
        for _ in 0..decision.spawn {
            if !self.spawn_one(slots) {
                break;
            }
        }
    }

    /// The current generation as the pm policy sees it (id = slot).
    fn views(&self, slots: &[WorkerSlot], now: Instant) -> Vec<WorkerView> {
        let mono_now = monotonic_us();
        self.workers
            .iter()
            .filter(|w| w.generation == self.generation && !w.stop_requested)
            .map(|w| {
                let slot = &slots[w.slot];
                let activity = match slot.state() {
                    state if state.is_active() => Activity::Busy,
                    WorkerState::Idle if slot.requests.load(Relaxed) > 0 => {
                        let idle_since_us = slot.request_start_us.load(Relaxed)
                            + slot.last_duration_us.load(Relaxed);
                        let idle_for =
                            Duration::from_micros(mono_now.saturating_sub(idle_since_us));
                        Activity::Idle {
                            since: now.checked_sub(idle_for).unwrap_or(w.started),
                        }
                    }
                    // Starting up, or idle since it started.
                    _ => Activity::Idle { since: w.started },
                };
                WorkerView {
                    id: w.slot as u64,
                    started: w.started,
                    activity,
                }
            })
            .collect()
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
            if !self.spawn_one(slots) {
                return;
            }
        }
    }

    /// Start one worker of the current generation in a free slot; false if none could start.
    fn spawn_one(&mut self, slots: &[WorkerSlot]) -> bool {
        let Some(slot) = self.free_slot(slots) else {
            return false;
        };
        // The slot is the worker's from now on; it claims it again when it starts.
        slots[slot].release();
        match spawn(&self.spec, slot, self.generation) {
            Ok(worker) => {
                tracing::debug!(pool = %self.name, pid = worker.pid(), slot, "worker started");
                if worker.exec {
                    // The program knows nothing of the scoreboard: the master keeps its slot,
                    // so the status counts it.
                    slots[slot].claim(worker.pid());
                }
                self.workers.push(worker);
                true
            }
            Err(e) => {
                tracing::error!(pool = %self.name, error = %e, "cannot start a worker process");
                false
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
            let lived = worker.started.elapsed();
            match report_exit(exit, lived, worker.exec) {
                ExitReport::Quiet => {
                    tracing::debug!(pool = %self.name, pid = worker.pid(), ?exit, "worker ended");
                    continue;
                }
                ExitReport::LeftOnItsOwn { early: false } => {
                    tracing::info!(pool = %self.name, pid = worker.pid(), "child exited on its own (status 0) after {} s; starting a new one", lived.as_secs());
                    continue;
                }
                ExitReport::LeftOnItsOwn { early: true } => {
                    tracing::warn!(pool = %self.name, pid = worker.pid(), "child exited on its own (status 0) {} ms after it started; starting a new one (a program that leaves right after its start restarts in a loop)", lived.as_millis());
                    continue;
                }
                ExitReport::Crash => {}
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

    /// Exec pools: fill each program's slot with what it is doing (see `exec_state`); the
    /// program itself knows nothing of the scoreboard.
    pub fn sample_exec_states(&self, slots: &[WorkerSlot]) {
        for worker in self.workers.iter().filter(|w| w.exec && !w.stop_requested) {
            let slot = &slots[worker.slot];
            if let Some(state) = super::exec_state::sample(worker.pid()) {
                if slot.state() != state {
                    if state.is_active() {
                        slot.request_start_us
                            .store(crate::overload::monotonic_us(), Relaxed);
                    }
                    slot.set_state(state);
                }
            }
        }
    }

    /// Kill workers that stopped making progress where they must (see [`is_hung`]); the next
    /// reap replaces them (a robust mutex or a lock file is released by the death).
    pub fn kill_hung(&mut self, slots: &[WorkerSlot]) {
        let now = monotonic_us();
        for worker in self.workers.iter_mut().filter(|w| !w.stop_requested) {
            let slot = &slots[worker.slot];
            if slot.pid.load(Relaxed) != worker.pid() {
                continue; // not started yet: its slot is not its own until it claims it
            }
            let state = slot.state();
            let silent = Duration::from_micros(slot.silent_for_us(now));
            if is_hung(state, slot.holds_lock.load(Relaxed) == 1, silent) {
                tracing::error!(
                    pool = %self.name,
                    pid = worker.pid(),
                    state = state.label(),
                    "worker shows no sign of life for {} s; killing it",
                    silent.as_secs()
                );
                worker.signal(Signal::SIGKILL);
            }
        }
    }

    /// Reload: the new generation starts (with `spec`), then the old one is retired. Old workers
    /// finish the connection they hold; the queue is never without a worker to take it.
    pub fn replace(&mut self, spec: SpawnSpec, pm: PmSettings, slots: &[WorkerSlot]) {
        prestart_php(&spec);
        self.generation += 1;
        self.spec = spec;
        self.pm = pm;
        self.pm_state = PmState::default();
        self.target = pm::initial_workers(&pm) as usize;
        self.fill(slots);
        self.retire_old(slots);
    }

    /// Ask workers of earlier generations to leave, one for each worker of the current one that
    /// runs beyond the target (idle ones first): a reload never leaves the pool with fewer
    /// serving workers than it wants, even when the new generation cannot start at once (no
    /// free slot while an earlier reload's workers still finish, a php-cgi slow to start).
    fn retire_old(&mut self, slots: &[WorkerSlot]) {
        let generation = self.generation;
        let serving_old = |w: &WorkerProcess| w.generation != generation && !w.stop_requested;
        let old = self.workers.iter().filter(|w| serving_old(w)).count();
        let count = to_retire(self.current(), old, self.target);
        if count == 0 {
            return;
        }
        let mut order: Vec<usize> = (0..self.workers.len())
            .filter(|&i| serving_old(&self.workers[i]))
            .collect();
        // Idle first: a busy one would finish its request anyway, but an idle one leaves now.
        order.sort_by_key(|&i| slots[self.workers[i].slot].state().is_active());
        for i in order.into_iter().take(count) {
            self.workers[i].retire();
        }
    }

    /// Whether a worker of an earlier generation still runs (until it is reaped): what it
    /// connects to (a shared php-cgi of its config) must stay.
    pub fn earlier_generation_running(&self) -> bool {
        self.workers.iter().any(|w| w.generation != self.generation)
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
            worker.wait();
            slots[worker.slot].release();
        }
        killed
    }
}

/// An embedded-PHP pool's php parent starts with the pool (or the reload), as php-fpm starts
/// PHP at boot: PHP's start-up errors show then, and an `ondemand` pool's first request does not
/// wait for PHP's start-up.
fn prestart_php(spec: &SpawnSpec) {
    if let Some(parent) = &spec.php_parent {
        if let Err(e) = parent.prestart() {
            tracing::error!(pool_index = spec.pool_index, error = %e, "the php parent cannot start");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hung_table() {
        let s = Duration::from_secs;
        let table = [
            (WorkerState::Idle, false, s(600), false),
            (WorkerState::Idle, true, s(1), false),
            (WorkerState::Idle, true, s(6), true),
            (WorkerState::Reading, false, s(30), false),
            (WorkerState::Reading, false, s(61), true),
            (WorkerState::Finishing, false, s(61), true),
            (WorkerState::Running, false, s(6000), false),
            (WorkerState::Free, true, s(6000), false),
        ];
        for (state, holds, silent, want) in table {
            assert_eq!(
                is_hung(state, holds, silent),
                want,
                "{state:?} {holds} {silent:?}"
            );
        }
    }
}
