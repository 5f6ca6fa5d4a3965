//! The master's recent history (DESIGN.md §5 "History"): per pool, the last [`SECONDS`]
//! seconds at one-second resolution, so a burst that came and went is still visible on the
//! dashboard (`/`), in `fastpm status --watch` and at `/history?json[&pool=NAME][&seconds=N]`.
//!
//! What one second holds ([`Second`]): the queue as the **maximum** of every sampler reading
//! within the second (the sampler reads every 2–20 ms; a one-second "last value" would miss
//! most bursts), the busiest `active processes` seen, `total processes` and `listen queue len`
//! at the second's end, the queue-wait p99 of the connections accepted *within* that second
//! (the histogram's per-second delta; `null` when none was accepted), and the counters
//! (`accepted conn`, `rejected conn`, `shed requests`, `abandoned requests`) as per-second
//! deltas; so are the requests the app finished and the time it took over them (`app runs`,
//! from which the backlog advice, [`super::advice`], measures the pool's service rate).
//!
//! `held requests` (DESIGN.md §8) is the maximum of the pool's held-request gauge read at every
//! sampler tick of the second (the master's holder writes the gauge; [`Recorder::roll`] reads
//! it, so the sampler needs no change to carry it). The dashboard draws it once it is non-zero.
//!
//! Who does what: the queue sampler thread ([`crate::probe::sampler`]) owns a [`Recorder`]. It
//! calls [`Recorder::observe`] with every reading and [`Recorder::roll`] every tick; `roll`
//! closes a second once the monotonic clock has left it and pushes it into the pool's [`Ring`]
//! behind a mutex taken once per second. The HTTP listener takes the same mutex to render.
//! Everything here but [`Recorder::roll`]'s reads of the scoreboard is pure and table-tested.
//!
//! Storage: a [`Ring`] is allocated once, full size (900 × [`Second`], ≈ 80 KB per pool);
//! pushing a second never allocates.
//!
//! Time: seconds are counted on `CLOCK_MONOTONIC` and labelled with the wall-clock second they
//! correspond to at the master's start (`t` = start's Unix second + monotonic seconds since),
//! so `t` always increases by exactly one per slot even if the wall clock is stepped; a second
//! the sampler could not close in time (a stall longer than a second) is a gap: `null` gauges
//! and zero deltas, its counts land in the next closed second.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use crate::overload::HistogramSnapshot;
use crate::scoreboard::PoolBoard;

/// Seconds kept per pool: 15 minutes.
pub const SECONDS: usize = 900;

/// One pool's one second. Gauges are `None` when nothing was observed (a gap).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Second {
    /// Highest `listen queue` read within the second.
    pub listen_queue: Option<u32>,
    /// `listen queue len` (the effective backlog) at the last reading of the second.
    pub listen_queue_len: Option<u32>,
    /// Highest `active processes` seen within the second.
    pub active_processes: Option<u32>,
    /// `total processes` (idle + active) at the second's end.
    pub total_processes: Option<u32>,
    /// p99 queue wait, ms, of the connections accepted within the second.
    pub queue_wait_p99_ms: Option<f64>,
    /// Highest `held requests` read within the second.
    pub held_requests: Option<u32>,
    pub accepted_conn: u32,
    pub rejected_conn: u32,
    pub shed_requests: u32,
    pub abandoned_requests: u32,
    /// Requests the app ran to the end within the second (the pool's completions).
    pub app_runs: u32,
    /// Microseconds the workers spent on them.
    pub app_time_us: u64,
}

impl Second {
    /// A second nobody observed.
    pub const GAP: Second = Second {
        listen_queue: None,
        listen_queue_len: None,
        active_processes: None,
        total_processes: None,
        queue_wait_p99_ms: None,
        held_requests: None,
        accepted_conn: 0,
        rejected_conn: 0,
        shed_requests: 0,
        abandoned_requests: 0,
        app_runs: 0,
        app_time_us: 0,
    };
}

/// A fixed-size ring of seconds, newest last.
pub struct Ring {
    slots: Box<[Second]>,
    /// Index of the newest second (meaningful when `len > 0`).
    head: usize,
    len: usize,
    /// `t` of the newest second.
    newest_t: u64,
}

impl Ring {
    pub fn new(capacity: usize) -> Ring {
        Ring {
            slots: vec![Second::GAP; capacity.max(1)].into_boxed_slice(),
            head: 0,
            len: 0,
            newest_t: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The newest second and its `t`.
    pub fn newest(&self) -> Option<(u64, &Second)> {
        (self.len > 0).then(|| (self.newest_t, &self.slots[self.head]))
    }

    /// Record second `t`. Seconds between the newest and `t` become gaps; a `t` not after the
    /// newest is ignored (the sampler's clock is monotonic: it would be a wiring bug).
    pub fn push(&mut self, t: u64, second: Second) {
        if self.len > 0 {
            if t <= self.newest_t {
                return;
            }
            let missing = (t - self.newest_t - 1).min(self.slots.len() as u64);
            for _ in 0..missing {
                self.put(Second::GAP);
            }
        }
        self.put(second);
        self.newest_t = t;
    }

    fn put(&mut self, second: Second) {
        let capacity = self.slots.len();
        self.head = if self.len == 0 {
            0
        } else {
            (self.head + 1) % capacity
        };
        self.slots[self.head] = second;
        self.len = (self.len + 1).min(capacity);
    }

    /// The last `n` seconds (fewer when the ring holds fewer), oldest first, with their `t`.
    pub fn last(&self, n: usize) -> impl Iterator<Item = (u64, &Second)> + '_ {
        let n = n.min(self.len);
        let capacity = self.slots.len();
        let first = (self.head + capacity + 1 - n) % capacity;
        let first_t = self.newest_t + 1 - n as u64;
        (0..n).map(move |i| (first_t + i as u64, &self.slots[(first + i) % capacity]))
    }
}

/// Cumulative counters of a pool, read at a second's end; a [`Second`]'s counts are the
/// differences of two of these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub accepted_conn: u64,
    pub rejected_conn: u64,
    pub shed_requests: u64,
    pub abandoned_requests: u64,
    pub served_requests: u64,
    pub service_time_us: u64,
}

impl Counters {
    pub fn read(board: &PoolBoard) -> Counters {
        Counters {
            accepted_conn: board.accepted_conn.load(Relaxed),
            rejected_conn: super::snapshot::board_rejected_conn(board),
            shed_requests: board.shed_requests.load(Relaxed),
            abandoned_requests: board.abandoned_requests.load(Relaxed),
            served_requests: board.served_requests.load(Relaxed),
            service_time_us: board.service_time_us.load(Relaxed),
        }
    }

    /// The app's completions and their time since `earlier`: `(app runs, app time µs)`.
    pub fn service_since(&self, earlier: &Counters) -> (u32, u64) {
        let runs = self.served_requests.saturating_sub(earlier.served_requests);
        (
            u32::try_from(runs).unwrap_or(u32::MAX),
            self.service_time_us.saturating_sub(earlier.service_time_us),
        )
    }

    /// Per-second counts: `self − earlier`, never negative (a counter that went down — the
    /// kernel's drop count becoming unknown — counts 0), capped at `u32::MAX`.
    pub fn since(&self, earlier: &Counters) -> [u32; 4] {
        let d = |now: u64, then: u64| u32::try_from(now.saturating_sub(then)).unwrap_or(u32::MAX);
        [
            d(self.accepted_conn, earlier.accepted_conn),
            d(self.rejected_conn, earlier.rejected_conn),
            d(self.shed_requests, earlier.shed_requests),
            d(self.abandoned_requests, earlier.abandoned_requests),
        ]
    }
}

/// The gauges of the second being observed: maxima of what the sampler saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub listen_queue: Option<u32>,
    pub listen_queue_len: Option<u32>,
    pub active_processes: Option<u32>,
    pub held_requests: Option<u32>,
}

impl Gauges {
    /// One sampler tick: `reading` is `(queued, backlog)` when the probe answered.
    pub fn observe(&mut self, reading: Option<(u32, u32)>, active: u32) {
        if let Some((queued, backlog)) = reading {
            self.listen_queue = Some(self.listen_queue.map_or(queued, |q| q.max(queued)));
            self.listen_queue_len = Some(backlog);
        }
        self.active_processes = Some(self.active_processes.map_or(active, |a| a.max(active)));
    }

    /// One reading of the pool's `held requests` gauge.
    pub fn observe_held(&mut self, held: u64) {
        let held = u32::try_from(held).unwrap_or(u32::MAX);
        self.held_requests = Some(self.held_requests.map_or(held, |h| h.max(held)));
    }
}

/// Close a second: its gauges, the pool's size now, the counter deltas, the app's completions
/// and their time (`service`, from [`Counters::service_since`]), the p99 of the waits
/// recorded within it (`window`: the histogram's per-second delta).
pub fn close_second(
    gauges: &Gauges,
    total_processes: u32,
    deltas: [u32; 4],
    service: (u32, u64),
    window: &HistogramSnapshot,
) -> Second {
    Second {
        listen_queue: gauges.listen_queue,
        listen_queue_len: gauges.listen_queue_len,
        active_processes: gauges.active_processes,
        total_processes: Some(total_processes),
        queue_wait_p99_ms: window.quantile_ms(0.99),
        held_requests: gauges.held_requests,
        accepted_conn: deltas[0],
        rejected_conn: deltas[1],
        shed_requests: deltas[2],
        abandoned_requests: deltas[3],
        app_runs: service.0,
        app_time_us: service.1,
    }
}

/// Every pool's history, shared by the sampler (writes once a second) and the status listener
/// (reads on request).
pub struct History {
    pools: Vec<(String, Mutex<Ring>)>,
}

impl History {
    /// Empty rings for pools named `names`, in the scoreboard's pool order.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> History {
        History {
            pools: names
                .into_iter()
                .map(|name| (name.into(), Mutex::new(Ring::new(SECONDS))))
                .collect(),
        }
    }

    /// Record pool `index`'s second `t`.
    pub fn push(&self, index: usize, t: u64, second: Second) {
        if let Some((_, ring)) = self.pools.get(index) {
            ring.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(t, second);
        }
    }

    /// The backlog advice for pool `index` from its last [`SECONDS`] seconds (`None`: no such
    /// pool).
    pub fn advise(
        &self,
        index: usize,
        facts: super::advice::PoolFacts,
    ) -> Option<super::advice::BacklogAdvice> {
        let (_, ring) = self.pools.get(index)?;
        let ring = ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(super::advice::advise(
            ring.last(SECONDS).map(|(_, s)| s),
            facts,
        ))
    }

    /// `/history?json…`: `None` when a pool was asked for by a name that does not exist.
    pub fn render_json(&self, query: &HistoryQuery) -> Option<String> {
        let chosen: Vec<_> = self
            .pools
            .iter()
            .filter(|(name, _)| query.pool.as_deref().is_none_or(|want| want == name))
            .collect();
        if chosen.is_empty() && query.pool.is_some() {
            return None;
        }
        let pools: Vec<String> = chosen
            .into_iter()
            .map(|(name, ring)| {
                let ring = ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                pool_json(name, &ring, query.seconds)
            })
            .collect();
        Some(format!("{{\"pools\":[{}]}}", pools.join(",")))
    }
}

/// One pool's object of `/history?json` (DESIGN.md §5's shape; `listen queue len` is one
/// number, the newest known, as the shape gives it; then fastpm's extra series).
pub fn pool_json(name: &str, ring: &Ring, seconds: usize) -> String {
    let mut out = format!("{{\"pool\":{}", serde_json::Value::from(name));
    let series = |out: &mut String, key: &str, value: &dyn Fn(u64, &Second) -> String| {
        out.push_str(&format!(",\"{key}\":["));
        for (i, (t, s)) in ring.last(seconds).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&value(t, s));
        }
        out.push(']');
    };
    let count = |n: Option<u32>| n.map_or_else(|| "null".to_string(), |n| n.to_string());
    series(&mut out, "t", &|t, _| t.to_string());
    series(&mut out, "listen queue", &|_, s| count(s.listen_queue));
    let len = ring
        .last(seconds)
        .filter_map(|(_, s)| s.listen_queue_len)
        .last();
    out.push_str(&format!(",\"listen queue len\":{}", count(len)));
    series(&mut out, "active processes", &|_, s| {
        count(s.active_processes)
    });
    series(&mut out, "total processes", &|_, s| {
        count(s.total_processes)
    });
    series(&mut out, "queue wait p99 ms", &|_, s| {
        millis(s.queue_wait_p99_ms)
    });
    series(&mut out, "accepted conn", &|_, s| {
        s.accepted_conn.to_string()
    });
    series(&mut out, "rejected conn", &|_, s| {
        s.rejected_conn.to_string()
    });
    series(&mut out, "shed requests", &|_, s| {
        s.shed_requests.to_string()
    });
    series(&mut out, "abandoned requests", &|_, s| {
        s.abandoned_requests.to_string()
    });
    series(&mut out, "held requests", &|_, s| count(s.held_requests));
    series(&mut out, "app runs", &|_, s| s.app_runs.to_string());
    out.push('}');
    out
}

/// Milliseconds to the microsecond, `null` when unknown.
fn millis(ms: Option<f64>) -> String {
    ms.and_then(|ms| serde_json::Number::from_f64((ms * 1000.0).round() / 1000.0))
        .map_or_else(|| "null".to_string(), |n| n.to_string())
}

/// What `/history` was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    /// `pool=NAME` (percent-decoded): that pool only.
    pub pool: Option<String>,
    /// `seconds=N`: the last N seconds, 1 to [`SECONDS`] (more is clamped); all by default.
    pub seconds: usize,
}

impl HistoryQuery {
    /// Parse the query string (`json` and unknown flags are accepted and ignored: the answer
    /// is JSON either way). `Err` says what is wrong, for a 400.
    pub fn parse(query_string: &str) -> Result<HistoryQuery, String> {
        let mut query = HistoryQuery {
            pool: None,
            seconds: SECONDS,
        };
        for pair in query_string.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("pool", name)) => {
                    let name = super::http::percent_decode(name)
                        .ok_or_else(|| format!("bad pool name {name:?}"))?;
                    query.pool = Some(name);
                }
                Some(("seconds", n)) => {
                    let n: usize =
                        n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                            format!("seconds must be a positive number, not {n:?}")
                        })?;
                    query.seconds = n.min(SECONDS);
                }
                _ => {}
            }
        }
        Ok(query)
    }
}

/// What the sampler thread keeps to write the history: per pool, the second being observed.
pub struct Recorder {
    history: std::sync::Arc<History>,
    /// Monotonic second the master started in, and the wall-clock second it was.
    base_mono_s: u64,
    base_wall_s: u64,
    pools: Vec<PoolSeconds>,
}

struct PoolSeconds {
    /// Monotonic second being observed.
    second: u64,
    gauges: Gauges,
    counters: Counters,
    /// The queue-wait histogram at the previous close, now, and their difference (reused).
    hist_before: HistogramSnapshot,
    hist_now: HistogramSnapshot,
    hist_window: HistogramSnapshot,
}

impl Recorder {
    /// Start recording at monotonic time `mono_us` (wall clock `wall_s`), for every pool of
    /// `history` whose board `board(i)` gives.
    pub fn new<'a>(
        history: std::sync::Arc<History>,
        mono_us: u64,
        wall_s: u64,
        board: impl Fn(usize) -> &'a PoolBoard,
    ) -> Recorder {
        let pools = (0..history.pools.len())
            .map(|i| {
                let board = board(i);
                let mut hist_before = HistogramSnapshot::default();
                board.queue_wait.snapshot_into(&mut hist_before);
                PoolSeconds {
                    second: mono_us / 1_000_000,
                    gauges: Gauges::default(),
                    counters: Counters::read(board),
                    hist_before,
                    hist_now: HistogramSnapshot::default(),
                    hist_window: HistogramSnapshot::default(),
                }
            })
            .collect();
        Recorder {
            history,
            base_mono_s: mono_us / 1_000_000,
            base_wall_s: wall_s,
            pools,
        }
    }

    /// One sampler reading of pool `index`.
    pub fn observe(&mut self, index: usize, reading: Option<(u32, u32)>, active: u32) {
        if let Some(pool) = self.pools.get_mut(index) {
            pool.gauges.observe(reading, active);
        }
    }

    /// Call every tick before the readings: when the monotonic clock has left the second being
    /// observed, close it for every pool (reading the boards' counters now) and start the next;
    /// then read each pool's `held requests` gauge into the second being observed.
    pub fn roll<'a>(
        &mut self,
        mono_us: u64,
        board: impl Fn(usize) -> &'a PoolBoard,
        total: impl Fn(usize) -> u32,
    ) {
        let now_s = mono_us / 1_000_000;
        for (i, pool) in self.pools.iter_mut().enumerate() {
            let board = board(i);
            if now_s > pool.second {
                let counters = Counters::read(board);
                board.queue_wait.snapshot_into(&mut pool.hist_now);
                pool.hist_now
                    .delta_into(&pool.hist_before, &mut pool.hist_window);
                std::mem::swap(&mut pool.hist_before, &mut pool.hist_now);
                let second = close_second(
                    &pool.gauges,
                    total(i),
                    counters.since(&pool.counters),
                    counters.service_since(&pool.counters),
                    &pool.hist_window,
                );
                let t = self.base_wall_s + (pool.second - self.base_mono_s);
                self.history.push(i, t, second);
                pool.counters = counters;
                pool.gauges = Gauges::default();
                pool.second = now_s;
            }
            pool.gauges.observe_held(board.held_requests.load(Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: u32) -> Second {
        Second {
            listen_queue: Some(n),
            ..Second::GAP
        }
    }

    /// (pushes, capacity, want (t, queue) oldest first for `last(usize::MAX)`)
    #[test]
    fn ring_table() {
        type Case = (&'static [(u64, u32)], usize, &'static [(u64, Option<u32>)]);
        let table: &[Case] = &[
            (&[], 3, &[]),
            (&[(10, 1)], 3, &[(10, Some(1))]),
            (
                &[(10, 1), (11, 2), (12, 3)],
                3,
                &[(10, Some(1)), (11, Some(2)), (12, Some(3))],
            ),
            // wraps: the oldest goes
            (
                &[(10, 1), (11, 2), (12, 3), (13, 4)],
                3,
                &[(11, Some(2)), (12, Some(3)), (13, Some(4))],
            ),
            // a skipped second is a gap
            (
                &[(10, 1), (12, 3)],
                4,
                &[(10, Some(1)), (11, None), (12, Some(3))],
            ),
            // a stall longer than the ring: only gaps then the new second
            (
                &[(10, 1), (100, 9)],
                3,
                &[(98, None), (99, None), (100, Some(9))],
            ),
            // not after the newest: ignored
            (&[(10, 1), (10, 5), (9, 7)], 3, &[(10, Some(1))]),
        ];
        for (i, (pushes, capacity, want)) in table.iter().enumerate() {
            let mut ring = Ring::new(*capacity);
            for &(t, n) in pushes.iter() {
                ring.push(t, q(n));
            }
            let got: Vec<_> = ring
                .last(usize::MAX)
                .map(|(t, s)| (t, s.listen_queue))
                .collect();
            assert_eq!(&got, want, "case {i}");
            assert_eq!(ring.len(), want.len(), "case {i}");
        }
    }

    #[test]
    fn ring_last_n_is_the_newest_n() {
        let mut ring = Ring::new(5);
        for t in 1..=8 {
            ring.push(t, q(t as u32));
        }
        let got: Vec<_> = ring.last(2).map(|(t, _)| t).collect();
        assert_eq!(got, [7, 8]);
        assert_eq!(ring.last(0).count(), 0);
        assert_eq!(ring.newest().map(|(t, _)| t), Some(8));
    }

    #[test]
    fn ring_push_does_not_allocate() {
        let mut ring = Ring::new(SECONDS);
        let before = ring.slots.as_ptr();
        for t in 0..(3 * SECONDS as u64) {
            ring.push(t, q(1));
        }
        assert_eq!(ring.slots.as_ptr(), before);
        assert_eq!(ring.slots.len(), SECONDS);
    }

    /// (readings of one second, want queue max, len, active max)
    #[test]
    fn gauges_keep_the_maximum_within_a_second() {
        type Case = (&'static [(Option<(u32, u32)>, u32)], Gauges);
        let g = |q, l, a| Gauges {
            listen_queue: q,
            listen_queue_len: l,
            active_processes: a,
            held_requests: None,
        };
        let table: &[Case] = &[
            (&[], g(None, None, None)),
            (&[(Some((0, 128)), 0)], g(Some(0), Some(128), Some(0))),
            (
                &[
                    (Some((3, 128)), 2),
                    (Some((40, 128)), 2),
                    (Some((1, 128)), 1),
                ],
                g(Some(40), Some(128), Some(2)),
            ),
            // a failed probe read still counts the workers
            (&[(None, 2)], g(None, None, Some(2))),
            // backlog changed by a reload: the last one read
            (
                &[(Some((5, 128)), 1), (Some((2, 64)), 1)],
                g(Some(5), Some(64), Some(1)),
            ),
        ];
        for (readings, want) in table {
            let mut gauges = Gauges::default();
            for &(reading, active) in readings.iter() {
                gauges.observe(reading, active);
            }
            assert_eq!(&gauges, want, "{readings:?}");
        }
    }

    #[test]
    fn counter_deltas() {
        let c = |a, r, s, b| Counters {
            accepted_conn: a,
            rejected_conn: r,
            shed_requests: s,
            abandoned_requests: b,
            ..Counters::default()
        };
        let table = [
            (c(0, 0, 0, 0), c(0, 0, 0, 0), [0, 0, 0, 0]),
            (c(10, 2, 1, 0), c(25, 7, 3, 1), [15, 5, 2, 1]),
            // went down (drops became unknown): 0, not a wrap
            (c(10, 9, 0, 0), c(11, 4, 0, 0), [1, 0, 0, 0]),
            (c(0, 0, 0, 0), c(u64::MAX, 0, 0, 0), [u32::MAX, 0, 0, 0]),
        ];
        for (before, after, want) in table {
            assert_eq!(after.since(&before), want, "{before:?} → {after:?}");
        }
    }

    #[test]
    fn query_table() {
        let ok = [
            ("", None, SECONDS),
            ("json", None, SECONDS),
            ("json&pool=www", Some("www"), SECONDS),
            ("json&pool=my%20pool&seconds=60", Some("my pool"), 60),
            ("seconds=100000", None, SECONDS),
            ("seconds=1&full", None, 1),
        ];
        for (qs, pool, seconds) in ok {
            assert_eq!(
                HistoryQuery::parse(qs),
                Ok(HistoryQuery {
                    pool: pool.map(str::to_string),
                    seconds
                }),
                "{qs}"
            );
        }
        for bad in ["seconds=0", "seconds=-1", "seconds=abc", "pool=%zz"] {
            assert!(HistoryQuery::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_has_design_shape() {
        let history = History::new(["www", "api"]);
        let second = |queue, wait| Second {
            listen_queue: Some(queue),
            listen_queue_len: Some(128),
            active_processes: Some(2),
            total_processes: Some(2),
            queue_wait_p99_ms: wait,
            held_requests: Some(queue * 100),
            accepted_conn: 3,
            rejected_conn: 1,
            shed_requests: 1,
            abandoned_requests: 0,
            app_runs: 2,
            app_time_us: 100_000,
        };
        history.push(0, 100, second(40, Some(12.34567)));
        history.push(0, 102, second(7, None));
        let all: serde_json::Value = serde_json::from_str(
            &history
                .render_json(&HistoryQuery::parse("json").unwrap())
                .unwrap(),
        )
        .unwrap();
        let www = &all["pools"][0];
        assert_eq!(www["pool"], "www");
        assert_eq!(www["t"], serde_json::json!([100, 101, 102]));
        assert_eq!(www["listen queue"], serde_json::json!([40, null, 7]));
        assert_eq!(www["listen queue len"], 128);
        assert_eq!(www["active processes"], serde_json::json!([2, null, 2]));
        assert_eq!(
            www["queue wait p99 ms"],
            serde_json::json!([12.346, null, null])
        );
        assert_eq!(www["rejected conn"], serde_json::json!([1, 0, 1]));
        assert_eq!(www["held requests"], serde_json::json!([4000, null, 700]));
        assert_eq!(www["app runs"], serde_json::json!([2, 0, 2]));
        assert_eq!(all["pools"][1]["t"], serde_json::json!([]));
        assert!(all["pools"][1]["listen queue len"].is_null());

        let one = history
            .render_json(&HistoryQuery::parse("pool=www&seconds=1").unwrap())
            .unwrap();
        let one: serde_json::Value = serde_json::from_str(&one).unwrap();
        assert_eq!(one["pools"].as_array().unwrap().len(), 1);
        assert_eq!(one["pools"][0]["t"], serde_json::json!([102]));
        assert!(history
            .render_json(&HistoryQuery::parse("pool=nope").unwrap())
            .is_none());
    }

    #[test]
    fn recorder_closes_seconds_with_deltas() {
        let board = crate::scoreboard::Scoreboard::create(&[1]).unwrap();
        let pool = board.pool(0);
        let history = std::sync::Arc::new(History::new(["p"]));
        let mut rec = Recorder::new(history.clone(), 5_000_000, 1_000, |_| pool);
        pool.held_requests.store(7, Relaxed);
        rec.roll(5_100_000, |_| pool, |_| 2);
        rec.observe(0, Some((3, 128)), 1);
        rec.observe(0, Some((35, 128)), 2);
        // The holder's gauge peaks between two ticks' readings and falls again.
        pool.held_requests.store(900, Relaxed);
        rec.roll(5_500_000, |_| pool, |_| 2);
        pool.held_requests.store(3, Relaxed);
        pool.accepted_conn.store(4, Relaxed);
        pool.app_served(50_000);
        pool.app_served(49_000);
        pool.queue_wait.record(Some(20_000));
        pool.shed_requests.store(2, Relaxed);
        // still second 5: nothing closed
        rec.roll(5_999_999, |_| pool, |_| 2);
        assert!(history.pools[0].1.lock().unwrap().is_empty());
        rec.roll(6_000_000, |_| pool, |_| 2);
        rec.observe(0, Some((0, 128)), 0);
        rec.roll(7_000_100, |_| pool, |_| 2);
        let ring = history.pools[0].1.lock().unwrap();
        let got: Vec<_> = ring.last(10).map(|(t, s)| (t, *s)).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 1_000);
        assert_eq!(got[0].1.listen_queue, Some(35));
        assert_eq!(got[0].1.active_processes, Some(2));
        assert_eq!(got[0].1.accepted_conn, 4);
        assert_eq!(got[0].1.shed_requests, 2);
        assert_eq!((got[0].1.app_runs, got[0].1.app_time_us), (2, 99_000));
        assert_eq!((got[1].1.app_runs, got[1].1.app_time_us), (0, 0));
        assert_eq!(got[0].1.rejected_conn, 2, "shed counts as rejected");
        assert_eq!(got[0].1.held_requests, Some(900), "the second's maximum");
        assert_eq!(
            got[1].1.held_requests,
            Some(3),
            "read at the next second's first tick"
        );
        let p99 = got[0].1.queue_wait_p99_ms.unwrap();
        assert!((17.0..=20.0).contains(&p99), "{p99}");
        assert_eq!(got[1].0, 1_001);
        assert_eq!(got[1].1.listen_queue, Some(0));
        assert_eq!(got[1].1.accepted_conn, 0);
        assert_eq!(
            got[1].1.queue_wait_p99_ms, None,
            "no wait recorded within it"
        );
    }
}
