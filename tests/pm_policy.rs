//! The pm policy (src/master/pm.rs), rule by rule, as tables: static, dynamic (spare bounds,
//! the 1→32 spawn ramp, one stop per tick, max_children episodes), ondemand (spawn on queued
//! connections, idle_timeout), max_requests recycling and the crash-loop guard.

use std::time::{Duration, Instant};

use fastpm::config::PmKind;
use fastpm::master::pm::{
    backoff, initial_workers, is_crash, maintain, report_exit, should_recycle, Activity,
    CrashGuard, CrashVerdict, Decision, ExitReport, PmSettings, PmState, PmWarning, PoolView,
    WorkerExit, WorkerView, EARLY_EXIT, MAX_SPAWN_RATE,
};

fn settings(kind: PmKind, max: u32, start: u32, min_spare: u32, max_spare: u32) -> PmSettings {
    PmSettings {
        kind,
        max_children: max,
        start_servers: start,
        min_spare_servers: min_spare,
        max_spare_servers: max_spare,
        idle_timeout: Duration::from_secs(10),
    }
}

/// Workers described compactly: `'i'` idle for `idle_secs[k]`, `'b'` busy; worker k started
/// `100 - k` seconds ago (so lower ids are older).
fn workers(now: Instant, shape: &str, idle_secs: &[u64]) -> Vec<WorkerView> {
    let mut idle = idle_secs.iter();
    shape
        .chars()
        .enumerate()
        .map(|(k, c)| WorkerView {
            id: k as u64,
            started: now - Duration::from_secs(100 - k as u64),
            activity: match c {
                'i' => Activity::Idle {
                    since: now - Duration::from_secs(*idle.next().unwrap_or(&0)),
                },
                'b' => Activity::Busy,
                other => panic!("bad shape {other}"),
            },
        })
        .collect()
}

fn tick(s: &PmSettings, shape: &str, idle_secs: &[u64], queued: u64, state: PmState) -> Decision {
    let now = Instant::now();
    let ws = workers(now, shape, idle_secs);
    maintain(
        s,
        &PoolView {
            workers: &ws,
            queued,
            now,
        },
        state,
    )
}

fn rate(spawn_rate: u32) -> PmState {
    PmState {
        spawn_rate,
        at_max_children: false,
    }
}

#[test]
fn pm_initial_workers_per_kind() {
    let cases = [
        (settings(PmKind::Static, 4, 2, 1, 3), 4),
        (settings(PmKind::Dynamic, 4, 2, 1, 3), 2),
        (settings(PmKind::Dynamic, 4, 9, 1, 3), 4), // start_servers capped by max_children
        (settings(PmKind::Ondemand, 4, 2, 1, 3), 0),
    ];
    for (s, want) in cases {
        assert_eq!(initial_workers(&s), want, "{s:?}");
    }
}

#[test]
fn pm_static_keeps_exactly_max_children() {
    let s = settings(PmKind::Static, 4, 0, 0, 0);
    // (shape, idle seconds, spawn, stop)
    let cases: [(&str, &[u64], u32, &[u64]); 6] = [
        ("", &[], 4, &[]),
        ("bb", &[], 2, &[]),
        ("iiii", &[1, 1, 1, 1], 0, &[]),
        ("bbbb", &[], 0, &[]),
        // After a reload lowered max_children: stop surplus idle workers, oldest first.
        ("biiiib", &[5, 5, 5, 5], 0, &[1, 2]),
        ("bbbbbb", &[], 0, &[]), // surplus but all busy: wait for them to become idle
    ];
    for (shape, idle, spawn, stop) in cases {
        let d = tick(&s, shape, idle, 50, PmState::default());
        assert_eq!(d.spawn, spawn, "{shape}");
        assert_eq!(d.stop, stop, "{shape}");
        assert!(
            !d.max_children_reached,
            "static never counts max children reached"
        );
        assert_eq!(d.warning, None);
    }
}

#[test]
fn pm_dynamic_spawn_ramp_doubles_to_32() {
    // max_children high, min_spare high: idle stays below min_spare, so the rate ramps.
    let s = settings(PmKind::Dynamic, 1000, 5, 200, 300);
    let mut state = PmState::default();
    let mut spawned = Vec::new();
    for _ in 0..8 {
        let d = tick(&s, "bbbbb", &[], 0, state);
        spawned.push(d.spawn);
        state = d.next;
    }
    assert_eq!(spawned, [1, 2, 4, 8, 16, 32, 32, 32]);
    assert_eq!(state.spawn_rate, MAX_SPAWN_RATE);
}

#[test]
fn pm_dynamic_rules_table() {
    let s = settings(PmKind::Dynamic, 10, 4, 2, 4);
    struct Case {
        shape: &'static str,
        idle: &'static [u64],
        rate_in: u32,
        spawn: u32,
        stop: &'static [u64],
        rate_out: u32,
    }
    let cases = [
        // idle within [min_spare, max_spare]: nothing, rate reset
        Case {
            shape: "iib",
            idle: &[1, 1],
            rate_in: 4,
            spawn: 0,
            stop: &[],
            rate_out: 1,
        },
        Case {
            shape: "iiiib",
            idle: &[1, 1, 1, 1],
            rate_in: 1,
            spawn: 0,
            stop: &[],
            rate_out: 1,
        },
        // idle over max_spare: stop ONE, the oldest process (lowest id here), rate reset
        Case {
            shape: "biiiiii",
            idle: &[1, 9, 1, 1, 1, 1],
            rate_in: 8,
            spawn: 0,
            stop: &[1],
            rate_out: 1,
        },
        // idle below min_spare: spawn min(rate, min_spare - idle, max - running)
        Case {
            shape: "bbb",
            idle: &[],
            rate_in: 1,
            spawn: 1,
            stop: &[],
            rate_out: 2,
        },
        Case {
            shape: "bbb",
            idle: &[],
            rate_in: 2,
            spawn: 2,
            stop: &[],
            rate_out: 4,
        },
        Case {
            shape: "bbb",
            idle: &[],
            rate_in: 4,
            spawn: 2,
            stop: &[],
            rate_out: 8,
        }, // min_spare - idle = 2
        Case {
            shape: "ibb",
            idle: &[1],
            rate_in: 4,
            spawn: 1,
            stop: &[],
            rate_out: 8,
        },
        Case {
            shape: "bbbbbbbbb",
            idle: &[],
            rate_in: 4,
            spawn: 1,
            stop: &[],
            rate_out: 8,
        }, // room = 1
        Case {
            shape: "bbb",
            idle: &[],
            rate_in: 32,
            spawn: 2,
            stop: &[],
            rate_out: 32,
        },
        Case {
            shape: "bbb",
            idle: &[],
            rate_in: 0,
            spawn: 1,
            stop: &[],
            rate_out: 2,
        }, // 0 treated as 1
    ];
    for c in cases {
        let d = tick(&s, c.shape, c.idle, 0, rate(c.rate_in));
        assert_eq!(
            (d.spawn, d.stop.as_slice(), d.next.spawn_rate),
            (c.spawn, c.stop, c.rate_out),
            "shape {} rate {}",
            c.shape,
            c.rate_in
        );
        assert!(!d.max_children_reached, "shape {}", c.shape);
    }
}

#[test]
fn pm_dynamic_warns_busy_from_rate_8() {
    let s = settings(PmKind::Dynamic, 100, 5, 50, 60);
    for (rate_in, warns) in [(1, false), (4, false), (8, true), (32, true)] {
        let d = tick(&s, "bbbi", &[0], 0, rate(rate_in));
        assert_eq!(d.warning.is_some(), warns, "rate {rate_in}");
        if let Some(w) = d.warning {
            assert_eq!(
                w,
                PmWarning::SeemsBusy {
                    spawning: rate_in,
                    idle: 1,
                    total: 4
                }
            );
            assert!(w.to_string().contains("seems busy"), "{w}");
        }
    }
}

#[test]
fn pm_dynamic_max_children_reached_once_per_episode() {
    let s = settings(PmKind::Dynamic, 3, 2, 2, 3);
    // All busy at max: wanted more, cannot.
    let first = tick(&s, "bbb", &[], 5, rate(4));
    assert_eq!(first.spawn, 0);
    assert!(first.max_children_reached);
    assert_eq!(
        first.warning,
        Some(PmWarning::MaxChildrenReached { max_children: 3 })
    );
    assert_eq!(first.next.spawn_rate, 1, "rate reset at max_children");
    // Still at max next tick: the episode was counted already.
    let second = tick(&s, "bbb", &[], 5, first.next);
    assert!(!second.max_children_reached);
    assert_eq!(second.warning, None);
    // A worker exits, a spawn happens: the episode ends …
    let third = tick(&s, "bb", &[], 5, second.next);
    assert_eq!(third.spawn, 1);
    assert!(!third.next.at_max_children);
    // … so the next time at max counts again.
    let fourth = tick(&s, "bbb", &[], 5, third.next);
    assert!(fourth.max_children_reached);
    // Enough idle workers at max: the policy wants nothing, nothing is counted.
    let calm = tick(&s, "iib", &[1, 1], 0, PmState::default());
    assert!(!calm.max_children_reached);
}

#[test]
fn pm_ondemand_rules_table() {
    let s = settings(PmKind::Ondemand, 4, 0, 0, 0); // idle_timeout 10 s
                                                    // (shape, idle seconds, queued, spawn, stop, max children reached)
    type Case = (&'static str, &'static [u64], u64, u32, &'static [u64], bool);
    let cases: [Case; 10] = [
        ("", &[], 0, 0, &[], false),
        ("", &[], 1, 1, &[], false),
        ("", &[], 3, 3, &[], false),
        ("", &[], 9, 4, &[], false), // capped by max_children, not "reached": some room was left
        ("ib", &[1], 1, 0, &[], false), // an idle worker will take it
        ("ib", &[1], 3, 2, &[], false),
        ("bbbb", &[], 2, 0, &[], true),
        // idle_timeout: stop the longest idle one only, and only past the timeout
        ("iiib", &[5, 30, 11], 0, 0, &[1], false),
        ("iib", &[10, 3], 0, 0, &[], false), // exactly the timeout is not longer than it
        ("iib", &[30, 30], 1, 0, &[], false), // something queued: the idle one is about to take it
    ];
    for (shape, idle, queued, spawn, stop, reached) in cases {
        let d = tick(&s, shape, idle, queued, PmState::default());
        assert_eq!(
            (d.spawn, d.stop.as_slice(), d.max_children_reached),
            (spawn, stop, reached),
            "shape {shape:?} idle {idle:?} queued {queued}"
        );
    }
}

#[test]
fn pm_ondemand_max_children_counts_once_per_episode() {
    let s = settings(PmKind::Ondemand, 2, 0, 0, 0);
    let a = tick(&s, "bb", &[], 3, PmState::default());
    assert!(a.max_children_reached);
    let b = tick(&s, "bb", &[], 3, a.next);
    assert!(!b.max_children_reached);
    let c = tick(&s, "b", &[], 3, b.next);
    assert_eq!(c.spawn, 1);
    let d = tick(&s, "bb", &[], 3, c.next);
    assert!(d.max_children_reached);
}

#[test]
fn pm_max_requests_recycling() {
    let cases = [
        (0, 0, false),
        (0, 1_000_000, false), // 0 = never
        (500, 499, false),
        (500, 500, true),
        (500, 501, true),
        (1, 1, true),
    ];
    for (max, served, want) in cases {
        assert_eq!(
            should_recycle(max, served),
            want,
            "max {max} served {served}"
        );
    }
}

#[test]
fn pm_crash_classification() {
    let cases = [
        (WorkerExit::Requested, false),
        (WorkerExit::Exited(0), false),
        (WorkerExit::Exited(1), true),
        (WorkerExit::Exited(255), true),
        (WorkerExit::Signaled(libc::SIGSEGV), true),
        (WorkerExit::Signaled(libc::SIGKILL), true), // e.g. the OOM killer
    ];
    for (exit, want) in cases {
        assert_eq!(is_crash(exit), want, "{exit:?}");
    }
}

/// An exec pool's program that exits 0 unasked is said (a cold start follows); right after its
/// start it is a warning (a restart loop the crash guard does not see). A fastpm worker's
/// exit 0 is its `max_requests` recycling: quiet.
#[test]
fn pm_exit_reports() {
    let ms = Duration::from_millis;
    let early = EARLY_EXIT - ms(1);
    let late = EARLY_EXIT + ms(1);
    let quiet = ExitReport::Quiet;
    let on_its_own = |early| ExitReport::LeftOnItsOwn { early };
    let cases = [
        (WorkerExit::Requested, early, true, quiet),
        (WorkerExit::Requested, late, false, quiet),
        (WorkerExit::Exited(0), early, false, quiet),
        (WorkerExit::Exited(0), late, false, quiet),
        (WorkerExit::Exited(0), ms(200), true, on_its_own(true)),
        (WorkerExit::Exited(0), early, true, on_its_own(true)),
        (WorkerExit::Exited(0), late, true, on_its_own(false)),
        (
            WorkerExit::Exited(0),
            Duration::from_secs(3600),
            true,
            on_its_own(false),
        ),
        (WorkerExit::Exited(1), early, true, ExitReport::Crash),
        (WorkerExit::Exited(1), late, false, ExitReport::Crash),
        (
            WorkerExit::Signaled(libc::SIGSEGV),
            late,
            true,
            ExitReport::Crash,
        ),
    ];
    for (exit, lived, exec, want) in cases {
        assert_eq!(
            report_exit(exit, lived, exec),
            want,
            "{exit:?} {lived:?} exec={exec}"
        );
    }
}

#[test]
fn pm_backoff_doubles_and_caps() {
    let secs: Vec<u64> = (1..=9).map(|t| backoff(t).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(backoff(0), Duration::from_secs(1));
    assert_eq!(backoff(u32::MAX), Duration::from_secs(60));
}

#[test]
fn pm_crash_guard_trips_at_threshold_within_interval() {
    let t0 = Instant::now();
    let mut guard = CrashGuard::new(3, Duration::from_secs(10));
    let at = |s: u64| t0 + Duration::from_secs(s);
    assert_eq!(guard.record_crash(at(0)), CrashVerdict::Respawn);
    assert_eq!(guard.record_crash(at(1)), CrashVerdict::Respawn);
    assert_eq!(
        guard.record_crash(at(2)),
        CrashVerdict::BackOff {
            delay: Duration::from_secs(1),
            crashes: 3
        }
    );
    assert_eq!(guard.respawn_delay(at(2)), Duration::from_secs(1));
    assert_eq!(guard.respawn_delay(at(3)), Duration::ZERO);
    // The loop goes on right after the back-off: the next trip waits twice as long.
    guard.record_crash(at(4));
    guard.record_crash(at(4));
    assert_eq!(
        guard.record_crash(at(5)),
        CrashVerdict::BackOff {
            delay: Duration::from_secs(2),
            crashes: 3
        }
    );
}

#[test]
fn pm_crash_guard_forgets_old_crashes_and_resets_after_quiet() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut guard = CrashGuard::new(3, Duration::from_secs(10));
    // Spread out: never 3 within 10 s.
    for s in [0, 6, 12, 18, 24, 30] {
        assert_eq!(guard.record_crash(at(s)), CrashVerdict::Respawn, "at {s}");
    }
    // Trip, then stay quiet for long: the ramp starts again at 1 s.
    let mut guard = CrashGuard::new(2, Duration::from_secs(10));
    guard.record_crash(at(0));
    assert!(matches!(
        guard.record_crash(at(0)),
        CrashVerdict::BackOff { .. }
    ));
    guard.record_crash(at(100));
    assert_eq!(
        guard.record_crash(at(100)),
        CrashVerdict::BackOff {
            delay: Duration::from_secs(1),
            crashes: 2
        }
    );
}

#[test]
fn pm_crash_guard_threshold_zero_is_off() {
    let t0 = Instant::now();
    let mut guard = CrashGuard::new(0, Duration::from_secs(10));
    for _ in 0..100 {
        assert_eq!(guard.record_crash(t0), CrashVerdict::Respawn);
    }
    assert_eq!(guard.respawn_delay(t0), Duration::ZERO);
    // The default guard is on (php-fpm's example values: 10 within 1 minute).
    let mut default = CrashGuard::default();
    let verdicts: Vec<CrashVerdict> = (0..10).map(|_| default.record_crash(t0)).collect();
    assert!(verdicts[..9].iter().all(|v| *v == CrashVerdict::Respawn));
    assert!(matches!(verdicts[9], CrashVerdict::BackOff { .. }));
}

/// A reload retires earlier generations one for one as the new one starts: the pool never has
/// fewer serving workers than its target because of a reload.
#[test]
fn reload_retires_old_workers_one_for_one() {
    use fastpm::master::process_pool::to_retire;
    // (new generation running, old still serving, target) → old to retire
    let table = [
        ((0, 4, 4), 0), // nothing new started yet: keep every old worker
        ((1, 4, 4), 1), // one new: one old may go
        ((4, 4, 4), 4), // all new: all old go
        ((2, 2, 4), 0), // an earlier reload already retired two: the pool is at 4
        ((3, 2, 4), 1),
        ((0, 3, 0), 3), // ondemand (target 0): all old go, the pm starts workers on demand
        ((6, 1, 2), 1), // dynamic scaled up beyond start_servers: the rest of the old go
        ((0, 0, 4), 0),
    ];
    for ((current, old, target), want) in table {
        assert_eq!(
            to_retire(current, old, target),
            want,
            "current {current}, old {old}, target {target}"
        );
    }
}
