//! The clock of the queue-wait accounting: `CLOCK_MONOTONIC` in microseconds.
//!
//! Why not `Instant`: the sampler (in the master) and the workers (threads or re-executed
//! processes) compare times across processes through shared memory, so the value must be a
//! plain number from one system-wide clock that never jumps back. `CLOCK_MONOTONIC` is that
//! clock on Linux (the same for every process on the machine); wall-clock time could step.

use nix::time::{clock_gettime, ClockId};

/// Microseconds of `CLOCK_MONOTONIC`. Never 0 in practice (the clock counts from boot), which
/// lets 0 stand for "never" in shared state.
pub fn monotonic_us() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64) * 1_000_000 + (ts.tv_nsec() as u64) / 1_000,
        // CLOCK_MONOTONIC cannot fail on Linux; fall back to the wall clock rather than panic.
        Err(_) => crate::scoreboard::now_us(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_moves_forward() {
        let a = monotonic_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_us();
        assert!(a > 0 && b >= a + 2_000, "{a} {b}");
    }
}
