//! The queue-wait histogram: fixed, log-spaced buckets of atomics in shared memory (every
//! worker records into its pool's histogram; status readers copy it), and the quantiles and
//! OpenMetrics buckets read from a copy.
//!
//! Buckets: bucket 0 holds waits up to 0.1 ms; bucket i holds waits in
//! `(0.1 ms · 2^((i−1)/4), 0.1 ms · 2^(i/4)]` — four buckets per doubling (each 19% wider than
//! the last) up to 0.1 ms · 2^(77/4) ≈ 62.3 s; one overflow bucket holds longer waits. Why these:
//! 0.1 ms is below what the sampler can resolve (it samples every 2 ms when busy), ~60 s is
//! beyond any web server's read timeout, and a quarter-doubling keeps a quantile within 19% of
//! the truth before interpolation with 79 counters (632 bytes) per pool.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// Finite buckets (the last finite bound is ≈ 62.3 s).
pub const FINITE_BUCKETS: usize = 78;
/// Finite buckets plus the overflow bucket.
pub const BUCKETS: usize = FINITE_BUCKETS + 1;
/// Upper bound of bucket 0, microseconds.
const FIRST_BOUND_US: f64 = 100.0;

/// Upper bound of finite bucket `i`, microseconds: `100 · 2^(i/4)`.
pub fn upper_bound_us(i: usize) -> f64 {
    FIRST_BOUND_US * (i as f64 / 4.0).exp2()
}

/// The bucket a wait of `us` microseconds falls in.
pub fn bucket_of(us: u64) -> usize {
    let w = us as f64;
    if w <= FIRST_BOUND_US {
        return 0;
    }
    let mut i = ((w / FIRST_BOUND_US).log2() * 4.0).ceil() as usize;
    // Correct floating-point rounding at the edges: bounds are inclusive upper bounds.
    while i < FINITE_BUCKETS && upper_bound_us(i) < w {
        i += 1;
    }
    while i > 0 && i <= FINITE_BUCKETS && upper_bound_us(i - 1) >= w {
        i -= 1;
    }
    i.min(FINITE_BUCKETS)
}

/// A pool's queue-wait histogram in shared memory. Zeroed bytes are an empty histogram.
#[repr(C)]
pub struct WaitHistogram {
    buckets: [AtomicU64; BUCKETS],
    /// Sum of recorded waits, µs (the OpenMetrics `_sum`).
    sum_us: AtomicU64,
    /// Longest recorded wait, µs (`queue wait max ms` is exact, not a bucket bound).
    max_us: AtomicU64,
    /// Connections whose wait could not be known (arrival older than the ring, sampler not
    /// running): counted so a reader sees how much the figures leave out.
    unknown: AtomicU64,
}

impl WaitHistogram {
    /// Record one connection's wait, or that it is unknown.
    pub fn record(&self, wait_us: Option<u64>) {
        match wait_us {
            Some(us) => {
                self.buckets[bucket_of(us)].fetch_add(1, Relaxed);
                self.sum_us.fetch_add(us, Relaxed);
                self.max_us.fetch_max(us, Relaxed);
            }
            None => self.record_unknown(1),
        }
    }

    /// Count `n` connections whose wait could not be known.
    pub fn record_unknown(&self, n: u64) {
        self.unknown.fetch_add(n, Relaxed);
    }

    /// Connections whose wait could not be known, so far.
    pub fn unknown(&self) -> u64 {
        self.unknown.load(Relaxed)
    }

    /// [`snapshot`](Self::snapshot) into a copy the caller keeps, reusing its buckets (the
    /// master's once-a-second history reads it without allocating).
    pub fn snapshot_into(&self, out: &mut HistogramSnapshot) {
        out.buckets.clear();
        out.buckets
            .extend(self.buckets.iter().map(|b| b.load(Relaxed)));
        out.count = out.buckets.iter().sum();
        out.sum_us = self.sum_us.load(Relaxed);
        out.max_us = self.max_us.load(Relaxed);
        out.unknown = self.unknown.load(Relaxed);
    }

    /// A copy for reading (each counter read once; the copy's `count` is the sum of its
    /// buckets, so `_count` always equals the `+Inf` bucket).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        HistogramSnapshot {
            count: buckets.iter().sum(),
            buckets,
            sum_us: self.sum_us.load(Relaxed),
            max_us: self.max_us.load(Relaxed),
            unknown: self.unknown.load(Relaxed),
        }
    }
}

/// A copy of a [`WaitHistogram`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HistogramSnapshot {
    /// Per-bucket counts ([`BUCKETS`] of them; not cumulative).
    pub buckets: Vec<u64>,
    /// Waits recorded (known ones).
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u64,
    /// Connections whose wait was unknown.
    pub unknown: u64,
}

impl HistogramSnapshot {
    /// The `q`-quantile (0 < q ≤ 1) in milliseconds, `None` when nothing was recorded.
    /// Interpolates inside the bucket (linearly in bucket 0, geometrically above, as the
    /// buckets are log-spaced) and never exceeds the exact maximum.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let max = self.max_us as f64;
        let mut before = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 || before + n < rank {
                before += n;
                continue;
            }
            let fraction = (rank - before) as f64 / n as f64;
            let upper = if i == FINITE_BUCKETS {
                max
            } else {
                upper_bound_us(i).min(max)
            };
            let us = if i == 0 {
                upper * fraction
            } else {
                let lower = upper_bound_us(i - 1).min(upper);
                lower * (upper / lower).powf(fraction)
            };
            return Some(us.min(max) / 1000.0);
        }
        Some(max / 1000.0)
    }

    /// What was recorded between `earlier` and `self` (two copies of one histogram), into
    /// `out` (its buckets reused). The maximum is not windowed: `out.max_us` is `self`'s, which
    /// only caps the quantiles' interpolation.
    pub fn delta_into(&self, earlier: &HistogramSnapshot, out: &mut HistogramSnapshot) {
        out.buckets.clear();
        out.buckets.extend(
            self.buckets
                .iter()
                .enumerate()
                .map(|(i, &n)| n.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0))),
        );
        out.count = out.buckets.iter().sum();
        out.sum_us = self.sum_us.saturating_sub(earlier.sum_us);
        out.max_us = self.max_us;
        out.unknown = self.unknown.saturating_sub(earlier.unknown);
    }

    /// Cumulative counts at every fourth bound (0.1 ms, 0.2 ms, 0.4 ms, … ≈ 52 s: one per
    /// doubling, enough for a dashboard), as `(le seconds, count)`, then `+Inf` as
    /// `f64::INFINITY`. Cumulative buckets may be thinned this way without losing validity.
    pub fn cumulative_by_doubling(&self) -> Vec<(f64, u64)> {
        let mut out = Vec::with_capacity(FINITE_BUCKETS / 4 + 2);
        let mut cumulative = 0;
        for (i, &n) in self.buckets.iter().enumerate().take(FINITE_BUCKETS) {
            cumulative += n;
            if i % 4 == 0 {
                out.push((upper_bound_us(i) / 1e6, cumulative));
            }
        }
        out.push((f64::INFINITY, self.count));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::Scoreboard;

    #[test]
    fn bucket_bounds_table() {
        let table = [
            (0, 0),
            (100, 0),
            (101, 1),
            (118, 1), // 100·2^¼ ≈ 118.9
            (119, 2),
            (200, 4), // exactly 2^1: inclusive
            (201, 5),
            (400_000, 48), // 0.1 ms · 2^12 = 409.6 ms: bucket 48 holds (344.4, 409.6]
            (60_000_000, 77),
            (62_348_702, FINITE_BUCKETS),
            (62_000_000, 77),
            (63_000_000, FINITE_BUCKETS),
            (u64::MAX, FINITE_BUCKETS),
        ];
        for (us, want) in table {
            assert_eq!(bucket_of(us), want, "{us} µs");
        }
        assert!((upper_bound_us(77) - 62_348_702.0).abs() < 1.0);
    }

    fn snapshot_of(waits: &[u64]) -> HistogramSnapshot {
        let board = Scoreboard::create(&[1]).unwrap();
        let h = &board.pool(0).queue_wait;
        for &w in waits {
            h.record(Some(w));
        }
        h.snapshot()
    }

    #[test]
    fn quantiles_stay_within_a_bucket_and_below_max() {
        assert_eq!(snapshot_of(&[]).quantile_ms(0.5), None);
        let s = snapshot_of(&[400_000; 10]);
        let p50 = s.quantile_ms(0.5).unwrap();
        assert!((344.0..=400.0).contains(&p50), "{p50}");
        assert_eq!(s.quantile_ms(1.0), Some(400.0));
        // 90 short, 10 long: p50 short, p99 long.
        let mut waits = vec![1_000; 90];
        waits.extend([2_000_000; 10]);
        let s = snapshot_of(&waits);
        let p50 = s.quantile_ms(0.5).unwrap();
        let p99 = s.quantile_ms(0.99).unwrap();
        assert!((0.95..=1.14).contains(&p50), "{p50}");
        assert!((1_680.0..=2_000.0).contains(&p99), "{p99}");
        assert_eq!(s.count, 100);
        assert_eq!(s.sum_us, 90 * 1_000 + 10 * 2_000_000);
        // Bucket 0 interpolates from 0; overflow reports the exact max.
        assert_eq!(snapshot_of(&[50, 50]).quantile_ms(1.0), Some(0.05));
        assert_eq!(snapshot_of(&[90_000_000]).quantile_ms(0.5), Some(90_000.0));
    }

    #[test]
    fn unknown_waits_are_counted_apart() {
        let board = Scoreboard::create(&[1]).unwrap();
        let h = &board.pool(0).queue_wait;
        h.record(None);
        h.record(Some(5));
        let s = h.snapshot();
        assert_eq!((s.count, s.unknown), (1, 1));
    }

    #[test]
    fn cumulative_buckets_end_with_the_count() {
        let s = snapshot_of(&[50, 150, 300, 90_000_000]);
        let c = s.cumulative_by_doubling();
        assert_eq!(c.len(), 21);
        assert_eq!(c[0], (0.0001, 1));
        assert_eq!(c[1].1, 2); // ≤ 0.2 ms
        assert_eq!(c[2].1, 3); // ≤ 0.4 ms
        assert_eq!(c[19].1, 3); // ≤ 52 s
        assert_eq!(*c.last().unwrap(), (f64::INFINITY, 4));
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }
}
