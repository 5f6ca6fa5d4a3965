//! The accept lock between worker *threads* of one process, for every kind: each thread with
//! its own `AcceptLock` (`for_worker`), and threads sharing one; plus the handoff text form.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use fastpm::config::AcceptLock as LockKind;
use fastpm::worker::lock::{lock_file_path, AcceptLock, LockError, LockHandoff, LockShared};

const THREADS: usize = 4;
const ITERATIONS: u64 = 200;

/// Count how often two holders were inside at once while THREADS threads take `lock_for(i)`.
fn overlaps_with(lock_for: impl Fn(usize) -> &'static AcceptLock + Sync) -> (u64, u64) {
    let inside = AtomicBool::new(false);
    let overlaps = AtomicU64::new(0);
    let counter = AtomicU64::new(0);
    std::thread::scope(|s| {
        for i in 0..THREADS {
            let (inside, overlaps, counter, lock_for) = (&inside, &overlaps, &counter, &lock_for);
            s.spawn(move || {
                let lock = lock_for(i);
                for _ in 0..ITERATIONS {
                    let _turn = lock.try_acquire().unwrap();
                    if inside.swap(true, SeqCst) {
                        overlaps.fetch_add(1, SeqCst);
                    }
                    // A non-atomic read-modify-write: lost updates show a broken lock too.
                    let n = counter.load(SeqCst);
                    std::thread::sleep(Duration::from_micros(20));
                    counter.store(n + 1, SeqCst);
                    inside.store(false, SeqCst);
                }
            });
        }
    });
    (overlaps.load(SeqCst), counter.load(SeqCst))
}

fn leak(lock: AcceptLock) -> &'static AcceptLock {
    Box::leak(Box::new(lock))
}

const ALL: [LockKind; 3] = [LockKind::Mutex, LockKind::Fcntl, LockKind::Flock];

#[test]
fn lock_each_thread_with_its_own_lock_excludes() {
    for kind in ALL {
        let dir = tempfile::tempdir().unwrap();
        let shared = LockShared::create(kind, dir.path(), "www").unwrap();
        let locks: Vec<&'static AcceptLock> = (0..THREADS)
            .map(|_| leak(AcceptLock::for_worker(&shared).unwrap()))
            .collect();
        let (overlaps, counter) = overlaps_with(|i| locks[i]);
        assert_eq!(overlaps, 0, "{kind}: threads overlapped");
        assert_eq!(counter, THREADS as u64 * ITERATIONS, "{kind}: lost updates");
    }
}

#[test]
fn lock_threads_sharing_one_lock_exclude() {
    for kind in ALL {
        let dir = tempfile::tempdir().unwrap();
        let shared = LockShared::create(kind, dir.path(), "www").unwrap();
        let lock = leak(AcceptLock::for_worker(&shared).unwrap());
        let (overlaps, counter) = overlaps_with(|_| lock);
        assert_eq!(overlaps, 0, "{kind}: threads overlapped");
        assert_eq!(counter, THREADS as u64 * ITERATIONS, "{kind}: lost updates");
    }
}

#[test]
fn lock_for_threads_mutex_excludes() {
    let lock = leak(AcceptLock::for_threads(LockKind::Mutex).unwrap());
    let (overlaps, counter) = overlaps_with(|_| lock);
    assert_eq!(overlaps, 0);
    assert_eq!(counter, THREADS as u64 * ITERATIONS);
}

#[test]
fn lock_none_does_not_exclude() {
    let lock = leak(AcceptLock::for_threads(LockKind::None).unwrap());
    let (overlaps, counter) = overlaps_with(|_| lock);
    assert!(
        overlaps > 0 || counter < THREADS as u64 * ITERATIONS,
        "no lock, yet threads never overlapped"
    );
}

#[test]
fn lock_for_threads_refuses_file_kinds() {
    for kind in [LockKind::Fcntl, LockKind::Flock] {
        let err = AcceptLock::for_threads(kind).expect_err("file kind refused");
        assert!(matches!(err, LockError::NeedsProcessWorkers(_)), "{err}");
    }
}

#[test]
fn lock_file_is_created_0600_in_runtime_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    LockShared::create(LockKind::Flock, dir.path(), "www").unwrap();
    let path = lock_file_path(dir.path(), "www");
    assert_eq!(path, dir.path().join("www.lock"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn lock_file_in_missing_dir_is_a_clear_error() {
    let err = LockShared::create(LockKind::Fcntl, "/nonexistent/fastpm".as_ref(), "www")
        .expect_err("missing runtime dir refused");
    let text = err.to_string();
    assert!(
        text.contains("fcntl") && text.contains("/nonexistent/fastpm/www.lock"),
        "{text}"
    );
}

#[test]
fn lock_handoff_text_round_trips() {
    let cases = [
        ("mutex:fd=5", LockHandoff::Mutex { fd: 5 }),
        ("fcntl:fd=3", LockHandoff::Fcntl { fd: 3 }),
        ("flock:fd=100", LockHandoff::Flock { fd: 100 }),
        ("none", LockHandoff::None),
    ];
    for (text, handoff) in cases {
        assert_eq!(text.parse::<LockHandoff>().unwrap(), handoff, "{text}");
        assert_eq!(handoff.to_string(), text);
    }
}

/// A worker forked by a php parent gets the lock at another descriptor: same kind, new number.
#[test]
fn lock_handoff_moved_to_another_descriptor_keeps_its_kind() {
    let moved = |text: &str| text.parse::<LockHandoff>().unwrap().at(12).to_string();
    assert_eq!(moved("mutex:fd=5"), "mutex:fd=12");
    assert_eq!(moved("fcntl:fd=5"), "fcntl:fd=12");
    assert_eq!(moved("flock:fd=5"), "flock:fd=12");
    assert_eq!(moved("none"), "none");
}

#[test]
fn lock_handoff_rejects_malformed_text() {
    for bad in [
        "",
        "mutex",
        "mutex:5",
        "mutex:fd=",
        "mutex:fd=x",
        "mutex:fd=1",
        "fcntl:/tmp/www.lock",
        "flock:fd=-4",
        "sem:fd=5",
        "None",
    ] {
        let err = bad.parse::<LockHandoff>().err();
        assert!(
            matches!(err, Some(LockError::BadHandoff { .. })),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn lock_handoff_with_closed_fd_is_refused() {
    for handoff in [
        LockHandoff::Mutex { fd: 987 },
        LockHandoff::Flock { fd: 987 },
    ] {
        let err = AcceptLock::from_handoff(&handoff).expect_err("closed descriptor refused");
        assert!(err.to_string().contains("987"), "{err}");
    }
}

#[test]
fn lock_child_fd_per_kind() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [LockKind::Mutex, LockKind::Fcntl, LockKind::Flock] {
        let shared = LockShared::create(kind, dir.path(), "www").unwrap();
        let a = shared.child_fd().unwrap().expect("a descriptor to pass");
        let b = shared.child_fd().unwrap().expect("a descriptor to pass");
        assert_ne!(a.as_raw_fd(), b.as_raw_fd());
        let flags = nix::fcntl::fcntl(a.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            flags & libc::FD_CLOEXEC != 0,
            "{kind}: the master's copy must be CLOEXEC"
        );
    }
    let none = LockShared::create(LockKind::None, dir.path(), "www").unwrap();
    assert!(none.child_fd().unwrap().is_none());
    assert_eq!(none.handoff(7), LockHandoff::None);
}
