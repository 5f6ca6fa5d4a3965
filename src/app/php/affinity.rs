//! Keeps a worker's php-cgi child on the CPU its worker runs on.
//!
//! A relayed request is a strict hand-off: the worker sends the request and sleeps, php-cgi
//! wakes, runs the script, writes the answer and sleeps, the worker wakes. When the two sit on
//! different CPUs every hand-off is a cross-CPU wake-up (an inter-processor interrupt; in a VM a
//! VM exit), and that, not the relay's few syscalls, was most of its cost: on this 2-core VM
//! `perf bench sched pipe` takes 11.6 µs per round trip across CPUs and 5.2 µs on one CPU, and
//! pinning each worker/php-cgi pair to one CPU cut the backend CPU per hello.php request from
//! 74–88 µs to 64–67 µs (docs/BENCHMARKS.md).
//!
//! Pinning the worker itself would stop the scheduler from balancing the pool, so only the
//! child is pinned, and it follows: before each request the worker asks which CPU it is on
//! (`sched_getcpu`, no syscall with glibc's rseq) and moves the child there when that changed
//! (one `sched_setaffinity` while the child sleeps between requests). The CPU is one the worker
//! runs on, so it is inside any affinity mask or cpuset the pool was given. On one CPU, or when
//! the kernel refuses, following stops and nothing else changes.
//!
//! Pinned, a child could not move to an idle CPU: a CPU-bound script (measured: `cpu.php`
//! throughput fell 7% below unpinned), or a child stuck in a busy CPU's run queue (p99 spikes).
//! So an answer slower than a couple of milliseconds releases the child (`release`, called by
//! the relay when its first read times out): moved off its CPU, then free to run anywhere in
//! the pool, and the next request pins it again. Quick pages get the shared CPU, slow ones the
//! scheduler's balancing, at the cost of three syscalls per slow request.

use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// What `follow` should do, given where the child was put last and where the worker is now.
/// Pure, so the policy is tested apart from the system calls.
pub fn decide(pinned: Option<usize>, worker_cpu: Option<usize>) -> Option<usize> {
    match worker_cpu {
        Some(cpu) if pinned != Some(cpu) => Some(cpu),
        _ => None,
    }
}

/// One worker's follower.
#[derive(Debug)]
pub struct Follower {
    /// The CPU the current child was last pinned to (`None`: not pinned yet, e.g. just started).
    pinned: Option<usize>,
    /// Off on a single-CPU machine and after the kernel refused once (no retry per request).
    enabled: bool,
    /// The CPUs the pool may use (this process's mask when the follower was made): what a
    /// released child gets back.
    home: Option<CpuSet>,
}

impl Default for Follower {
    fn default() -> Self {
        Self::new()
    }
}

impl Follower {
    pub fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            pinned: None,
            enabled: cpus > 1,
            home: sched_getaffinity(Pid::from_raw(0)).ok(),
        }
    }

    /// A new child was started: it runs wherever it was forked until the next `follow`.
    pub fn child_restarted(&mut self) {
        self.pinned = None;
    }

    /// Move child `pid` to the calling thread's CPU if it is not there already.
    pub fn follow(&mut self, pid: u32) {
        if !self.enabled {
            return;
        }
        let Some(cpu) = decide(self.pinned, sched_getcpu().ok()) else {
            return;
        };
        let mut set = CpuSet::new();
        let pinned = set
            .set(cpu)
            .and_then(|()| sched_setaffinity(Pid::from_raw(pid as i32), &set));
        match pinned {
            Ok(()) => self.pinned = Some(cpu),
            Err(e) => {
                tracing::debug!(pid, cpu, error = %e, "cannot move php-cgi to its worker's CPU; not trying again");
                self.enabled = false;
            }
        }
    }
}

impl Follower {
    /// The child's answer is slow (it computes, waits, or waits for a CPU): move it off the
    /// CPU it was pinned to, then give it back every CPU of the pool, so that it is not held
    /// behind a busy CPU's queue while another CPU idles. The next request pins it again.
    ///
    /// Why move it first: widening the mask alone leaves a child that is queued on its busy
    /// CPU where it is (the kernel only migrates a task whose CPU left its mask). Measured with
    /// every server in one scheduling group: with the plain release, fastpm's p99 spiked to
    /// 14–27 ms in 4 of 6 runs; with the move, 1.7–2.1 ms in 6 of 6 (php-fpm 1.1–3.1 ms in the
    /// same runs; without the follower, fastpm 2.0–2.5 ms).
    pub fn release(&mut self, pid: u32) {
        let Some(was) = self.pinned.take() else {
            return;
        };
        let Some(home) = self.home.as_ref() else {
            return;
        };
        let child = Pid::from_raw(pid as i32);
        let mut elsewhere = *home;
        if elsewhere.unset(was).is_ok()
            && (0..CpuSet::count()).any(|c| elsewhere.is_set(c) == Ok(true))
        {
            // Best effort: if it fails, the release below still widens the mask.
            let _ = sched_setaffinity(child, &elsewhere);
        }
        if let Err(e) = sched_setaffinity(child, home) {
            tracing::debug!(pid, error = %e, "cannot release php-cgi from its worker's CPU; not pinning again");
            self.enabled = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_table() {
        let cases = [
            // (pinned, worker cpu, expected)
            (None, Some(0), Some(0)),
            (None, Some(3), Some(3)),
            (Some(0), Some(0), None),
            (Some(0), Some(1), Some(1)),
            (Some(1), None, None),
            (None, None, None),
        ];
        for (pinned, cpu, want) in cases {
            assert_eq!(decide(pinned, cpu), want, "pinned {pinned:?} cpu {cpu:?}");
        }
    }

    #[test]
    fn follow_pins_a_real_child_and_release_gives_it_back_every_cpu() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let mut follower = Follower::new();
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            // One CPU: nothing to follow, and nothing is touched.
            follower.follow(child.id());
            assert_eq!((follower.enabled, follower.pinned), (false, None));
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        follower.follow(child.id());
        let cpu = follower.pinned.expect("pinned");
        let set = nix::sched::sched_getaffinity(Pid::from_raw(child.id() as i32)).unwrap();
        let allowed: Vec<usize> = (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect();
        assert_eq!(allowed, vec![cpu]);
        follower.release(child.id());
        assert_eq!(follower.pinned, None);
        let set = nix::sched::sched_getaffinity(Pid::from_raw(child.id() as i32)).unwrap();
        let home = follower.home.expect("this process's mask");
        for c in 0..CpuSet::count() {
            assert_eq!(set.is_set(c).unwrap(), home.is_set(c).unwrap(), "cpu {c}");
        }
        follower.follow(child.id());
        assert!(follower.pinned.is_some(), "pinned again");
        follower.child_restarted();
        assert_eq!(follower.pinned, None);
        let _ = child.kill();
        let _ = child.wait();
    }
}
