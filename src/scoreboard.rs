//! The scoreboard: one shared-memory mapping of plain atomics that every part of a pool writes
//! its own facts into and the status readers only read.
//!
//! Layout: for each pool a [`PoolBoard`] (counters and the sampler's queue readings) followed by
//! one [`WorkerSlot`] per possible worker. Workers write their own slot and the pool's counters;
//! the master's sampler writes the queue readings. Nothing here takes a lock, so a reader never
//! slows a worker down, and the status answers even when every worker is busy.
//!
//! Why shared memory (a memfd) and not a heap struct: worker *processes* map the same memfd, so
//! thread and process workers use one code path.
//!
//! Two clocks, each for what it is good at: every *duration* (heartbeats, request start and
//! length, idle time) is measured on `CLOCK_MONOTONIC`, which is one clock for every process of
//! the machine and never steps; only the *dates* shown to people (`start time`) are wall-clock.
//! A wall-clock step (NTP, an operator's `date -s`) then changes what the status page says the
//! time is, never whether a worker looks hung or a request looks timed out.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::overload::{monotonic_us, ArrivalRing, WaitHistogram};
use crate::sys::shm::{SharedMapping, ZeroValidAtomic};

/// Stored in a `u64` counter whose value is not known (e.g. `listen drops` on a unix socket).
pub const UNKNOWN: u64 = u64::MAX;

/// Per-pool counters. Field names follow the status keys of DESIGN.md §5.
#[repr(C, align(64))]
pub struct PoolBoard {
    /// Unix seconds when the pool started (`start time`).
    pub start_time: AtomicU64,
    /// Requests accepted by workers (`accepted conn`, as php-fpm counts: per request).
    pub accepted_conn: AtomicU64,
    /// Connections taken off the accept queue; the k-th accept takes sequence number k. Feeds the
    /// queue-wait accounting (arrivals = accepted + queued).
    pub accept_seq: AtomicU64,
    /// Requests the app ran to the end (not shed, not abandoned, not status or ping): the count
    /// of the service time below (`fastpm_request_duration_seconds`).
    pub served_requests: AtomicU64,
    /// Microseconds a worker spent on those requests: with `served_requests`, the pool's mean
    /// service time, from which the backlog advice estimates the service rate. Both beside
    /// `accepted_conn`, whose cache line every request writes already.
    pub service_time_us: AtomicU64,
    /// Last sampled accept queue depth (`listen queue`).
    pub listen_queue: AtomicU64,
    /// Highest sampled depth since start (`max listen queue`).
    pub max_listen_queue: AtomicU64,
    /// Effective backlog as the kernel holds it (`listen queue len`).
    pub listen_queue_len: AtomicU64,
    /// The backlog fastpm last passed to `listen()` (`listen backlog`): set by the master at
    /// bind and again when a reload calls `listen()` with a new one, so the status page and the
    /// next reload both read the value in force, not the one at start. 0 = not set yet.
    pub listen_backlog: AtomicU64,
    /// `max_children` and `client_timeout` (ms) in force, set as `listen_backlog` is (at bind,
    /// and by a reload of worker processes): status and the backlog advice read them, not the
    /// values the pool started with. 0 = not set yet.
    pub max_children: AtomicU64,
    pub client_timeout_ms: AtomicU64,
    /// Kernel-counted drops (TCP); [`UNKNOWN`] for unix sockets (`listen drops`).
    pub listen_drops: AtomicU64,
    /// Sampler ticks that found the queue at capacity (`queue full samples`).
    pub queue_full_samples: AtomicU64,
    /// Sampler ticks in total (so a reader can tell the sampler is alive).
    pub samples: AtomicU64,
    /// Highest number of workers seen busy at once (`max active processes`).
    pub max_active_processes: AtomicU64,
    /// Times the pool wanted more workers than `max_children` (`max children reached`).
    pub max_children_reached: AtomicU64,
    /// Requests slower than `slow_request` (`slow requests`).
    pub slow_requests: AtomicU64,
    /// Requests refused by the overload policy (`shed requests`).
    pub shed_requests: AtomicU64,
    /// Requests whose client left before the app started (`abandoned requests`).
    pub abandoned_requests: AtomicU64,
    /// TCP peers refused by `allowed_clients`.
    pub refused_clients: AtomicU64,
    /// Connections closed because of malformed or over-limit FastCGI input.
    pub protocol_errors: AtomicU64,
    /// Times a worker's accept() failed for want of descriptors or memory (EMFILE, ENFILE,
    /// ENOBUFS, ENOMEM) and it backed off (`accept errors`).
    pub accept_errors: AtomicU64,
    /// The `codel` policy's state ([`crate::overload::CodelState::to_raw`]): since when the
    /// queue wait has stayed above `target`. Shared by the pool's workers, so one standing
    /// queue is judged once, not per worker.
    pub codel_state: AtomicU64,
    /// Held requests of this pool now (`held requests`, a gauge; DESIGN.md §8). This field and
    /// the six after it are written by the master's holder only (`hold::held`); workers never
    /// touch them.
    pub held_requests: AtomicU64,
    /// Highest `held_requests` since start (`max held requests`).
    pub max_held_requests: AtomicU64,
    /// Channels with at least one request of this pool held on them (`channels`, a gauge).
    pub held_channels: AtomicU64,
    /// Messages published through this pool's `longpoll` `pub` path (`messages published`;
    /// the master's `/publish/` counts on the holder, not on a pool).
    pub messages_published: AtomicU64,
    /// Held requests answered with a message (`messages delivered`).
    pub messages_delivered: AtomicU64,
    /// Held requests answered with their timeout response (`held timeouts`).
    pub held_timeouts: AtomicU64,
    /// Held requests whose client left first (`held clients gone`): nginx closed the
    /// connection; the subscription was dropped without an answer.
    pub held_gone: AtomicU64,
    /// Requests refused because `max_held` requests were already held (503 + Retry-After).
    /// Not a key of its own: it is part of `rejected conn`.
    pub held_refused: AtomicU64,
    /// Time spent in the kernel accept queue by each accepted connection (`queue wait p50 ms`
    /// …, and the `/metrics` histogram). Workers record; readers copy.
    pub queue_wait: WaitHistogram,
    /// TCP pools only: the same wait as the kernel reports it on the accepted socket
    /// (`tcpi_last_data_recv`, millisecond resolution) — the cross-check of `queue_wait`.
    pub queue_wait_tcp_info: WaitHistogram,
    /// The sampler's recent `(time, arrived)` samples, from which a worker finds when the
    /// connection it just accepted arrived (DESIGN.md §4).
    pub arrivals: ArrivalRing,
}

// SAFETY: every field is an atomic integer or a `repr(C)` struct of atomic integers and arrays
// of them (`WaitHistogram`, `ArrivalRing`); zeroed bytes are a valid value.
unsafe impl ZeroValidAtomic for PoolBoard {}

impl PoolBoard {
    /// The backlog in force: the one a reload last passed to `listen()`, else `bound` (the one
    /// the pool was bound with; a board the master never set, as in tests).
    pub fn backlog_or(&self, bound: u32) -> u32 {
        match self.listen_backlog.load(Relaxed) {
            0 => bound,
            n => u32::try_from(n).unwrap_or(u32::MAX),
        }
    }

    /// Record the `max_children` and `client_timeout` in force (see the fields).
    pub fn set_limits(&self, max_children: u32, client_timeout: Duration) {
        self.max_children.store(u64::from(max_children), Relaxed);
        let ms = u64::try_from(client_timeout.as_millis()).unwrap_or(u64::MAX);
        self.client_timeout_ms.store(ms, Relaxed);
    }

    /// `max_children` in force, else `bound` (a board the master never set, as in tests).
    pub fn max_children_or(&self, bound: u32) -> u32 {
        match self.max_children.load(Relaxed) {
            0 => bound,
            n => u32::try_from(n).unwrap_or(u32::MAX),
        }
    }

    /// `client_timeout` in force, else `bound`.
    pub fn client_timeout_or(&self, bound: Duration) -> Duration {
        match self.client_timeout_ms.load(Relaxed) {
            0 => bound,
            ms => Duration::from_millis(ms),
        }
    }

    /// The app ran one request to the end in `us` microseconds.
    pub fn app_served(&self, us: u64) {
        self.served_requests.fetch_add(1, Relaxed);
        self.service_time_us.fetch_add(us, Relaxed);
    }
}

/// What a worker is doing, as php-fpm names it on its status page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum WorkerState {
    /// Slot not in use.
    Free = 0,
    /// Waiting for the accept lock or for a connection.
    Idle = 1,
    /// Connection accepted, reading the FastCGI request.
    Reading = 2,
    /// The app runs the request.
    Running = 3,
    /// Writing the response / closing.
    Finishing = 4,
}

impl WorkerState {
    pub fn from_u32(v: u32) -> Self {
        match v {
            1 => Self::Idle,
            2 => Self::Reading,
            3 => Self::Running,
            4 => Self::Finishing,
            _ => Self::Free,
        }
    }

    /// php-fpm's wording.
    pub fn label(self) -> &'static str {
        match self {
            Self::Free => "Free",
            Self::Idle => "Idle",
            Self::Reading => "Reading headers",
            Self::Running => "Running",
            Self::Finishing => "Finishing",
        }
    }

    /// php-fpm counts every non-idle worker as active.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Reading | Self::Running | Self::Finishing)
    }
}

/// A short text (method, URI, script) stored in atomics; a torn read is detected by the slot's
/// sequence lock, never by a lock the writer must take.
#[repr(C)]
pub struct AtomicText<const WORDS: usize> {
    len: AtomicU32,
    words: [AtomicU64; WORDS],
}

impl<const WORDS: usize> AtomicText<WORDS> {
    pub const CAPACITY: usize = WORDS * 8;

    fn store(&self, text: &[u8]) {
        let text = &text[..text.len().min(Self::CAPACITY)];
        for (i, chunk) in text.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.words[i].store(u64::from_le_bytes(word), Relaxed);
        }
        self.len.store(text.len() as u32, Relaxed);
    }

    fn load(&self) -> String {
        let len = (self.len.load(Relaxed) as usize).min(Self::CAPACITY);
        let mut out = Vec::with_capacity(len);
        for word in self.words.iter().take(len.div_ceil(8)) {
            out.extend_from_slice(&word.load(Relaxed).to_le_bytes());
        }
        out.truncate(len);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// One worker's own record. Only that worker writes it (the master resets it when the worker is
/// gone).
#[repr(C, align(64))]
pub struct WorkerSlot {
    /// Process id (thread workers: the master's pid).
    pub pid: AtomicU32,
    /// A [`WorkerState`].
    pub state: AtomicU32,
    /// Unix microseconds when the worker started.
    pub started_us: AtomicU64,
    /// Requests served by this worker.
    pub requests: AtomicU64,
    /// Monotonic microseconds ([`monotonic_us`]) when the current (or last) request started.
    pub request_start_us: AtomicU64,
    /// Duration of the last finished request, microseconds.
    pub last_duration_us: AtomicU64,
    /// Monotonic microseconds of the worker's last sign of life: every state change, every turn
    /// of the accept wait while it holds the lock (at least every 200 ms), and every wait for
    /// the client that ended with progress (so a long upload is alive, not hung). The master replaces a
    /// worker whose heartbeat stops where it must not (see `master::process_pool`).
    pub heartbeat_us: AtomicU64,
    /// 1 while the worker holds the pool's accept lock (waiting on the lock is not a hang;
    /// holding it without a heartbeat is).
    pub holds_lock: AtomicU32,
    /// Written by the front that publishes in this slot (a worker process's own; slot 0 for
    /// a thread pool's): connections it is reading (`reading connections`, a gauge).
    pub front_reading: AtomicU32,
    /// The same front's kept connections idle between requests (`idle kept connections`).
    pub front_idle: AtomicU32,
    /// Complete requests the same front read, waiting for an executor (`queued requests`):
    /// fastpm's own queue, after the kernel's `listen queue`. Written on every push and take.
    pub front_queued: AtomicU32,
    /// Sequence lock for the texts below: odd while the worker writes them.
    text_seq: AtomicU64,
    method: AtomicText<2>,
    uri: AtomicText<32>,
    script: AtomicText<32>,
}

// SAFETY: every field is an atomic integer or an array of them; zeroed bytes are valid.
unsafe impl ZeroValidAtomic for WorkerSlot {}

/// A consistent copy of a slot's texts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestTexts {
    pub method: String,
    pub uri: String,
    pub script: String,
}

impl WorkerSlot {
    pub fn set_state(&self, state: WorkerState) {
        self.beat();
        self.state.store(state as u32, Release);
    }

    /// A sign of life.
    pub fn beat(&self) {
        self.heartbeat_us.store(monotonic_us(), Relaxed);
    }

    /// Microseconds since the last heartbeat, at monotonic time `now_us`.
    pub fn silent_for_us(&self, now_us: u64) -> u64 {
        now_us.saturating_sub(self.heartbeat_us.load(Relaxed))
    }

    pub fn state(&self) -> WorkerState {
        WorkerState::from_u32(self.state.load(Acquire))
    }

    /// Record the request being started: its texts and start time.
    pub fn begin_request(&self, method: &[u8], uri: &[u8], script: &[u8]) {
        let seq = self.text_seq.fetch_add(1, Relaxed);
        debug_assert!(seq.is_multiple_of(2), "one writer per slot");
        // The odd sequence must be visible before any text word changes.
        fence(Release);
        self.method.store(method);
        self.uri.store(uri);
        self.script.store(script);
        self.text_seq.fetch_add(1, Release);
        self.request_start_us.store(monotonic_us(), Relaxed);
        self.set_state(WorkerState::Running);
    }

    /// Record the end of the request: counts and duration.
    pub fn end_request(&self) {
        let start = self.request_start_us.load(Relaxed);
        self.last_duration_us
            .store(monotonic_us().saturating_sub(start), Relaxed);
        self.requests.fetch_add(1, Relaxed);
    }

    /// Read the texts without tearing (retries while the writer is mid-update).
    pub fn texts(&self) -> RequestTexts {
        for _ in 0..64 {
            let before = self.text_seq.load(Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let texts = RequestTexts {
                method: self.method.load(),
                uri: self.uri.load(),
                script: self.script.load(),
            };
            // The text loads above must not move below the second look at the sequence (an
            // acquire *load* alone does not hold back the loads before it).
            fence(Acquire);
            if self.text_seq.load(Relaxed) == before {
                return texts;
            }
        }
        RequestTexts::default()
    }

    /// Claim the slot for a new worker. A previous owner killed in the middle of writing its
    /// texts left the sequence odd: make it even again, or the slot's texts would never read.
    pub fn claim(&self, pid: u32) {
        let seq = self.text_seq.load(Relaxed);
        if seq % 2 == 1 {
            self.text_seq.store(seq + 1, Release);
        }
        self.pid.store(pid, Relaxed);
        self.started_us.store(now_us(), Relaxed);
        self.holds_lock.store(0, Relaxed);
        self.front_reading.store(0, Relaxed);
        self.front_idle.store(0, Relaxed);
        self.front_queued.store(0, Relaxed);
        self.requests.store(0, Relaxed);
        self.request_start_us.store(0, Relaxed);
        self.last_duration_us.store(0, Relaxed);
        self.set_state(WorkerState::Idle);
    }

    /// Give the slot back (worker gone).
    pub fn release(&self) {
        self.front_reading.store(0, Relaxed);
        self.front_idle.store(0, Relaxed);
        self.front_queued.store(0, Relaxed);
        self.set_state(WorkerState::Free);
        self.pid.store(0, Relaxed);
    }
}

/// Where one pool lives inside the mapping.
#[derive(Clone, Copy, Debug)]
struct PoolLayout {
    board_offset: usize,
    slots_offset: usize,
    slot_count: usize,
}

/// The whole scoreboard: every pool's board and slots in one mapping.
pub struct Scoreboard {
    map: SharedMapping,
    pools: Vec<PoolLayout>,
}

impl Scoreboard {
    /// Lay out `slot_counts[i]` worker slots for pool `i` in a fresh zeroed mapping.
    pub fn create(slot_counts: &[usize]) -> std::io::Result<Self> {
        let (pools, len) = layout(slot_counts);
        let map = SharedMapping::create("fastpm-scoreboard", len)?;
        let board = Self { map, pools };
        let now = now_us() / 1_000_000;
        for i in 0..board.pools.len() {
            board.pool(i).start_time.store(now, Relaxed);
            board.pool(i).listen_drops.store(UNKNOWN, Relaxed);
        }
        Ok(board)
    }

    /// Map the scoreboard a master created (a worker process after exec): `fd` is the inherited
    /// memfd, `slot_counts` the layout the master used.
    pub fn attach(fd: std::os::fd::OwnedFd, slot_counts: &[usize]) -> std::io::Result<Self> {
        let (pools, len) = layout(slot_counts);
        let map = SharedMapping::map(fd, len)?;
        Ok(Self { map, pools })
    }

    pub fn pool_count(&self) -> usize {
        self.pools.len()
    }

    pub fn pool(&self, index: usize) -> &PoolBoard {
        &self
            .map
            .slice_at::<PoolBoard>(self.pools[index].board_offset, 1)[0]
    }

    pub fn slots(&self, index: usize) -> &[WorkerSlot] {
        let p = self.pools[index];
        self.map
            .slice_at::<WorkerSlot>(p.slots_offset, p.slot_count)
    }

    /// Count (idle, active) workers of a pool from its slots.
    pub fn idle_active(&self, index: usize) -> (u64, u64) {
        count_idle_active(self.slots(index))
    }

    /// The raw descriptor of the mapping, for handing to worker processes.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.map.raw_fd()
    }
}

fn layout(slot_counts: &[usize]) -> (Vec<PoolLayout>, usize) {
    let mut offset = 0;
    let mut pools = Vec::with_capacity(slot_counts.len());
    for &slot_count in slot_counts {
        let board_offset = offset;
        offset += std::mem::size_of::<PoolBoard>();
        let slots_offset = offset;
        offset += slot_count * std::mem::size_of::<WorkerSlot>();
        pools.push(PoolLayout {
            board_offset,
            slots_offset,
            slot_count,
        });
    }
    (pools, offset)
}

/// (idle, active) workers among `slots`, as php-fpm counts them: every non-idle worker in use
/// is active; free slots count as neither.
pub fn count_idle_active(slots: &[WorkerSlot]) -> (u64, u64) {
    slots
        .iter()
        .fold((0, 0), |(idle, active), slot| match slot.state() {
            WorkerState::Free => (idle, active),
            WorkerState::Idle => (idle + 1, active),
            _ => (idle, active + 1),
        })
}

/// Both clocks read at one moment: wall-clock for dates shown to people, monotonic for
/// durations (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Microseconds since the Unix epoch.
    pub wall_us: u64,
    /// [`monotonic_us`].
    pub monotonic_us: u64,
}

impl Clock {
    pub fn now() -> Self {
        Self {
            wall_us: now_us(),
            monotonic_us: monotonic_us(),
        }
    }
}

/// Wall-clock microseconds since the Unix epoch: for dates shown to people, never durations.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Raise `cell` to at least `value`.
pub fn raise_max(cell: &AtomicU64, value: u64) {
    cell.fetch_max(value, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_in_force_replace_those_at_start() {
        let scoreboard = Scoreboard::create(&[1]).unwrap();
        let board = scoreboard.pool(0);
        assert_eq!(board.max_children_or(4), 4);
        assert_eq!(
            board.client_timeout_or(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        board.set_limits(2, Duration::from_millis(1500));
        assert_eq!(board.max_children_or(4), 2);
        assert_eq!(
            board.client_timeout_or(Duration::from_secs(60)),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn pools_do_not_overlap_and_start_zeroed() {
        let board = Scoreboard::create(&[4, 2]).unwrap();
        board.pool(0).accepted_conn.fetch_add(5, Relaxed);
        assert_eq!(board.pool(1).accepted_conn.load(Relaxed), 0);
        assert_eq!(board.slots(0).len(), 4);
        assert_eq!(board.slots(1).len(), 2);
        assert_eq!(board.pool(1).listen_drops.load(Relaxed), UNKNOWN);
        assert_eq!(board.idle_active(0), (0, 0));
    }

    #[test]
    fn slot_texts_round_trip_and_truncate() {
        let board = Scoreboard::create(&[1]).unwrap();
        let slot = &board.slots(0)[0];
        slot.claim(42);
        let long_uri = vec![b'u'; 1000];
        slot.begin_request(b"POST", &long_uri, b"/srv/index.php");
        let t = slot.texts();
        assert_eq!(t.method, "POST");
        assert_eq!(t.uri.len(), AtomicText::<32>::CAPACITY);
        assert_eq!(t.script, "/srv/index.php");
        assert_eq!(slot.state(), WorkerState::Running);
        assert_eq!(board.idle_active(0), (0, 1));
        slot.end_request();
        assert_eq!(slot.requests.load(Relaxed), 1);
    }

    #[test]
    fn a_slot_left_mid_write_reads_again_after_claim() {
        let board = Scoreboard::create(&[1]).unwrap();
        let slot = &board.slots(0)[0];
        slot.claim(1);
        slot.begin_request(b"GET", b"/a", b"/srv/a.php");
        // The worker died between the two halves of a text update.
        slot.text_seq.fetch_add(1, Relaxed);
        assert_eq!(slot.texts(), RequestTexts::default(), "torn: unreadable");
        slot.claim(2);
        slot.begin_request(b"POST", b"/b", b"/srv/b.php");
        assert_eq!(slot.texts().uri, "/b");
    }
}
