//! The queue sampler: a thread in the master that reads every pool's queue probe periodically
//! and records what the kernel said on the scoreboard (DESIGN.md §4, §5).
//!
//! Interval: [`BUSY_INTERVAL`] (2 ms) while any pool has connections waiting or has accepted
//! one since the previous tick, [`IDLE_INTERVAL`] (20 ms) otherwise.
//! - 2 ms when busy: queue-wait accounting (arrivals = accepted + queued) is exact to one
//!   sampling interval, and the `codel` policy's default target is 5 ms, so the samples must
//!   be finer than that. One read costs a few microseconds (measured on this machine: inet_diag
//!   ≈4 µs, TCP_INFO ≈0.5 µs, unix_diag ≈8 µs with few unix sockets — but the kernel finds a
//!   unix socket by walking all of them: 2–100 µs with 18,000 in a tight loop, milliseconds
//!   cache-cold), so each tick reads a unix queue through [`QueueProbe::sample`], which asks
//!   `unix_diag` only when epoll sees a connection waiting (and after a new backlog, and every
//!   minute), and while connections wait no more often than a tenth of a core allows: an empty
//!   queue costs one `epoll_wait`, however many requests are held, and a busy one at most
//!   10% of a core (docs/BENCHMARKS.md, "The master's CPU while requests are held"). A tick
//!   the probe skips records nothing for that pool.
//! - 20 ms when idle: an idle master should not spin; a burst that lands on an idle pool is
//!   seen within 20 ms, and from then on the sampler is at 2 ms again.
//!
//! Each successful tick also records `arrived = accepted + queued` in the pool's arrival ring
//! (`overload::arrival`), from which workers compute every connection's queue wait.
//!
//! With a [`History`], the same thread also writes the master's one-second history
//! (`status::history`): every reading goes into the second being observed (the queue's
//! maximum within each second needs every 2 ms sample, which only this thread has in hand), and
//! the first tick of a new monotonic second closes the last one — within one [`IDLE_INTERVAL`]
//! of the boundary, with no second timer and no shared "max since" counter on the scoreboard.
//!
//! A probe that fails is logged once (and once more when it recovers), not every tick; while it
//! fails the pool's `samples` counter stops moving, which is how a reader can tell the queue
//! figures are stale.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{QueueProbe, QueueReading};
use crate::overload::monotonic_us;
use crate::scoreboard::{raise_max, Clock, PoolBoard, Scoreboard, UNKNOWN};
use crate::status::history::{History, Recorder};

/// Tick while a queue is non-empty or connections are being accepted.
pub const BUSY_INTERVAL: Duration = Duration::from_millis(2);
/// Tick while every pool is quiet.
pub const IDLE_INTERVAL: Duration = Duration::from_millis(20);

/// Write one reading into the pool's counters: the queue now, its maximum, the effective
/// backlog, the kernel's drop count ([`UNKNOWN`] when the kernel does not count), one more
/// full sample when the queue was at capacity, and one more sample.
pub fn record_sample(board: &PoolBoard, reading: &QueueReading) {
    let queued = u64::from(reading.queued);
    board.listen_queue.store(queued, Relaxed);
    raise_max(&board.max_listen_queue, queued);
    board
        .listen_queue_len
        .store(u64::from(reading.backlog), Relaxed);
    board
        .listen_drops
        .store(reading.drops.unwrap_or(UNKNOWN), Relaxed);
    if reading.is_full() {
        board.queue_full_samples.fetch_add(1, Relaxed);
    }
    // Last, with Release: a reader that sees the new sample count sees the values above.
    board.samples.fetch_add(1, Release);
}

/// Connections that have arrived in total: taken off the queue, plus still in it (the FIFO
/// count the queue-wait accounting searches, DESIGN.md §4).
pub fn arrived(accepted: u64, queued: u32) -> u64 {
    accepted.saturating_add(u64::from(queued))
}

/// Whether the next tick should come soon: connections are waiting, or some were accepted
/// since the last tick (traffic is flowing even if each sample happens to find the queue
/// empty).
pub fn pool_is_busy(queued: u32, accept_seq_before: u64, accept_seq_now: u64) -> bool {
    queued > 0 || accept_seq_now != accept_seq_before
}

/// The pause before the next tick.
pub fn next_interval(any_pool_busy: bool) -> Duration {
    if any_pool_busy {
        BUSY_INTERVAL
    } else {
        IDLE_INTERVAL
    }
}

/// The running sampler. Dropping it (or [`SamplerHandle::stop`]) stops the thread at once (it
/// waits on a channel, not a sleep) and joins it.
pub struct SamplerHandle {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SamplerHandle {
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Dropping the sender wakes the thread's recv_timeout with `Disconnected`.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the queue sampler thread panicked");
            }
        }
    }
}

impl Drop for SamplerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One pool as the sampler tracks it.
struct SampledPool {
    index: usize,
    probe: QueueProbe,
    /// True after a read error was logged, until a read succeeds again.
    failing: bool,
    /// `accept_seq` at the previous tick, to notice traffic between samples.
    last_accept_seq: u64,
    /// The pool's configured `listen_backlog` at the previous tick: the master stores a new one
    /// after a `listen()` (reload), and the probe must then ask the kernel for the backlog it
    /// really holds instead of repeating its last answer.
    backlog_setting: u64,
}

/// Start the sampler thread for `pools` (scoreboard pool index, that pool's probe).
///
/// Panics if a pool index is not on the scoreboard (a wiring bug in the caller) or if the
/// thread cannot be spawned.
pub fn spawn_sampler(
    pools: Vec<(usize, QueueProbe)>,
    scoreboard: Arc<Scoreboard>,
) -> SamplerHandle {
    spawn_sampler_with_history(pools, scoreboard, None)
}

/// [`spawn_sampler`] that also records `history` (one ring per scoreboard pool, in order).
pub fn spawn_sampler_with_history(
    pools: Vec<(usize, QueueProbe)>,
    scoreboard: Arc<Scoreboard>,
    history: Option<Arc<History>>,
) -> SamplerHandle {
    let pools: Vec<SampledPool> = pools
        .into_iter()
        .map(|(index, probe)| {
            assert!(
                index < scoreboard.pool_count(),
                "sampler given pool {index}, scoreboard has {}",
                scoreboard.pool_count()
            );
            SampledPool {
                index,
                probe,
                failing: false,
                last_accept_seq: scoreboard.pool(index).accept_seq.load(Relaxed),
                backlog_setting: scoreboard.pool(index).listen_backlog.load(Relaxed),
            }
        })
        .collect();
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("fastpm-sampler".into())
        .spawn(move || {
            let mut recorder = history.map(|history| {
                let now = Clock::now();
                Recorder::new(history, now.monotonic_us, now.wall_us / 1_000_000, |i| {
                    scoreboard.pool(i)
                })
            });
            run(pools, &scoreboard, recorder.as_mut(), &stopped)
        })
        .expect("spawn the queue sampler thread");
    SamplerHandle {
        stop: Some(stop),
        thread: Some(thread),
    }
}

fn run(
    mut pools: Vec<SampledPool>,
    scoreboard: &Scoreboard,
    mut recorder: Option<&mut Recorder>,
    stopped: &mpsc::Receiver<()>,
) {
    loop {
        if let Some(recorder) = recorder.as_deref_mut() {
            let total = |i| {
                let (idle, active) = scoreboard.idle_active(i);
                u32::try_from(idle + active).unwrap_or(u32::MAX)
            };
            recorder.roll(monotonic_us(), |i| scoreboard.pool(i), total);
        }
        let mut busy = false;
        for pool in &mut pools {
            busy |= tick(pool, scoreboard, recorder.as_deref_mut());
        }
        match stopped.recv_timeout(next_interval(busy)) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Sample one pool; true when it is busy.
fn tick(pool: &mut SampledPool, scoreboard: &Scoreboard, recorder: Option<&mut Recorder>) -> bool {
    let board = scoreboard.pool(pool.index);
    let mut queued = 0;
    let mut observed = None;
    // Accepted *before* the queue is read: a connection accepted between the two reads is
    // then counted by a later sample, never an earlier one, so waits stay lower bounds.
    let accepted_before = board.accept_seq.load(Acquire);
    let backlog_setting = board.listen_backlog.load(Relaxed);
    if backlog_setting != pool.backlog_setting {
        pool.backlog_setting = backlog_setting;
        pool.probe.forget();
    }
    // No sample this tick (the probe spaces out dear lookups while connections wait): the
    // last one stands, and the pool counts as busy.
    let mut skipped = false;
    match pool.probe.sample() {
        Ok(None) => skipped = true,
        Ok(Some(reading)) => {
            // After the read: every connection the reading counts arrived before this time.
            let read_at = monotonic_us();
            record_sample(board, &reading);
            board
                .arrivals
                .record_tick(read_at, arrived(accepted_before, reading.queued));
            queued = reading.queued;
            observed = Some((reading.queued, reading.backlog));
            if pool.failing {
                pool.failing = false;
                tracing::info!(pool = pool.index, method = %pool.probe.method(), "listen queue readable again");
            }
        }
        Err(error) => {
            if !pool.failing {
                pool.failing = true;
                tracing::warn!(pool = pool.index, method = %pool.probe.method(), %error,
                    "cannot read the listen queue; retrying every tick, logging again only when it recovers");
            }
        }
    }
    let (_, active) = scoreboard.idle_active(pool.index);
    raise_max(&board.max_active_processes, active);
    if let Some(recorder) = recorder {
        recorder.observe(
            pool.index,
            observed,
            u32::try_from(active).unwrap_or(u32::MAX),
        );
    }
    let accept_seq = board.accept_seq.load(Relaxed);
    let busy = skipped || pool_is_busy(queued, pool.last_accept_seq, accept_seq);
    pool.last_accept_seq = accept_seq;
    busy
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (reading, expected listen_queue, max, len, drops, full samples, samples) after applying
    /// the readings in order to one fresh board.
    #[test]
    fn record_sample_table() {
        let board = Scoreboard::create(&[1]).unwrap();
        let pool = board.pool(0);
        let r = |queued, backlog, drops| QueueReading {
            queued,
            backlog,
            drops,
        };
        let steps: &[(QueueReading, [u64; 6])] = &[
            // unix: no drops → UNKNOWN
            (r(0, 10, None), [0, 0, 10, UNKNOWN, 0, 1]),
            (r(5, 10, None), [5, 5, 10, UNKNOWN, 0, 2]),
            // the max stays when the queue shrinks
            (r(3, 10, None), [3, 5, 10, UNKNOWN, 0, 3]),
            // queued == backlog: one more still fits (capacity backlog + 1): not full
            (r(10, 10, None), [10, 10, 10, UNKNOWN, 0, 4]),
            // queued == backlog + 1: full
            (r(11, 10, None), [11, 11, 10, UNKNOWN, 1, 5]),
            // TCP: kernel drops recorded as given
            (r(11, 10, Some(7)), [11, 11, 10, 7, 2, 6]),
            // relisten lowered the backlog: len follows the kernel, full by the new value
            (r(4, 3, Some(7)), [4, 11, 3, 7, 3, 7]),
            (r(0, 3, Some(9)), [0, 11, 3, 9, 3, 8]),
            // drops unknown again (TCP_INFO fallback): back to UNKNOWN, not a stale count
            (r(0, 3, None), [0, 11, 3, UNKNOWN, 3, 9]),
        ];
        for (i, (reading, want)) in steps.iter().enumerate() {
            record_sample(pool, reading);
            let got = [
                pool.listen_queue.load(Relaxed),
                pool.max_listen_queue.load(Relaxed),
                pool.listen_queue_len.load(Relaxed),
                pool.listen_drops.load(Relaxed),
                pool.queue_full_samples.load(Relaxed),
                pool.samples.load(Relaxed),
            ];
            assert_eq!(&got, want, "step {i}: {reading:?}");
        }
    }

    #[test]
    fn arrived_adds_accepted_and_queued() {
        for (accepted, queued, want) in [(0, 0, 0), (7, 0, 7), (7, 3, 10), (u64::MAX, 1, u64::MAX)]
        {
            assert_eq!(arrived(accepted, queued), want);
        }
    }

    #[test]
    fn busy_table() {
        let table: &[(u32, u64, u64, bool)] = &[
            (0, 0, 0, false),
            (0, 7, 7, false),
            (1, 7, 7, true),
            (0, 7, 8, true),
            (3, 7, 9, true),
        ];
        for &(queued, before, now, want) in table {
            assert_eq!(
                pool_is_busy(queued, before, now),
                want,
                "{queued} {before} {now}"
            );
        }
        assert_eq!(next_interval(true), BUSY_INTERVAL);
        assert_eq!(next_interval(false), IDLE_INTERVAL);
        assert!(BUSY_INTERVAL < IDLE_INTERVAL);
    }
}
