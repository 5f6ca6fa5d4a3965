//! The process manager's policy (`pm = static | dynamic | ondemand`) as pure functions, with
//! php-fpm's semantics: how many workers to start, which to stop, when `max children reached`
//! counts, when a worker is recycled (`max_requests`) and when a crashing pool backs off.
//!
//! Nothing here reads a clock or touches a process: the supervisor passes in what it sees (the
//! workers and their idle/busy state, the queue from the sampler, the time) and carries the small
//! [`PmState`] from one maintenance tick to the next. That keeps every rule table-testable.
//!
//! The rules, per maintenance tick (php-fpm runs it once a second):
//! - `static`: always `max_children` workers: spawn the missing ones; after a reload that lowered
//!   `max_children`, stop the surplus idle ones.
//! - `dynamic`: more idle than `max_spare_servers` → stop one idle worker (the oldest process, as
//!   php-fpm does) and reset the spawn rate; fewer idle than `min_spare_servers` → spawn
//!   `min(rate, min_spare - idle, max_children - running)` and double the rate (1, 2, 4 … 32);
//!   hitting `max_children` counts one `max children reached` per episode and warns once.
//! - `ondemand`: connections waiting with no idle worker to take them → spawn one per waiting
//!   connection not covered by an idle worker, up to `max_children` (php-fpm spawns one per
//!   accept event, which fires once per waiting connection); the worker idle longest is stopped
//!   once it has been idle longer than `idle_timeout`, one per tick, and only while nothing is
//!   queued (a queued connection is about to be taken by it).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::config::{PmKind, PoolConfig};

/// The fastest `dynamic` ramp: php-fpm's `FPM_MAX_SPAWN_RATE` (children per tick).
pub const MAX_SPAWN_RATE: u32 = 32;
/// From this rate on, `dynamic` logs that the pool seems busy (php-fpm's threshold).
pub const BUSY_WARNING_RATE: u32 = 8;

/// The `pm` keys of a pool (DESIGN.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmSettings {
    pub kind: PmKind,
    /// Upper bound on workers; the exact count for `static`.
    pub max_children: u32,
    /// `dynamic`: workers started at launch.
    pub start_servers: u32,
    /// `dynamic`: fewer idle workers than this starts more.
    pub min_spare_servers: u32,
    /// `dynamic`: more idle workers than this stops one per tick.
    pub max_spare_servers: u32,
    /// `ondemand`: a worker idle longer than this is stopped.
    pub idle_timeout: Duration,
}

impl PmSettings {
    pub fn from_pool(pool: &PoolConfig) -> Self {
        Self {
            kind: pool.pm,
            max_children: pool.max_children,
            start_servers: pool.start_servers,
            min_spare_servers: pool.min_spare_servers,
            max_spare_servers: pool.max_spare_servers,
            idle_timeout: pool.idle_timeout,
        }
    }
}

/// Identifies a worker to the supervisor (its slot or pid; the policy only hands it back).
pub type WorkerId = u64;

/// What a worker is doing, as the scoreboard shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Waiting for a connection since `since`. A worker still starting up counts as idle since
    /// its start: it will take a connection shortly, so it must not trigger more spawning.
    Idle { since: Instant },
    /// Serving a request.
    Busy,
}

/// One live worker. Workers already told to stop are left out: they no longer count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerView {
    pub id: WorkerId,
    /// When the process (or thread) started: `dynamic` stops the oldest idle one first.
    pub started: Instant,
    pub activity: Activity,
}

/// The pool as the supervisor sees it at one tick.
#[derive(Clone, Copy, Debug)]
pub struct PoolView<'a> {
    pub workers: &'a [WorkerView],
    /// Connections waiting in the kernel's accept queue (the sampler's latest `listen queue`).
    pub queued: u64,
    pub now: Instant,
}

/// What the policy remembers between ticks (php-fpm keeps the same two fields per pool).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmState {
    /// `dynamic`: how many workers the next spawning tick may start (1, 2, 4 … 32).
    pub spawn_rate: u32,
    /// The current "reached max_children" episode was already counted and logged.
    pub at_max_children: bool,
}

impl Default for PmState {
    fn default() -> Self {
        Self {
            spawn_rate: 1,
            at_max_children: false,
        }
    }
}

/// A line the supervisor should log (as a warning) for this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmWarning {
    /// The policy wanted more workers than `max_children` allows.
    MaxChildrenReached { max_children: u32 },
    /// `dynamic` ramped up to [`BUSY_WARNING_RATE`] or more.
    SeemsBusy {
        spawning: u32,
        idle: u32,
        total: u32,
    },
}

impl fmt::Display for PmWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxChildrenReached { max_children } => write!(
                f,
                "server reached max_children setting ({max_children}), consider raising it"
            ),
            Self::SeemsBusy {
                spawning,
                idle,
                total,
            } => write!(
                f,
                "seems busy (you may need to increase start_servers, or min/max_spare_servers), \
                 spawning {spawning} children, there are {idle} idle, and {total} total children"
            ),
        }
    }
}

/// The outcome of one maintenance tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Workers to start now.
    pub spawn: u32,
    /// Idle workers to stop gracefully now.
    pub stop: Vec<WorkerId>,
    /// Add one to the pool's `max children reached` counter.
    pub max_children_reached: bool,
    pub warning: Option<PmWarning>,
    /// Carry to the next tick.
    pub next: PmState,
}

impl Decision {
    fn nothing(next: PmState) -> Self {
        Self {
            spawn: 0,
            stop: Vec::new(),
            max_children_reached: false,
            warning: None,
            next,
        }
    }
}

/// Workers to start when the pool starts: `static` all of them, `dynamic` `start_servers`
/// (within `max_children`), `ondemand` none.
pub fn initial_workers(settings: &PmSettings) -> u32 {
    match settings.kind {
        PmKind::Static => settings.max_children,
        PmKind::Dynamic => settings.start_servers.min(settings.max_children),
        PmKind::Ondemand => 0,
    }
}

/// One maintenance tick: what to spawn and stop given the pool now and the previous state.
pub fn maintain(settings: &PmSettings, pool: &PoolView<'_>, state: PmState) -> Decision {
    match settings.kind {
        PmKind::Static => maintain_static(settings, pool, state),
        PmKind::Dynamic => maintain_dynamic(settings, pool, state),
        PmKind::Ondemand => maintain_ondemand(settings, pool, state),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn idle_workers<'a>(pool: &'a PoolView<'_>) -> impl Iterator<Item = (&'a WorkerView, Instant)> {
    pool.workers.iter().filter_map(|w| match w.activity {
        Activity::Idle { since } => Some((w, since)),
        Activity::Busy => None,
    })
}

fn maintain_static(settings: &PmSettings, pool: &PoolView<'_>, state: PmState) -> Decision {
    let running = count(pool.workers.len());
    let mut decision = Decision::nothing(state);
    if running < settings.max_children {
        decision.spawn = settings.max_children - running;
    } else if running > settings.max_children {
        let mut idle: Vec<&WorkerView> = idle_workers(pool).map(|(w, _)| w).collect();
        idle.sort_by_key(|w| (w.started, w.id));
        let surplus = (running - settings.max_children) as usize;
        decision.stop = idle.iter().take(surplus).map(|w| w.id).collect();
    }
    decision
}

fn maintain_dynamic(settings: &PmSettings, pool: &PoolView<'_>, state: PmState) -> Decision {
    let running = count(pool.workers.len());
    let idle = count(idle_workers(pool).count());
    let mut decision = Decision::nothing(state);

    if idle > settings.max_spare_servers {
        // One per tick, the oldest idle process first (php-fpm's choice).
        let oldest = idle_workers(pool)
            .map(|(w, _)| w)
            .min_by_key(|w| (w.started, w.id));
        decision.stop = oldest.map(|w| w.id).into_iter().collect();
        decision.next.spawn_rate = 1;
        return decision;
    }
    if idle >= settings.min_spare_servers {
        decision.next.spawn_rate = 1;
        return decision;
    }
    if running >= settings.max_children {
        hit_max_children(settings, &mut decision);
        decision.next.spawn_rate = 1;
        return decision;
    }
    let rate = state.spawn_rate.clamp(1, MAX_SPAWN_RATE);
    let spawn = rate
        .min(settings.min_spare_servers - idle)
        .min(settings.max_children - running);
    if rate >= BUSY_WARNING_RATE {
        decision.warning = Some(PmWarning::SeemsBusy {
            spawning: spawn,
            idle,
            total: running,
        });
    }
    decision.spawn = spawn;
    decision.next.at_max_children = false;
    decision.next.spawn_rate = (rate * 2).min(MAX_SPAWN_RATE);
    decision
}

fn maintain_ondemand(settings: &PmSettings, pool: &PoolView<'_>, state: PmState) -> Decision {
    let running = count(pool.workers.len());
    let idle = u64::from(count(idle_workers(pool).count()));
    let mut decision = Decision::nothing(state);

    if pool.queued > idle {
        let wanted = pool.queued - idle;
        let room = u64::from(settings.max_children.saturating_sub(running));
        if room == 0 {
            hit_max_children(settings, &mut decision);
            return decision;
        }
        decision.spawn = u32::try_from(wanted.min(room)).unwrap_or(u32::MAX);
        decision.next.at_max_children = false;
        return decision;
    }
    if pool.queued == 0 {
        let longest = idle_workers(pool).min_by_key(|(w, since)| (*since, w.id));
        if let Some((worker, since)) = longest {
            if pool.now.saturating_duration_since(since) > settings.idle_timeout {
                decision.stop.push(worker.id);
            }
        }
    }
    decision
}

/// php-fpm counts and logs reaching `max_children` once per episode; the episode ends the next
/// time a worker could be spawned.
fn hit_max_children(settings: &PmSettings, decision: &mut Decision) {
    if !decision.next.at_max_children {
        decision.max_children_reached = true;
        decision.warning = Some(PmWarning::MaxChildrenReached {
            max_children: settings.max_children,
        });
        decision.next.at_max_children = true;
    }
}

/// `max_requests`: recycle a worker once it has served this many requests; 0 = never.
pub fn should_recycle(max_requests: u64, served: u64) -> bool {
    max_requests > 0 && served >= max_requests
}

/// How a worker ended, as the supervisor saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerExit {
    /// The supervisor asked it to stop (pm, reload, recycling, shutdown), however it then ended.
    Requested,
    /// It exited on its own with this status code.
    Exited(i32),
    /// It was killed by this signal, not at our request.
    Signaled(i32),
}

/// Whether an exit counts towards the crash-loop guard: any end the supervisor did not ask for,
/// except a clean `exit(0)` (a worker that leaves on its own after finishing its work).
pub fn is_crash(exit: WorkerExit) -> bool {
    match exit {
        WorkerExit::Requested | WorkerExit::Exited(0) => false,
        WorkerExit::Exited(_) | WorkerExit::Signaled(_) => true,
    }
}

/// An exit this soon after the start is "right after start" (see [`report_exit`]).
pub const EARLY_EXIT: Duration = Duration::from_secs(1);

/// How the supervisor tells the operator that a worker ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReport {
    /// Nothing to say (debug): the supervisor asked, or a fastpm worker left after
    /// `max_requests`, which it asks for in advance.
    Quiet,
    /// An exec pool's program exited 0 without being asked (php-cgi does after
    /// `PHP_FCGI_MAX_REQUESTS`): replaced with a cold start, so it is said (info); `early`
    /// when it lived less than [`EARLY_EXIT`] (a warning: a program that keeps leaving right
    /// after its start is restarting in a loop, and a clean exit never trips the crash guard).
    LeftOnItsOwn { early: bool },
    /// Counted by the crash guard and logged as a warning ([`is_crash`]).
    Crash,
}

/// Pure: what to log for a worker that ended with `exit` after living `lived`; `exec`: it is
/// an exec pool's program rather than a fastpm worker.
pub fn report_exit(exit: WorkerExit, lived: Duration, exec: bool) -> ExitReport {
    match exit {
        _ if is_crash(exit) => ExitReport::Crash,
        WorkerExit::Exited(0) if exec => ExitReport::LeftOnItsOwn {
            early: lived < EARLY_EXIT,
        },
        _ => ExitReport::Quiet,
    }
}

/// php-fpm's example `emergency_restart_threshold`: this many crashes …
pub const DEFAULT_CRASH_THRESHOLD: u32 = 10;
/// … within this interval (`emergency_restart_interval = 1m`) make the pool back off.
pub const DEFAULT_CRASH_INTERVAL: Duration = Duration::from_secs(60);
/// First back-off delay; each further trip doubles it.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest back-off delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Back-off delay after the crash guard tripped `trips` times in a row (1 = first trip):
/// 1 s, 2 s, 4 s … capped at [`BACKOFF_MAX`].
pub fn backoff(trips: u32) -> Duration {
    doubling(BACKOFF_BASE, BACKOFF_MAX, trips)
}

/// The `n`th delay (from 1) of a back-off that starts at `first` and doubles up to `max`
/// (`n` 0 counts as 1).
pub fn doubling(first: Duration, max: Duration, n: u32) -> Duration {
    let doublings = n.saturating_sub(1).min(16);
    first.saturating_mul(1u32 << doublings).min(max)
}

/// What to do after a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashVerdict {
    /// Respawn as usual.
    Respawn,
    /// Crash loop: respawn nothing in this pool for `delay` (log it: `crashes` crashes within
    /// the interval).
    BackOff { delay: Duration, crashes: u32 },
}

/// The crash-loop guard of one pool, modelled on php-fpm's `emergency_restart_threshold` /
/// `emergency_restart_interval`: where php-fpm restarts the whole master, fastpm stops
/// respawning that pool's workers for a growing delay, so a broken app (php-cgi missing, a
/// segfaulting extension) cannot spin the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashGuard {
    /// Crashes within `interval` that trip the guard; 0 = off.
    threshold: u32,
    interval: Duration,
    /// Crash times within the current window, oldest first.
    recent: VecDeque<Instant>,
    /// Consecutive trips (reset after a quiet `interval`); sets the back-off length.
    trips: u32,
    /// No respawn before this time.
    backoff_until: Option<Instant>,
}

impl CrashGuard {
    pub fn new(threshold: u32, interval: Duration) -> Self {
        Self {
            threshold,
            interval,
            recent: VecDeque::new(),
            trips: 0,
            backoff_until: None,
        }
    }

    /// Record a crash at `now` and say whether to respawn.
    pub fn record_crash(&mut self, now: Instant) -> CrashVerdict {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) > self.interval {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.is_empty() && self.backoff_over(now) {
            // A quiet interval: the previous loop is over, start the ramp again.
            self.trips = 0;
        }
        self.recent.push_back(now);
        let crashes = count(self.recent.len());
        if self.threshold == 0 || crashes < self.threshold {
            return CrashVerdict::Respawn;
        }
        self.trips += 1;
        let delay = backoff(self.trips);
        self.backoff_until = Some(now + delay);
        self.recent.clear();
        CrashVerdict::BackOff { delay, crashes }
    }

    /// How long to wait before the next respawn (zero when allowed now).
    pub fn respawn_delay(&self, now: Instant) -> Duration {
        self.backoff_until
            .map(|until| until.saturating_duration_since(now))
            .unwrap_or(Duration::ZERO)
    }

    fn backoff_over(&self, now: Instant) -> bool {
        self.backoff_until
            .is_none_or(|until| now.saturating_duration_since(until) > self.interval)
    }
}

impl Default for CrashGuard {
    fn default() -> Self {
        Self::new(DEFAULT_CRASH_THRESHOLD, DEFAULT_CRASH_INTERVAL)
    }
}
