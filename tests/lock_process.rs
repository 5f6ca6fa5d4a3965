//! The accept lock between worker *processes*: real mutual exclusion for `mutex`, `fcntl` and
//! `flock`, and recovery of a `mutex` whose holder was SIGKILLed.
//!
//! The worker processes are this test binary re-executed into the test
//! `lock_child_main` (the child entry point), with its instructions in the environment. Each
//! child inherits its lock descriptor (`LockShared::child_fd`: the mutex memfd or its own open
//! of the lock file) at [`CHILD_LOCK_FD`], exactly as a real worker would, and rebuilds the lock
//! with `AcceptLock::from_handoff`.

mod common;

use std::fs;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fastpm::config::AcceptLock as LockKind;
use fastpm::sys::child::ChildSetup;
use fastpm::sys::privileges::{resolve, Credentials};
use fastpm::worker::lock::{AcceptLock, LockHandoff, LockShared};

/// Where a child finds its lock descriptor.
const CHILD_LOCK_FD: RawFd = 100;
const PROCESSES: usize = 4;
const ITERATIONS: u64 = 40;

/// Child entry point (run by the parent tests with `--exact`; run alone, it checks that it answers as one).
#[test]
fn lock_child_main() {
    let Ok(handoff) = std::env::var("FASTPM_LOCK_CHILD_HANDOFF") else {
        return common::child_entry_point_answers("lock_child_main", "FASTPM_LOCK_CHILD_HANDOFF");
    };
    if handoff == "probe" {
        println!("{}", common::CHILD_PROBE_OK);
        return;
    }
    let dir = PathBuf::from(std::env::var("FASTPM_LOCK_CHILD_DIR").unwrap());
    let mode = std::env::var("FASTPM_LOCK_CHILD_MODE").unwrap();
    let handoff: LockHandoff = handoff.parse().unwrap();
    let lock = AcceptLock::from_handoff(&handoff).unwrap();
    match mode.as_str() {
        "count" => {
            let iterations: u64 = std::env::var("FASTPM_LOCK_CHILD_ITERS")
                .unwrap()
                .parse()
                .unwrap();
            // Start together, so that without a lock the children really do collide.
            while !dir.join("go").exists() {
                std::thread::sleep(Duration::from_millis(1));
            }
            for _ in 0..iterations {
                let _turn = lock.try_acquire().unwrap();
                critical_section(&dir);
            }
        }
        "hold" => {
            let _turn = lock.try_acquire().unwrap();
            fs::write(dir.join("held"), b"").unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// The work done under the lock: a marker file that must not exist yet (else another holder is
/// inside: recorded as an overlap), then a read-modify-write of a counter file.
fn critical_section(dir: &Path) {
    let marker = dir.join("inside");
    let entered = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .is_ok();
    if !entered {
        fs::write(dir.join(format!("overlap-{}", std::process::id())), b"").unwrap();
    }
    let counter = dir.join("counter");
    let n: u64 = fs::read_to_string(&counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_micros(200));
    fs::write(&counter, (n + 1).to_string()).unwrap();
    if entered {
        fs::remove_file(&marker).unwrap();
    }
}

fn spawn_child(shared: &LockShared, dir: &Path, mode: &str, iterations: u64) -> Child {
    spawn_child_as(shared, dir, mode, iterations, None)
}

/// Start a child worker; with `creds` it drops to those ids before exec, as a real worker does.
fn spawn_child_as(
    shared: &LockShared,
    dir: &Path,
    mode: &str,
    iterations: u64,
    creds: Option<Credentials>,
) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "lock_child_main",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(
        "FASTPM_LOCK_CHILD_HANDOFF",
        shared.handoff(CHILD_LOCK_FD).to_string(),
    )
    .env("FASTPM_LOCK_CHILD_DIR", dir)
    .env("FASTPM_LOCK_CHILD_MODE", mode)
    .env("FASTPM_LOCK_CHILD_ITERS", iterations.to_string())
    .stdout(Stdio::null());
    let lock_fd = shared.child_fd().unwrap();
    if let Some(fd) = lock_fd.as_ref().map(|fd| fd.as_raw_fd()) {
        // SAFETY: dup2/fcntl are async-signal-safe and touch no memory; this is how a worker
        // process inherits its lock at a known number (dup2 leaves the copy without CLOEXEC).
        unsafe {
            cmd.pre_exec(move || {
                if fd == CHILD_LOCK_FD {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, CHILD_LOCK_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    if creds.is_some() {
        ChildSetup::new().run_as(creds).apply(&mut cmd);
    }
    let child = cmd.spawn().unwrap();
    drop(lock_fd); // the child has its own copy now
    child
}

/// Run PROCESSES children counting ITERATIONS times each; return (counter, overlaps seen).
fn run_counting(kind: LockKind) -> (u64, usize) {
    let dir = tempfile::tempdir().unwrap();
    run_counting_in(kind, dir.path(), dir.path(), None)
}

/// The lock lives in `lock_dir`, the shared counter in `data_dir`.
fn run_counting_in(
    kind: LockKind,
    lock_dir: &Path,
    data_dir: &Path,
    creds: Option<Credentials>,
) -> (u64, usize) {
    let shared = LockShared::create(kind, lock_dir, "www").unwrap();
    let children: Vec<Child> = (0..PROCESSES)
        .map(|_| spawn_child_as(&shared, data_dir, "count", ITERATIONS, creds.clone()))
        .collect();
    fs::write(data_dir.join("go"), b"").unwrap();
    for mut child in children {
        let status = child.wait().unwrap();
        assert!(status.success(), "{kind} child failed: {status}");
    }
    let counter: u64 = fs::read_to_string(data_dir.join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let overlaps = fs::read_dir(data_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("overlap-")
        })
        .count();
    (counter, overlaps)
}

fn assert_exclusive(kind: LockKind) {
    let (counter, overlaps) = run_counting(kind);
    assert_eq!(overlaps, 0, "{kind}: two processes were inside at once");
    assert_eq!(
        counter,
        PROCESSES as u64 * ITERATIONS,
        "{kind}: increments were lost, so the lock did not exclude"
    );
}

#[test]
fn lock_mutex_excludes_processes() {
    assert_exclusive(LockKind::Mutex);
}

#[test]
fn lock_fcntl_excludes_processes() {
    assert_exclusive(LockKind::Fcntl);
}

#[test]
fn lock_flock_excludes_processes() {
    assert_exclusive(LockKind::Flock);
}

/// The check itself can fail: without a lock the same children do overlap and lose increments.
#[test]
fn lock_none_lets_processes_overlap() {
    let (counter, overlaps) = run_counting(LockKind::None);
    assert!(
        overlaps > 0 || counter < PROCESSES as u64 * ITERATIONS,
        "no lock, yet no overlap and no lost increment in {} rounds",
        PROCESSES as u64 * ITERATIONS
    );
}

#[test]
fn lock_mutex_recovers_after_holder_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let shared = LockShared::create(LockKind::Mutex, dir.path(), "www").unwrap();
    let mut holder = spawn_child(&shared, dir.path(), "hold", 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.path().join("held").exists() {
        assert!(Instant::now() < deadline, "holder never took the lock");
        if let Some(status) = holder.try_wait().unwrap() {
            panic!("holder exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    holder.kill().unwrap(); // SIGKILL while it holds the lock
    holder.wait().unwrap();

    let lock = AcceptLock::for_worker(&shared).unwrap();
    let guard = lock.try_acquire().expect("lock after owner death");
    assert!(
        guard.recovered_owner_death(),
        "the dead holder's lock was not reported as recovered"
    );
    drop(guard);
    let again = lock.try_acquire().unwrap();
    assert!(
        !again.recovered_owner_death(),
        "a normal acquire after recovery must not report a recovery"
    );
}

#[test]
fn lock_file_kinds_exclude_holder_process() {
    // A process holding the file lock keeps this process out until it dies.
    for kind in [LockKind::Fcntl, LockKind::Flock] {
        let dir = tempfile::tempdir().unwrap();
        let shared = LockShared::create(kind, dir.path(), "www").unwrap();
        let mut holder = spawn_child(&shared, dir.path(), "hold", 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.path().join("held").exists() {
            assert!(
                Instant::now() < deadline,
                "{kind}: holder never took the lock"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let lock = AcceptLock::for_worker(&shared).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _g = lock.try_acquire().unwrap();
                tx.send(()).unwrap();
            });
            assert!(
                rx.recv_timeout(Duration::from_millis(300)).is_err(),
                "{kind}: lock taken while another process held it"
            );
            holder.kill().unwrap();
            holder.wait().unwrap();
            rx.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{kind}: lock not released by the holder's death"));
        });
    }
}

/// Workers that dropped privileges still lock a file in the master's private 0700 runtime dir:
/// they inherit an open of it instead of opening it by path.
#[test]
fn lock_file_kinds_work_for_unprivileged_workers() {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root, like the master"
    );
    let nobody = resolve(Some("nobody"), None).unwrap().unwrap();
    for kind in [LockKind::Fcntl, LockKind::Flock, LockKind::Mutex] {
        let runtime = tempfile::tempdir().unwrap();
        fs::set_permissions(runtime.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let data = tempfile::tempdir().unwrap();
        fs::set_permissions(data.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let (counter, overlaps) =
            run_counting_in(kind, runtime.path(), data.path(), Some(nobody.clone()));
        assert_eq!(overlaps, 0, "{kind}: unprivileged workers overlapped");
        assert_eq!(
            counter,
            PROCESSES as u64 * ITERATIONS,
            "{kind}: lost updates"
        );
    }
}
