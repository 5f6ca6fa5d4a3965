//! The accept lock in the shape worker processes will use it: several re-executed processes
//! inherit one listening socket and their own lock descriptor, take the lock around
//! `accept()` only, and between them answer every connection.
//!
//! The worker processes are this test binary re-executed into the test
//! `accept_child_main`.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use fastpm::config::AcceptLock as LockKind;
use fastpm::listen::Listener;
use fastpm::sys::inherit::adopt_inherited_fd;
use fastpm::worker::lock::{AcceptLock, LockHandoff, LockShared};

const CHILD_LISTENER_FD: RawFd = 101;
const CHILD_LOCK_FD: RawFd = 102;
const WORKERS: usize = 3;
const CONNECTIONS: usize = 30;

/// Child entry point: accept under the lock; answer `r` with the pid, stop on `q`.
#[test]
fn accept_child_main() {
    let Ok(handoff) = std::env::var("FASTPM_ACCEPT_CHILD_HANDOFF") else {
        return common::child_entry_point_answers(
            "accept_child_main",
            "FASTPM_ACCEPT_CHILD_HANDOFF",
        );
    };
    if handoff == "probe" {
        println!("{}", common::CHILD_PROBE_OK);
        return;
    }
    let handoff: LockHandoff = handoff.parse().unwrap();
    let lock = AcceptLock::from_handoff(&handoff).unwrap();
    let listener =
        Listener::from_inherited(adopt_inherited_fd(CHILD_LISTENER_FD).unwrap()).unwrap();
    loop {
        let (mut stream, _) = {
            let _turn = lock.try_acquire().unwrap();
            listener.accept().unwrap()
        };
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).unwrap();
        if byte[0] == b'q' {
            return;
        }
        stream
            .write_all(std::process::id().to_string().as_bytes())
            .unwrap();
    }
}

fn spawn_worker(shared: &LockShared, listener: &UnixListener) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "accept_child_main", "--nocapture"])
        .env(
            "FASTPM_ACCEPT_CHILD_HANDOFF",
            shared.handoff(CHILD_LOCK_FD).to_string(),
        )
        .stdout(Stdio::null());
    let listen_fd = listener.as_raw_fd();
    let lock = shared.child_fd().unwrap();
    let lock_fd = lock.as_ref().map_or(-1, |fd| fd.as_raw_fd());
    // SAFETY: only fcntl/dup2/close run in the child (async-signal-safe, no allocation); the
    // sources are first copied above 200 so placing them cannot clobber one another.
    unsafe {
        cmd.pre_exec(move || {
            for (src, dst) in [(listen_fd, CHILD_LISTENER_FD), (lock_fd, CHILD_LOCK_FD)] {
                if src < 0 {
                    continue;
                }
                let high = libc::fcntl(src, libc::F_DUPFD, 200 + dst);
                if high < 0 || libc::dup2(high, dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(high);
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(lock); // the child has its own copy now
    child
}

fn serve_with(kind: LockKind) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("www.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let shared = LockShared::create(kind, dir.path(), "www").unwrap();
    let mut workers: Vec<Child> = (0..WORKERS)
        .map(|_| spawn_worker(&shared, &listener))
        .collect();
    let mut pids = std::collections::HashSet::new();
    for _ in 0..CONNECTIONS {
        let mut stream = UnixStream::connect(&path).unwrap();
        // A dead worker pool must fail the test, not hang it.
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        stream.write_all(b"r").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let pid: u32 = answer
            .parse()
            .unwrap_or_else(|_| panic!("{kind}: bad answer {answer:?}"));
        pids.insert(pid);
    }
    for _ in 0..WORKERS {
        UnixStream::connect(&path).unwrap().write_all(b"q").unwrap();
    }
    let spawned: std::collections::HashSet<u32> = workers.iter().map(Child::id).collect();
    for worker in &mut workers {
        assert!(worker.wait().unwrap().success(), "{kind}: a worker failed");
    }
    assert!(
        pids.is_subset(&spawned),
        "{kind}: answers from unknown processes {pids:?}"
    );
}

#[test]
fn lock_accept_mutex_workers_answer_every_connection() {
    serve_with(LockKind::Mutex);
}

#[test]
fn lock_accept_fcntl_workers_answer_every_connection() {
    serve_with(LockKind::Fcntl);
}

#[test]
fn lock_accept_flock_workers_answer_every_connection() {
    serve_with(LockKind::Flock);
}

#[test]
fn lock_accept_none_workers_answer_every_connection() {
    serve_with(LockKind::None);
}
