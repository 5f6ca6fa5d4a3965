//! What fastpm counts goes through the `metrics` facade, and lands on the scoreboard.
//!
//! [`ScoreboardRecorder`] is a [`metrics::Recorder`] whose handles *are* scoreboard cells: a
//! `metrics::Counter` registered as `phpfpm_accepted_connections` increments the pool's
//! `accepted_conn` atomic in shared memory, a `fastpm_queue_wait_seconds` histogram records
//! into the pool's bucketed [`WaitHistogram`], a `fastpm_reading_connections` gauge with a
//! `slot` label stores into that worker slot. So worker processes record with the facade
//! (`counter!`, `histogram!`, `gauge!`) and the master reads the same cells (the status
//! snapshot) and renders them (`super::openmetrics`).
//!
//! Why handles registered once and kept ([`PoolMetrics`]) rather than `counter!(…)` at every
//! counting site: registering looks the name up and allocates the handle's `Arc`; an
//! `increment` on a kept handle is one dynamic call and one relaxed atomic add — no allocation,
//! no lock, nothing the request path would notice (measured in docs/BENCHMARKS.md).
//!
//! Why a recorder per pool passed with [`metrics::with_local_recorder`] and not a global one:
//! thread workers of several pools live in one process (the master), each pool's counts must
//! land on its own board, and library tests create many scoreboards in one process; a global
//! recorder can be installed once only.
//!
//! A name the recorder does not know gets a no-op handle and a warning — never a panic on a
//! worker — and [`ScoreboardRecorder::unknown_names`] counts them so a test can insist on none.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
    SharedString, Unit,
};

use crate::overload::WaitHistogram;
use crate::scoreboard::{PoolBoard, Scoreboard, WorkerSlot};

/// The metric names, shared by the counting sites (through [`PoolMetrics`]) and the
/// exposition (`super::openmetrics`), so a name cannot drift between where it is counted and
/// where it is shown. php-fpm's names are kept for what php-fpm also counts.
pub mod names {
    pub const ACCEPTED_CONNECTIONS: &str = "phpfpm_accepted_connections";
    pub const SLOW_REQUESTS: &str = "phpfpm_slow_requests";
    pub const MAX_CHILDREN_REACHED: &str = "phpfpm_max_children_reached";
    pub const SHED_REQUESTS: &str = "fastpm_shed_requests";
    pub const ABANDONED_REQUESTS: &str = "fastpm_abandoned_requests";
    pub const REFUSED_CLIENTS: &str = "fastpm_refused_clients";
    pub const PROTOCOL_ERRORS: &str = "fastpm_protocol_errors";
    pub const ACCEPT_ERRORS: &str = "fastpm_accept_errors";
    pub const QUEUE_WAIT: &str = "fastpm_queue_wait_seconds";
    pub const QUEUE_WAIT_UNKNOWN: &str = "fastpm_queue_wait_unknown";
    pub const QUEUE_WAIT_TCP_INFO: &str = "fastpm_tcp_info_queue_wait_seconds";
    pub const REQUEST_DURATION: &str = "fastpm_request_duration_seconds";
    pub const READING_CONNECTIONS: &str = "fastpm_reading_connections";
    pub const IDLE_KEPT_CONNECTIONS: &str = "fastpm_idle_kept_connections";
    pub const QUEUED_REQUESTS: &str = "fastpm_queued_requests";
    /// The label that names a worker slot on the per-slot gauges.
    pub const SLOT_LABEL: &str = "slot";
}

/// Where on a pool's board a counter lives.
type CounterCell = fn(&PoolBoard) -> &AtomicU64;

/// Which scoreboard cell a name is.
#[derive(Clone, Copy)]
enum Cell {
    /// A counter of the pool's board.
    Counter(CounterCell),
    /// A queue-wait histogram of the pool's board, recorded in seconds.
    Wait(fn(&PoolBoard) -> &WaitHistogram),
    /// The count of waits that could not be known, in that histogram.
    WaitUnknown(fn(&PoolBoard) -> &WaitHistogram),
    /// The app's service time: a count and a sum on the pool's board.
    ServiceTime,
    /// A gauge of one worker slot (`slot` label).
    SlotGauge(fn(&WorkerSlot) -> &AtomicU32),
}

const CELLS: &[(&str, Cell)] = &[
    (
        names::ACCEPTED_CONNECTIONS,
        Cell::Counter(|b| &b.accepted_conn),
    ),
    (names::SLOW_REQUESTS, Cell::Counter(|b| &b.slow_requests)),
    (
        names::MAX_CHILDREN_REACHED,
        Cell::Counter(|b| &b.max_children_reached),
    ),
    (names::SHED_REQUESTS, Cell::Counter(|b| &b.shed_requests)),
    (
        names::ABANDONED_REQUESTS,
        Cell::Counter(|b| &b.abandoned_requests),
    ),
    (
        names::REFUSED_CLIENTS,
        Cell::Counter(|b| &b.refused_clients),
    ),
    (
        names::PROTOCOL_ERRORS,
        Cell::Counter(|b| &b.protocol_errors),
    ),
    (names::ACCEPT_ERRORS, Cell::Counter(|b| &b.accept_errors)),
    (names::QUEUE_WAIT, Cell::Wait(|b| &b.queue_wait)),
    (
        names::QUEUE_WAIT_UNKNOWN,
        Cell::WaitUnknown(|b| &b.queue_wait),
    ),
    (
        names::QUEUE_WAIT_TCP_INFO,
        Cell::Wait(|b| &b.queue_wait_tcp_info),
    ),
    (names::REQUEST_DURATION, Cell::ServiceTime),
    (
        names::READING_CONNECTIONS,
        Cell::SlotGauge(|s| &s.front_reading),
    ),
    (
        names::IDLE_KEPT_CONNECTIONS,
        Cell::SlotGauge(|s| &s.front_idle),
    ),
    (names::QUEUED_REQUESTS, Cell::SlotGauge(|s| &s.front_queued)),
];

fn cell(name: &str) -> Option<Cell> {
    CELLS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

/// A pool's board in the shared mapping, kept alive by the handle that writes to it.
#[derive(Clone)]
struct BoardRef {
    scoreboard: Arc<Scoreboard>,
    pool: usize,
}

impl BoardRef {
    fn board(&self) -> &PoolBoard {
        self.scoreboard.pool(self.pool)
    }
}

struct BoardCounter {
    at: BoardRef,
    cell: CounterCell,
}

impl CounterFn for BoardCounter {
    fn increment(&self, value: u64) {
        (self.cell)(self.at.board()).fetch_add(value, Relaxed);
    }

    /// A counter never goes down: an older absolute value is ignored.
    fn absolute(&self, value: u64) {
        (self.cell)(self.at.board()).fetch_max(value, Relaxed);
    }
}

/// Seconds (what the facade's histograms take) to whole microseconds (what the board keeps);
/// `None` for a value that is not a duration (NaN, negative, infinite).
pub fn seconds_to_us(seconds: f64) -> Option<u64> {
    (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1e6).round() as u64)
}

struct WaitRecorder {
    at: BoardRef,
    cell: fn(&PoolBoard) -> &WaitHistogram,
}

impl HistogramFn for WaitRecorder {
    fn record(&self, seconds: f64) {
        (self.cell)(self.at.board()).record(seconds_to_us(seconds));
    }
}

struct WaitUnknown {
    at: BoardRef,
    cell: fn(&PoolBoard) -> &WaitHistogram,
}

impl CounterFn for WaitUnknown {
    fn increment(&self, value: u64) {
        (self.cell)(self.at.board()).record_unknown(value);
    }

    fn absolute(&self, _value: u64) {}
}

struct ServiceTime {
    at: BoardRef,
}

impl HistogramFn for ServiceTime {
    fn record(&self, seconds: f64) {
        if let Some(us) = seconds_to_us(seconds) {
            self.at.board().app_served(us);
        }
    }
}

struct SlotGauge {
    at: BoardRef,
    slot: usize,
    cell: fn(&WorkerSlot) -> &AtomicU32,
}

impl SlotGauge {
    fn cell(&self) -> &AtomicU32 {
        (self.cell)(&self.at.scoreboard.slots(self.at.pool)[self.slot])
    }
}

/// A gauge value as the slot's `u32` holds it: rounded, clamped to `0..=u32::MAX`.
fn gauge_u32(value: f64) -> u32 {
    if value.is_nan() {
        0
    } else {
        value.round().clamp(0.0, f64::from(u32::MAX)) as u32
    }
}

impl GaugeFn for SlotGauge {
    fn increment(&self, value: f64) {
        let by = gauge_u32(value);
        let _ = self
            .cell()
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_add(by)));
    }

    fn decrement(&self, value: f64) {
        let by = gauge_u32(value);
        let _ = self
            .cell()
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(by)));
    }

    fn set(&self, value: f64) {
        self.cell().store(gauge_u32(value), Relaxed);
    }
}

/// The `metrics` recorder of one pool: every handle it registers writes the pool's cells of
/// the scoreboard.
pub struct ScoreboardRecorder {
    at: BoardRef,
    /// Registrations of a name (or a slot) this recorder does not know.
    unknown: AtomicUsize,
}

impl ScoreboardRecorder {
    pub fn new(scoreboard: Arc<Scoreboard>, pool: usize) -> Self {
        Self {
            at: BoardRef { scoreboard, pool },
            unknown: AtomicUsize::new(0),
        }
    }

    /// How many registrations got a no-op handle (an unknown name, a bad `slot` label).
    pub fn unknown_names(&self) -> usize {
        self.unknown.load(Relaxed)
    }

    fn refuse(&self, key: &Key, kind: &str) {
        self.unknown.fetch_add(1, Relaxed);
        tracing::warn!(metric = %key.name(), kind, "metric not on the scoreboard: not recorded");
    }

    /// The slot a per-slot gauge's `slot` label names, when it exists.
    fn slot_of(&self, key: &Key) -> Option<usize> {
        let slot = key
            .labels()
            .find(|l| l.key() == names::SLOT_LABEL)?
            .value()
            .parse::<usize>()
            .ok()?;
        (slot < self.at.scoreboard.slots(self.at.pool).len()).then_some(slot)
    }
}

impl metrics::Recorder for ScoreboardRecorder {
    // Descriptions belong to the exposition (`super::openmetrics` keeps each family's help).
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let at = self.at.clone();
        match cell(key.name()) {
            Some(Cell::Counter(cell)) => Counter::from_arc(Arc::new(BoardCounter { at, cell })),
            Some(Cell::WaitUnknown(cell)) => Counter::from_arc(Arc::new(WaitUnknown { at, cell })),
            _ => {
                self.refuse(key, "counter");
                Counter::noop()
            }
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match (cell(key.name()), self.slot_of(key)) {
            (Some(Cell::SlotGauge(cell)), Some(slot)) => Gauge::from_arc(Arc::new(SlotGauge {
                at: self.at.clone(),
                slot,
                cell,
            })),
            _ => {
                self.refuse(key, "gauge");
                Gauge::noop()
            }
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let at = self.at.clone();
        match cell(key.name()) {
            Some(Cell::Wait(cell)) => Histogram::from_arc(Arc::new(WaitRecorder { at, cell })),
            Some(Cell::ServiceTime) => Histogram::from_arc(Arc::new(ServiceTime { at })),
            _ => {
                self.refuse(key, "histogram");
                Histogram::noop()
            }
        }
    }
}

/// The handles a pool's workers, fronts and master count with, registered once per pool (and
/// per process) through the pool's [`ScoreboardRecorder`].
pub struct PoolMetrics {
    /// Requests a worker took (php-fpm's `accepted conn`).
    pub accepted_conn: Counter,
    pub slow_requests: Counter,
    /// The pool wanted more workers than `max_children` (the master's pm).
    pub max_children_reached: Counter,
    pub shed_requests: Counter,
    pub abandoned_requests: Counter,
    /// TCP peers refused by `allowed_clients`.
    pub refused_clients: Counter,
    /// Connections closed for malformed or over-limit FastCGI input.
    pub protocol_errors: Counter,
    pub accept_errors: Counter,
    /// Time in the kernel's accept queue, per accepted connection.
    pub queue_wait: Histogram,
    /// Accepted connections whose queue wait could not be known.
    pub queue_wait_unknown: Counter,
    /// TCP: the same wait as the kernel reports it (`tcpi_last_data_recv`).
    pub queue_wait_tcp_info: Histogram,
    /// Time a worker spent on each request the app ran, from taking it to answering it (the
    /// service time of the backlog advice).
    pub request_duration: Histogram,
}

/// A front's gauges (`reading connections`, `idle kept connections`, `queued requests`), in
/// the worker slot it publishes in.
pub struct FrontGauges {
    pub reading: Gauge,
    pub idle: Gauge,
    /// Set by the handoff on every push and take, not by the front's tick: a queue drains in
    /// microseconds, a tick is 100 ms.
    pub queued: Gauge,
}

impl FrontGauges {
    /// Register the gauges of pool `pool`'s front that publishes in worker slot `slot`.
    pub fn register(scoreboard: &Arc<Scoreboard>, pool: usize, slot: usize) -> Self {
        use metrics::gauge;
        let recorder = ScoreboardRecorder::new(Arc::clone(scoreboard), pool);
        let slot = slot.to_string();
        let gauges = metrics::with_local_recorder(&recorder, || FrontGauges {
            reading: gauge!(names::READING_CONNECTIONS, names::SLOT_LABEL => slot.clone()),
            idle: gauge!(names::IDLE_KEPT_CONNECTIONS, names::SLOT_LABEL => slot.clone()),
            queued: gauge!(names::QUEUED_REQUESTS, names::SLOT_LABEL => slot),
        });
        debug_assert_eq!(recorder.unknown_names(), 0, "no such slot");
        gauges
    }
}

impl PoolMetrics {
    /// Register pool `pool`'s handles on `scoreboard`.
    pub fn register(scoreboard: &Arc<Scoreboard>, pool: usize) -> Self {
        use metrics::{counter, histogram};
        let recorder = ScoreboardRecorder::new(Arc::clone(scoreboard), pool);
        let handles = metrics::with_local_recorder(&recorder, || PoolMetrics {
            accepted_conn: counter!(names::ACCEPTED_CONNECTIONS),
            slow_requests: counter!(names::SLOW_REQUESTS),
            max_children_reached: counter!(names::MAX_CHILDREN_REACHED),
            shed_requests: counter!(names::SHED_REQUESTS),
            abandoned_requests: counter!(names::ABANDONED_REQUESTS),
            refused_clients: counter!(names::REFUSED_CLIENTS),
            protocol_errors: counter!(names::PROTOCOL_ERRORS),
            accept_errors: counter!(names::ACCEPT_ERRORS),
            queue_wait: histogram!(names::QUEUE_WAIT),
            queue_wait_unknown: counter!(names::QUEUE_WAIT_UNKNOWN),
            queue_wait_tcp_info: histogram!(names::QUEUE_WAIT_TCP_INFO),
            request_duration: histogram!(names::REQUEST_DURATION),
        });
        debug_assert_eq!(
            recorder.unknown_names(),
            0,
            "a PoolMetrics name is not on the scoreboard"
        );
        handles
    }

    /// One accepted connection's queue wait, or that it is unknown.
    pub fn record_queue_wait(&self, wait_us: Option<u64>) {
        match wait_us {
            Some(us) => self.queue_wait.record(Duration::from_micros(us)),
            None => self.queue_wait_unknown.increment(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::Recorder;

    fn read(cell: &AtomicU64) -> u64 {
        cell.load(Relaxed)
    }

    #[test]
    fn every_handle_writes_its_own_cell_of_its_own_pool() {
        let scoreboard = Arc::new(Scoreboard::create(&[2, 3]).unwrap());
        let m = PoolMetrics::register(&scoreboard, 1);
        let counters: [(&Counter, CounterCell); 8] = [
            (&m.accepted_conn, |b| &b.accepted_conn),
            (&m.slow_requests, |b| &b.slow_requests),
            (&m.max_children_reached, |b| &b.max_children_reached),
            (&m.shed_requests, |b| &b.shed_requests),
            (&m.abandoned_requests, |b| &b.abandoned_requests),
            (&m.refused_clients, |b| &b.refused_clients),
            (&m.protocol_errors, |b| &b.protocol_errors),
            (&m.accept_errors, |b| &b.accept_errors),
        ];
        for (i, (handle, cell)) in counters.iter().enumerate() {
            handle.increment(i as u64 + 1);
            assert_eq!(read(cell(scoreboard.pool(1))), i as u64 + 1, "counter {i}");
            assert_eq!(read(cell(scoreboard.pool(0))), 0, "counter {i}: other pool");
        }
        m.record_queue_wait(Some(1_500));
        m.record_queue_wait(None);
        m.queue_wait_tcp_info.record(Duration::from_millis(3));
        let wait = scoreboard.pool(1).queue_wait.snapshot();
        assert_eq!((wait.count, wait.sum_us, wait.max_us), (1, 1_500, 1_500));
        assert_eq!(scoreboard.pool(1).queue_wait.unknown(), 1);
        assert_eq!(
            scoreboard.pool(1).queue_wait_tcp_info.snapshot().sum_us,
            3_000
        );
        m.request_duration.record(Duration::from_millis(50));
        m.request_duration.record(Duration::from_micros(49_500));
        let board = scoreboard.pool(1);
        assert_eq!(
            (read(&board.served_requests), read(&board.service_time_us)),
            (2, 99_500)
        );

        let front = FrontGauges::register(&scoreboard, 1, 2);
        front.reading.set(7.0);
        front.idle.increment(3.0);
        front.idle.decrement(5.0);
        assert_eq!(scoreboard.slots(1)[2].front_reading.load(Relaxed), 7);
        assert_eq!(
            scoreboard.slots(1)[2].front_idle.load(Relaxed),
            0,
            "never below zero"
        );
        assert_eq!(scoreboard.slots(1)[0].front_reading.load(Relaxed), 0);
    }

    #[test]
    fn unknown_names_and_slots_get_no_op_handles() {
        let scoreboard = Arc::new(Scoreboard::create(&[2]).unwrap());
        let recorder = ScoreboardRecorder::new(Arc::clone(&scoreboard), 0);
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("fastpm_no_such_thing").increment(1);
            metrics::gauge!(names::READING_CONNECTIONS, names::SLOT_LABEL => "9").set(1.0);
            metrics::gauge!(names::READING_CONNECTIONS).set(1.0);
            // A counter's name asked for as a histogram is not that cell either.
            metrics::histogram!(names::ACCEPTED_CONNECTIONS).record(1.0);
        });
        assert_eq!(recorder.unknown_names(), 4);
        assert_eq!(read(&scoreboard.pool(0).accepted_conn), 0);
        let key = Key::from_static_name(names::SHED_REQUESTS);
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        recorder.register_counter(&key, &meta).absolute(5);
        recorder.register_counter(&key, &meta).absolute(3);
        assert_eq!(
            read(&scoreboard.pool(0).shed_requests),
            5,
            "a counter never goes down"
        );
    }

    #[test]
    fn conversions() {
        for (seconds, want) in [
            (0.0, Some(0)),
            (0.0015, Some(1_500)),
            (2.5, Some(2_500_000)),
            (-1.0, None),
            (f64::NAN, None),
            (f64::INFINITY, None),
        ] {
            assert_eq!(seconds_to_us(seconds), want, "{seconds}");
        }
        for (value, want) in [(3.4, 3), (-2.0, 0), (f64::NAN, 0), (1e12, u32::MAX)] {
            assert_eq!(gauge_u32(value), want, "{value}");
        }
    }

    #[test]
    fn every_cell_name_is_unique() {
        let mut seen: Vec<&str> = CELLS.iter().map(|(n, _)| *n).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), CELLS.len());
    }
}
