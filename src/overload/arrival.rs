//! When did the k-th connection arrive? The accept queue is FIFO, so if the sampler records
//! `arrived(t) = accepted(t) + queued(t)` over time, the k-th connection taken off the queue
//! arrived at the first sample where `arrived ≥ k` (DESIGN.md §4).
//!
//! [`ArrivalRing`] keeps the recent samples in shared memory (atomics only; one writer, the
//! sampler; any number of readers, the workers, which look up their connection right after
//! `accept()`); [`find_arrival`] is the pure search.
//!
//! Which bound is reported: the k-th connection arrived in `(t[i-1], t[i]]` where `t[i]` is
//! the first sample counting it, so its wait lies in `[accept − t[i], accept − t[i-1])`. We
//! report the **lower bound** `accept − t[i]`: it is never more than the truth (a shedding
//! policy never drops a request on an over-estimate) and never less than the truth minus one
//! sampling interval (2 ms while the queue is busy). The sampler reads `accept_seq` *before* the
//! queue, so a connection accepted between the two reads is counted late, never early: the
//! bound stays a lower bound.
//!
//! Why store only samples where `arrived` grew, and why [`RING_SAMPLES`] = 4096: a sample
//! whose `arrived` equals its predecessor's can never be "the first with arrived ≥ k", so
//! dropping it loses nothing. Then a connection's arrival sample is at most as many stored
//! samples old, when the connection is accepted, as connections arrived after it while it was
//! queued — and those were queued behind it, so there are at most `backlog` of them. 4096 is
//! the kernel's default `somaxconn` (the largest effective backlog unless an operator raises
//! it), so any wait in a default-configured queue is found; 64 KiB of shared memory per pool.
//! Older arrivals are reported as unknown (and counted as such), never guessed.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{fence, AtomicU64};

/// Samples the ring holds (see the module comment for why 4096).
pub const RING_SAMPLES: usize = 4096;

/// Usable samples: two fewer than the ring, so a reader never uses the slot the writer may be
/// overwriting while the reader's head is still current (see [`ArrivalRing::find`]).
const USABLE: u64 = RING_SAMPLES as u64 - 2;

/// If the sampler has not ticked for this long, "arrived after the newest sample" means the
/// sampler is stuck or its probe fails, not that the connection is new: the wait is unknown.
/// 50 idle ticks; far more than the sampler's worst pause on a loaded machine.
pub const STALE_SAMPLER_US: u64 = 1_000_000;

/// One sampler reading: at monotonic time `t_us`, `arrived` connections had arrived in total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub t_us: u64,
    pub arrived: u64,
}

/// Where connection k's arrival lies among the samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// First counted by the sample taken at `sample_us` (and not by the one before it).
    At { sample_us: u64 },
    /// No sample counts it yet: it arrived after the newest sample.
    AfterNewest,
    /// The oldest sample kept already counts it: it arrived before the ring's memory starts
    /// (or before sampling started). Unknown.
    BeforeOldest,
    /// No sample at all yet. Unknown.
    NoSamples,
}

/// Find connection `k`'s arrival among `len` samples, oldest first, read through `get` (so the
/// same search runs on a slice in tests and on the shared ring). `arrived` must not decrease.
/// Binary search: 12 reads for a full ring.
pub fn find_arrival(len: usize, get: impl Fn(usize) -> Sample, k: u64) -> Arrival {
    if len == 0 {
        return Arrival::NoSamples;
    }
    if get(len - 1).arrived < k {
        return Arrival::AfterNewest;
    }
    // Invariant: get(hi).arrived >= k; everything before lo is < k.
    let (mut lo, mut hi) = (0, len - 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if get(mid).arrived >= k {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if lo == 0 {
        Arrival::BeforeOldest
    } else {
        Arrival::At {
            sample_us: get(lo).t_us,
        }
    }
}

/// The lower bound of the wait of a connection accepted at `accept_us` whose arrival is
/// `arrival`, given the sampler's latest tick; `None` when unknown.
pub fn wait_lower_bound_us(arrival: Arrival, accept_us: u64, last_tick_us: u64) -> Option<u64> {
    match arrival {
        Arrival::At { sample_us } => Some(accept_us.saturating_sub(sample_us)),
        Arrival::AfterNewest if accept_us.saturating_sub(last_tick_us) <= STALE_SAMPLER_US => {
            Some(0)
        }
        Arrival::AfterNewest | Arrival::BeforeOldest | Arrival::NoSamples => None,
    }
}

/// The sampler's recent `(t, arrived)` samples in shared memory. Zeroed bytes are an empty
/// ring.
#[repr(C)]
pub struct ArrivalRing {
    /// Samples stored so far; sample number n lives at index `n % RING_SAMPLES`.
    head: AtomicU64,
    /// Monotonic µs of the sampler's latest tick, stored or not (0 = never): tells a reader
    /// whether "after the newest sample" is fresh news or a stalled sampler.
    last_tick_us: AtomicU64,
    t_us: [AtomicU64; RING_SAMPLES],
    arrived: [AtomicU64; RING_SAMPLES],
}

impl ArrivalRing {
    /// The sampler's tick (single writer): store `(t_us, arrived)` if `arrived` grew (a sample
    /// that repeats the previous count can never be a first; see the module comment). A count
    /// below the previous one (a race between the two reads that make it) is raised to it, so
    /// the stored counts never decrease.
    pub fn record_tick(&self, t_us: u64, arrived: u64) {
        let head = self.head.load(Relaxed);
        let previous = head
            .checked_sub(1)
            .map(|n| self.arrived[index(n)].load(Relaxed));
        if previous.is_none_or(|p| arrived > p) {
            let i = index(head);
            self.t_us[i].store(t_us, Relaxed);
            self.arrived[i].store(arrived, Relaxed);
            self.head.store(head + 1, Release);
        }
        self.last_tick_us.store(t_us, Release);
    }

    /// Monotonic µs of the sampler's latest tick (0 = never).
    pub fn last_tick_us(&self) -> u64 {
        self.last_tick_us.load(Acquire)
    }

    /// The newest stored `arrived` count (0 before the first sample): with the accept count,
    /// how many connections are known to be waiting now.
    pub fn newest_arrived(&self) -> u64 {
        let head = self.head.load(Acquire);
        match head.checked_sub(1) {
            Some(n) => self.arrived[index(n)].load(Relaxed),
            None => 0,
        }
    }

    /// Samples stored since the pool started.
    pub fn stored(&self) -> u64 {
        self.head.load(Acquire)
    }

    /// Where connection `k` arrived, from the samples kept now. Lock-free: if the sampler
    /// stored a sample during the search, the search is repeated (a search takes well under a
    /// microsecond, a sample comes every 2 ms at most).
    pub fn find(&self, k: u64) -> Arrival {
        loop {
            let head = self.head.load(Acquire);
            let len = head.min(USABLE);
            let oldest = head - len;
            let found = find_arrival(
                len as usize,
                |i| {
                    let n = oldest + i as u64;
                    Sample {
                        t_us: self.t_us[index(n)].load(Relaxed),
                        arrived: self.arrived[index(n)].load(Relaxed),
                    }
                },
                k,
            );
            fence(Acquire);
            if self.head.load(Relaxed) == head {
                return found;
            }
        }
    }

    /// [`find`](Self::find) then [`wait_lower_bound_us`].
    pub fn wait_us(&self, k: u64, accept_us: u64) -> Option<u64> {
        let arrival = self.find(k);
        wait_lower_bound_us(arrival, accept_us, self.last_tick_us())
    }
}

fn index(n: u64) -> usize {
    (n % RING_SAMPLES as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::Scoreboard;

    fn s(t_us: u64, arrived: u64) -> Sample {
        Sample { t_us, arrived }
    }

    #[test]
    fn find_arrival_table() {
        use Arrival::*;
        let ring = [s(100, 3), s(102, 5), s(104, 6), s(110, 10)];
        let table: &[(&[Sample], u64, Arrival)] = &[
            (&[], 1, NoSamples),
            // counted by the oldest sample: arrived before the ring's memory
            (&ring, 1, BeforeOldest),
            (&ring, 3, BeforeOldest),
            (&ring, 4, At { sample_us: 102 }),
            (&ring, 5, At { sample_us: 102 }),
            (&ring, 6, At { sample_us: 104 }),
            (&ring, 7, At { sample_us: 110 }),
            (&ring, 10, At { sample_us: 110 }),
            (&ring, 11, AfterNewest),
            (&ring[..1], 3, BeforeOldest),
            (&ring[..1], 4, AfterNewest),
            // equal counts (a slice that kept repeats): the first one wins
            (
                &[s(1, 2), s(5, 4), s(9, 4), s(12, 4)],
                4,
                At { sample_us: 5 },
            ),
        ];
        for (samples, k, want) in table {
            assert_eq!(
                find_arrival(samples.len(), |i| samples[i], *k),
                *want,
                "k={k} {samples:?}"
            );
        }
    }

    #[test]
    fn wait_bound_table() {
        use Arrival::*;
        let table = [
            (At { sample_us: 1_000 }, 401_000, 400_000, Some(400_000)),
            // sampled after the accept (clock skew between threads is impossible, but a race
            // between reading the ring and the accept time must not underflow)
            (At { sample_us: 5_000 }, 4_000, 4_000, Some(0)),
            (AfterNewest, 10_000, 9_000, Some(0)),
            (AfterNewest, 10_000_000, 8_000_000, None),
            (BeforeOldest, 10, 10, None),
            (NoSamples, 10, 0, None),
        ];
        for (arrival, accept, tick, want) in table {
            assert_eq!(
                wait_lower_bound_us(arrival, accept, tick),
                want,
                "{arrival:?}"
            );
        }
    }

    /// A ring in a real shared mapping, as the pool's board holds it.
    fn board() -> Scoreboard {
        Scoreboard::create(&[1]).unwrap()
    }

    #[test]
    fn ring_skips_repeats_and_keeps_counts_monotonic() {
        let board = board();
        let ring = &board.pool(0).arrivals;
        assert_eq!(ring.find(1), Arrival::NoSamples);
        assert_eq!(ring.newest_arrived(), 0);
        ring.record_tick(100, 0);
        ring.record_tick(102, 0); // repeat: not stored
        ring.record_tick(104, 2);
        ring.record_tick(106, 1); // lower (read race): not stored
        ring.record_tick(108, 3);
        assert_eq!(ring.stored(), 3);
        assert_eq!(ring.newest_arrived(), 3);
        assert_eq!(ring.last_tick_us(), 108);
        assert_eq!(ring.find(1), Arrival::At { sample_us: 104 });
        assert_eq!(ring.find(2), Arrival::At { sample_us: 104 });
        assert_eq!(ring.find(3), Arrival::At { sample_us: 108 });
        assert_eq!(ring.find(4), Arrival::AfterNewest);
        assert_eq!(ring.wait_us(3, 508), Some(400));
        assert_eq!(ring.wait_us(4, 508), Some(0));
    }

    #[test]
    fn ring_wraps_around_and_forgets_the_oldest() {
        let board = board();
        let ring = &board.pool(0).arrivals;
        // Sample n at time 10·n with arrived = n + 1; store three laps of the ring.
        let total = 3 * RING_SAMPLES as u64 + 17;
        for n in 0..total {
            ring.record_tick(10 * n, n + 1);
        }
        let newest = total - 1;
        let oldest_kept = total - USABLE;
        // Connection k is first counted by sample k - 1.
        for k in [total, total - 1, oldest_kept + 2, oldest_kept + 1000] {
            assert_eq!(
                ring.find(k),
                Arrival::At {
                    sample_us: 10 * (k - 1)
                },
                "k={k}"
            );
        }
        assert_eq!(ring.find(newest + 2), Arrival::AfterNewest);
        // Counted by the oldest kept sample, or older than the ring: unknown.
        assert_eq!(ring.find(oldest_kept + 1), Arrival::BeforeOldest);
        assert_eq!(ring.find(5), Arrival::BeforeOldest);
        assert_eq!(ring.wait_us(5, 10 * total), None);
    }
}
