//! One pool's status at one instant: [`PoolSnapshot`], read from the scoreboard without taking
//! any lock, plus the ordered list of its fields that every renderer walks.
//!
//! Why one snapshot and a field list: text, JSON, XML and HTML must show the same keys in the
//! same order (php-fpm's first, then fastpm's, DESIGN.md §5). Keeping the order and the spelling
//! in [`PoolSnapshot::fields`] alone means a key cannot appear in one format and be forgotten in
//! another.

use std::sync::atomic::Ordering::Relaxed;

use super::advice::BacklogAdvice;
use crate::overload::HistogramSnapshot;
use crate::scoreboard::{Clock, PoolBoard, WorkerSlot, WorkerState, UNKNOWN};

/// Static facts about a pool that the scoreboard does not hold; the master fills them in from
/// the configuration (and `/proc` for `somaxconn`) once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolInfo {
    /// Pool name (`pool`).
    pub name: String,
    /// `static`, `dynamic` or `ondemand` (`process manager`).
    pub process_manager: String,
    /// The configured listen address as written, e.g. `unix:/tmp/fastpm/www.sock`
    /// (`listen address`).
    pub listen_address: String,
    /// The backlog fastpm passed to `listen()` (`listen backlog`); compare it with
    /// `listen queue len`, what the kernel really holds, to see a clamp.
    pub listen_backlog: u32,
    /// `net.core.somaxconn` of the pool's network namespace, when it could be read
    /// (`somaxconn`): the number the backlog is clamped to.
    pub somaxconn: Option<u32>,
    /// Configured `max_children`: not a php-fpm status key, but dashboards and the OpenMetrics
    /// output need it to show how close the pool is to saturation.
    pub max_children: u32,
}

/// The broker of held requests as the master's `/status` shows it (DESIGN.md §8): which one,
/// whether the master can reach it now (always true for `memory`), and what the master
/// published through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerStatus {
    /// The config's spelling: `memory`, `redis://127.0.0.1:6379`, `unix:/run/redis.sock`.
    pub broker: String,
    /// Held requests stay held while it is false; publishes answer 503.
    pub connected: bool,
    /// Messages published through the master's `POST /publish/` (`messages published`); a
    /// `longpoll` pool's `pub` path counts on its pool instead, so the two never overlap.
    pub messages_published: u64,
}

/// Queue-wait statistics computed by the queue-wait accounting (a separate module); passed in
/// so the snapshot does not depend on how they are computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueueWait {
    /// Median time a connection waited in the kernel accept queue, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Longest wait seen, milliseconds.
    pub max_ms: f64,
}

impl QueueWait {
    /// The figures of a histogram: `None` until a first wait was recorded.
    pub fn from_histogram(h: &HistogramSnapshot) -> Option<QueueWait> {
        Some(QueueWait {
            p50_ms: h.quantile_ms(0.5)?,
            p99_ms: h.quantile_ms(0.99)?,
            max_ms: h.max_us as f64 / 1000.0,
        })
    }
}

/// One worker's row of `?full` (php-fpm's per-process block).
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessSnapshot {
    pub pid: u32,
    /// php-fpm's state name ([`WorkerState::label`]).
    pub state: &'static str,
    /// Unix seconds when the worker started.
    pub start_time: u64,
    /// Seconds since the worker started.
    pub start_since: u64,
    /// Requests served by the worker.
    pub requests: u64,
    /// Microseconds: for a request in progress, how long it has run so far; otherwise the
    /// duration of the last request (php-fpm's rule).
    pub request_duration_us: u64,
    /// `-` when the worker has not seen a request yet (php-fpm shows `-` for empty texts).
    pub request_method: String,
    /// Request URI as the worker recorded it; `-` when empty.
    pub request_uri: String,
    /// Not recorded by fastpm's scoreboard: always 0 (kept so php-fpm readers find the key).
    pub content_length: u64,
    /// Not recorded (no HTTP auth user in FastCGI params we keep): always `-`.
    pub user: String,
    /// Script file name; `-` when empty.
    pub script: String,
    /// Not measured by fastpm: 0.00, as php-fpm shows for a busy worker.
    pub last_request_cpu: f64,
    /// Not measured by fastpm: 0.
    pub last_request_memory: u64,
}

/// Everything the status page shows about one pool. Field names follow DESIGN.md §5; see
/// [`PoolSnapshot::fields`] for the exact keys.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolSnapshot {
    pub pool: String,
    pub process_manager: String,
    /// Unix seconds when the pool started.
    pub start_time: u64,
    /// Seconds since the pool started.
    pub start_since: u64,
    pub accepted_conn: u64,
    /// Connections waiting in the kernel accept queue at the last sample.
    pub listen_queue: u64,
    pub max_listen_queue: u64,
    /// Effective backlog as the kernel holds it.
    pub listen_queue_len: u64,
    pub idle_processes: u64,
    pub active_processes: u64,
    pub total_processes: u64,
    pub max_active_processes: u64,
    pub max_children_reached: u64,
    pub slow_requests: u64,
    pub listen_address: String,
    pub listen_backlog: u32,
    pub somaxconn: Option<u32>,
    /// `listen drops` (when known) + `shed requests` + clients refused by `allowed_clients`
    /// + requests refused by `max_held`.
    pub rejected_conn: u64,
    /// `None` where the kernel counts no drops (unix sockets): shown as `null`, never as 0,
    /// so nobody reads "no drops" into "not measured".
    pub listen_drops: Option<u64>,
    pub queue_full_samples: u64,
    pub shed_requests: u64,
    pub abandoned_requests: u64,
    /// TCP peers refused by `allowed_clients` (part of `rejected conn`; `/metrics` only).
    pub refused_clients: u64,
    /// Connections closed for malformed or over-limit FastCGI input (`/metrics` only).
    pub protocol_errors: u64,
    /// Requests the app ran to the end, and the microseconds it took over them: the service
    /// time (`/metrics` only, as `fastpm_request_duration_seconds`).
    pub served_requests: u64,
    pub service_time_us: u64,
    /// accept() failures a worker backed off from (EMFILE, ENFILE, ENOBUFS, ENOMEM).
    pub accept_errors: u64,
    /// Complete requests the pool's fronts read, waiting for an executor, a gauge: fastpm's
    /// own queue, after the kernel's (`listen queue`). Queue wait covers both.
    pub queued_requests: u64,
    /// Connections the pool's fronts are reading a request from (DESIGN.md §8), a gauge.
    pub reading_connections: u64,
    /// Kept connections idle in the pool's fronts between requests, a gauge.
    pub idle_kept_connections: u64,
    /// Requests of the pool held by the master, waiting for a message (DESIGN.md §8), a gauge.
    pub held_requests: u64,
    /// Highest `held requests` since start.
    pub max_held_requests: u64,
    /// Channels with at least one of the pool's requests held on them, a gauge.
    pub channels: u64,
    pub messages_published: u64,
    /// Held requests answered with a message.
    pub messages_delivered: u64,
    /// Held requests answered with their timeout response.
    pub held_timeouts: u64,
    /// Held requests whose client left before the answer (`held clients gone`).
    pub held_gone: u64,
    /// `None` until the queue-wait accounting supplies numbers.
    pub queue_wait: Option<QueueWait>,
    /// TCP pools: the same wait from `tcpi_last_data_recv` (the cross-check); `None` on unix.
    pub queue_wait_tcp_info: Option<QueueWait>,
    /// The queue-wait histogram as the pool's board holds it (for `/metrics`); not a §5 key.
    pub queue_wait_histogram: HistogramSnapshot,
    /// The backlog advice (`service rate`, `advised backlog`, `backlog advice`): only the
    /// master has the history it is measured from, so a pool's own `status_path` (answered by
    /// a worker) shows it unknown.
    pub backlog_advice: Option<BacklogAdvice>,
    /// From [`PoolInfo::max_children`]; not a §5 key (left out of text/JSON), used by the
    /// dashboard and OpenMetrics.
    pub max_children: u32,
    /// Per-worker rows; `Some` only when `full` was asked for.
    pub processes: Option<Vec<ProcessSnapshot>>,
}

/// A field's value, typed so each renderer can spell it its own way (php-fpm prints the start
/// time as a date in text/HTML and as Unix seconds in JSON/XML).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValue<'a> {
    Text(&'a str),
    Count(u64),
    /// A count that may be unknown (`null` in JSON, `-` in text).
    MaybeCount(Option<u64>),
    /// Unix seconds.
    Time(u64),
    /// Milliseconds that may be unknown.
    MaybeMillis(Option<f64>),
    /// Another measured quantity that may be unknown (`service rate`, requests per second).
    MaybeDecimal(Option<f64>),
    /// php-fpm's `%.2f` percentage (`last request cpu`).
    Percent(f64),
}

/// One key and its value. `key` is php-fpm's text spelling; JSON, XML and HTML use the
/// lowercase form (php-fpm writes `request URI:` in text but `"request uri"` in JSON).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Field<'a> {
    pub key: &'static str,
    pub value: FieldValue<'a>,
}

const fn field<'a>(key: &'static str, value: FieldValue<'a>) -> Field<'a> {
    Field { key, value }
}

impl PoolSnapshot {
    /// Read a pool's board and slots now, with the queue-wait figures of the board's
    /// histogram.
    pub fn collect(
        info: &PoolInfo,
        board: &PoolBoard,
        slots: &[WorkerSlot],
        full: bool,
    ) -> PoolSnapshot {
        let wait = QueueWait::from_histogram(&board.queue_wait.snapshot());
        Self::collect_with(info, board, slots, full, wait, Clock::now())
    }

    /// [`collect`](Self::collect) with the queue-wait figures (when the accounting has them)
    /// and the clock passed in, so tests can fix the time.
    pub fn collect_with(
        info: &PoolInfo,
        board: &PoolBoard,
        slots: &[WorkerSlot],
        full: bool,
        queue_wait: Option<QueueWait>,
        now: Clock,
    ) -> PoolSnapshot {
        let now_s = now.wall_us / 1_000_000;
        let (idle, active) = crate::scoreboard::count_idle_active(slots);
        let listen_queue = board.listen_queue.load(Relaxed);
        let start_time = board.start_time.load(Relaxed);
        let listen_drops = known(board.listen_drops.load(Relaxed));
        let held_requests = board.held_requests.load(Relaxed);
        PoolSnapshot {
            pool: info.name.clone(),
            process_manager: info.process_manager.clone(),
            start_time,
            start_since: now_s.saturating_sub(start_time),
            accepted_conn: board.accepted_conn.load(Relaxed),
            listen_queue,
            // The sampler raises the maximum, but a reader must never show max < current.
            max_listen_queue: board.max_listen_queue.load(Relaxed).max(listen_queue),
            listen_queue_len: board.listen_queue_len.load(Relaxed),
            idle_processes: idle,
            active_processes: active,
            total_processes: idle + active,
            max_active_processes: board.max_active_processes.load(Relaxed).max(active),
            max_children_reached: board.max_children_reached.load(Relaxed),
            slow_requests: board.slow_requests.load(Relaxed),
            listen_address: info.listen_address.clone(),
            listen_backlog: board.backlog_or(info.listen_backlog),
            somaxconn: info.somaxconn,
            rejected_conn: board_rejected_conn(board),
            listen_drops,
            queue_full_samples: board.queue_full_samples.load(Relaxed),
            shed_requests: board.shed_requests.load(Relaxed),
            abandoned_requests: board.abandoned_requests.load(Relaxed),
            refused_clients: board.refused_clients.load(Relaxed),
            protocol_errors: board.protocol_errors.load(Relaxed),
            served_requests: board.served_requests.load(Relaxed),
            service_time_us: board.service_time_us.load(Relaxed),
            accept_errors: board.accept_errors.load(Relaxed),
            queued_requests: slots
                .iter()
                .map(|s| u64::from(s.front_queued.load(Relaxed)))
                .sum(),
            reading_connections: slots
                .iter()
                .map(|s| u64::from(s.front_reading.load(Relaxed)))
                .sum(),
            idle_kept_connections: slots
                .iter()
                .map(|s| u64::from(s.front_idle.load(Relaxed)))
                .sum(),
            held_requests,
            // The holder raises the maximum, but a reader must never show max < current.
            max_held_requests: board.max_held_requests.load(Relaxed).max(held_requests),
            channels: board.held_channels.load(Relaxed),
            messages_published: board.messages_published.load(Relaxed),
            messages_delivered: board.messages_delivered.load(Relaxed),
            held_timeouts: board.held_timeouts.load(Relaxed),
            held_gone: board.held_gone.load(Relaxed),
            queue_wait,
            queue_wait_tcp_info: QueueWait::from_histogram(&board.queue_wait_tcp_info.snapshot()),
            queue_wait_histogram: board.queue_wait.snapshot(),
            backlog_advice: None,
            max_children: board.max_children_or(info.max_children),
            processes: full.then(|| {
                slots
                    .iter()
                    .filter_map(|slot| ProcessSnapshot::collect(slot, now))
                    .collect()
            }),
        }
    }

    /// The pool's keys in php-fpm's order, then fastpm's (DESIGN.md §5). `processes` is not a
    /// field: renderers show it after these.
    pub fn fields(&self) -> Vec<Field<'_>> {
        use FieldValue::*;
        let wait = |pick: fn(&QueueWait) -> f64| MaybeMillis(self.queue_wait.as_ref().map(pick));
        let tcp =
            |pick: fn(&QueueWait) -> f64| MaybeMillis(self.queue_wait_tcp_info.as_ref().map(pick));
        let advice = self.backlog_advice.as_ref();
        vec![
            field("pool", Text(&self.pool)),
            field("process manager", Text(&self.process_manager)),
            field("start time", Time(self.start_time)),
            field("start since", Count(self.start_since)),
            field("accepted conn", Count(self.accepted_conn)),
            field("listen queue", Count(self.listen_queue)),
            field("max listen queue", Count(self.max_listen_queue)),
            field("listen queue len", Count(self.listen_queue_len)),
            field("idle processes", Count(self.idle_processes)),
            field("active processes", Count(self.active_processes)),
            field("total processes", Count(self.total_processes)),
            field("max active processes", Count(self.max_active_processes)),
            field("max children reached", Count(self.max_children_reached)),
            field("slow requests", Count(self.slow_requests)),
            field("listen address", Text(&self.listen_address)),
            field("listen backlog", Count(u64::from(self.listen_backlog))),
            field("somaxconn", MaybeCount(self.somaxconn.map(u64::from))),
            field("rejected conn", Count(self.rejected_conn)),
            field("listen drops", MaybeCount(self.listen_drops)),
            field("queue full samples", Count(self.queue_full_samples)),
            field("shed requests", Count(self.shed_requests)),
            field("abandoned requests", Count(self.abandoned_requests)),
            field("accept errors", Count(self.accept_errors)),
            field("queued requests", Count(self.queued_requests)),
            field("reading connections", Count(self.reading_connections)),
            field("idle kept connections", Count(self.idle_kept_connections)),
            field("held requests", Count(self.held_requests)),
            field("max held requests", Count(self.max_held_requests)),
            field("channels", Count(self.channels)),
            field("messages published", Count(self.messages_published)),
            field("messages delivered", Count(self.messages_delivered)),
            field("held timeouts", Count(self.held_timeouts)),
            field("held clients gone", Count(self.held_gone)),
            field("queue wait p50 ms", wait(|w| w.p50_ms)),
            field("queue wait p99 ms", wait(|w| w.p99_ms)),
            field("queue wait max ms", wait(|w| w.max_ms)),
            field("tcp_info wait p50 ms", tcp(|w| w.p50_ms)),
            field("tcp_info wait p99 ms", tcp(|w| w.p99_ms)),
            field("tcp_info wait max ms", tcp(|w| w.max_ms)),
            field(
                "service rate",
                MaybeDecimal(advice.and_then(|a| a.rate).map(|r| r.per_second)),
            ),
            field(
                "advised backlog",
                MaybeCount(advice.and_then(|a| a.advised)),
            ),
            field(
                "backlog advice",
                Text(advice.map_or("-", |a| a.sentence.as_str())),
            ),
            field(
                "backlog warning",
                MaybeCount(advice.map(|a| u64::from(a.warns()))),
            ),
        ]
    }
}

impl ProcessSnapshot {
    /// A slot's row, or `None` for a free slot.
    pub fn collect(slot: &WorkerSlot, now: Clock) -> Option<ProcessSnapshot> {
        let state = slot.state();
        if state == WorkerState::Free {
            return None;
        }
        let started_us = slot.started_us.load(Relaxed);
        let request_start_us = slot.request_start_us.load(Relaxed);
        let texts = slot.texts();
        Some(ProcessSnapshot {
            pid: slot.pid.load(Relaxed),
            state: state.label(),
            start_time: started_us / 1_000_000,
            start_since: (now.wall_us / 1_000_000).saturating_sub(started_us / 1_000_000),
            requests: slot.requests.load(Relaxed),
            request_duration_us: request_duration_us(
                state,
                request_start_us,
                slot.last_duration_us.load(Relaxed),
                now.monotonic_us,
            ),
            request_method: dash_if_empty(texts.method),
            request_uri: dash_if_empty(texts.uri),
            content_length: 0,
            user: "-".to_string(),
            script: dash_if_empty(texts.script),
            last_request_cpu: 0.0,
            last_request_memory: 0,
        })
    }

    /// The row's keys in php-fpm 8.2's order.
    pub fn fields(&self) -> Vec<Field<'_>> {
        use FieldValue::*;
        vec![
            field("pid", Count(u64::from(self.pid))),
            field("state", Text(self.state)),
            field("start time", Time(self.start_time)),
            field("start since", Count(self.start_since)),
            field("requests", Count(self.requests)),
            field("request duration", Count(self.request_duration_us)),
            field("request method", Text(&self.request_method)),
            field("request URI", Text(&self.request_uri)),
            field("content length", Count(self.content_length)),
            field("user", Text(&self.user)),
            field("script", Text(&self.script)),
            field("last request cpu", Percent(self.last_request_cpu)),
            field("last request memory", Count(self.last_request_memory)),
        ]
    }
}

/// `rejected conn` as `board` holds it now (the snapshot and the history read it alike):
/// `refused` is the clients refused by `allowed_clients` plus the requests refused by `max_held`.
pub fn board_rejected_conn(board: &PoolBoard) -> u64 {
    rejected_conn(
        known(board.listen_drops.load(Relaxed)),
        board.shed_requests.load(Relaxed),
        board
            .refused_clients
            .load(Relaxed)
            .saturating_add(board.held_refused.load(Relaxed)),
    )
}

/// `rejected conn`: every connection turned away, by the kernel (when it counts) or by fastpm.
pub fn rejected_conn(listen_drops: Option<u64>, shed: u64, refused: u64) -> u64 {
    listen_drops
        .unwrap_or(0)
        .saturating_add(shed)
        .saturating_add(refused)
}

/// php-fpm's rule: a worker inside a request shows how long it has run so far; an idle one (or
/// one still reading the next request's headers, whose start time is not yet recorded) shows
/// the last request's duration.
pub fn request_duration_us(state: WorkerState, start_us: u64, last_us: u64, now_us: u64) -> u64 {
    match state {
        WorkerState::Running | WorkerState::Finishing if start_us != 0 => {
            now_us.saturating_sub(start_us)
        }
        _ => last_us,
    }
}

fn known(value: u64) -> Option<u64> {
    (value != UNKNOWN).then_some(value)
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_conn_adds_drops_only_when_known() {
        let table = [
            (None, 0, 0, 0),
            (None, 3, 2, 5),
            (Some(7), 3, 2, 12),
            (Some(0), 0, 1, 1),
            (Some(u64::MAX - 1), 5, 0, u64::MAX),
        ];
        for (drops, shed, refused, want) in table {
            assert_eq!(
                rejected_conn(drops, shed, refused),
                want,
                "{drops:?} {shed} {refused}"
            );
        }
    }

    #[test]
    fn request_duration_follows_php_fpm_rule() {
        use WorkerState::*;
        let table = [
            (Running, 1_000, 50, 4_000, 3_000),
            (Finishing, 1_000, 50, 4_000, 3_000),
            (Running, 0, 50, 4_000, 50),
            (Idle, 1_000, 50, 4_000, 50),
            (Reading, 1_000, 50, 4_000, 50),
            (Running, 5_000, 50, 4_000, 0),
        ];
        for (state, start, last, now, want) in table {
            assert_eq!(
                request_duration_us(state, start, last, now),
                want,
                "{state:?}"
            );
        }
    }
}
