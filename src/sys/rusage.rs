//! What the kernel counts of a request's cost, for the access log's `%C` (CPU share) and `%M`
//! (memory): `getrusage(2)` for the calling thread, for reaped children, and for the process.

use std::mem::MaybeUninit;
use std::time::Duration;

/// CPU time, split as `%{user}C` and `%{system}C` split it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    /// What was spent since `earlier` (zero where a counter went backwards).
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    pub fn plus(self, other: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }
}

fn usage(who: libc::c_int) -> Option<libc::rusage> {
    let mut usage = MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a writable rusage that outlives the call; getrusage fills it and
    // touches nothing else.
    let rc = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    // SAFETY: zeroed is a valid rusage (plain integers), and on success the kernel filled it.
    (rc == 0).then(|| unsafe { usage.assume_init() })
}

fn duration(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}

fn cpu(who: libc::c_int) -> CpuTime {
    usage(who).map_or_else(CpuTime::default, |u| CpuTime {
        user: duration(u.ru_utime),
        system: duration(u.ru_stime),
    })
}

/// CPU time of the calling thread (a worker runs one request at a time on its thread).
pub fn thread_cpu() -> CpuTime {
    cpu(libc::RUSAGE_THREAD)
}

/// CPU time of the children this process has reaped (CGI scripts, once waited for).
pub fn reaped_children_cpu() -> CpuTime {
    cpu(libc::RUSAGE_CHILDREN)
}

/// The process's peak resident set size, in bytes.
pub fn peak_rss_bytes() -> u64 {
    usage(libc::RUSAGE_SELF).map_or(0, |u| (u.ru_maxrss.max(0) as u64) * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_counts_cpu_and_the_process_has_memory() {
        let before = thread_cpu();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let spent = thread_cpu().since(before);
        assert!(
            spent.user + spent.system >= Duration::from_millis(10),
            "{spent:?}"
        );
        assert!(peak_rss_bytes() > 1 << 20);
    }
}
