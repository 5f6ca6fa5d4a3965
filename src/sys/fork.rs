//! Forking a worker process from the php parent of an embedded-PHP pool (`worker::php_parent`):
//! the child is a copy of a process in which PHP has already started, so the workers share its
//! opcache and the tables PHP built at start-up, as php-fpm's children share its master's.
//!
//! A fork copies one thread only: it is safe to go on running ordinary code in the child only
//! when the parent has a single thread. [`fork_worker`] checks that first.
//!
//! Also here, for a process with PHP inside: ending it at once, and keeping signals off its
//! helper threads.

use std::io;

use nix::unistd::Pid;

/// Which side of the fork this is.
pub enum Forked {
    /// The new process; it dies (SIGKILL) with the parent.
    Child,
    /// The parent; the child's pid.
    Parent(Pid),
}

/// Threads of this process (/proc/self/task).
fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Fork, when this process has one thread (else an error). The child gets
/// `PR_SET_PDEATHSIG` = SIGKILL and exits at once if its parent is already gone.
pub fn fork_worker() -> io::Result<Forked> {
    if thread_count()? != 1 {
        return Err(io::Error::other(
            "the php parent has more than one thread: it cannot fork workers",
        ));
    }
    let parent = nix::unistd::getpid();
    // SAFETY: this process has a single thread (checked above), so the child is a complete
    // copy with no lock held by a thread that does not exist in it.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => {
            super::child::die_with_parent(libc::SIGKILL, parent.as_raw())?;
            Ok(Forked::Child)
        }
    }
}

/// End this process at once with `code`: no exit handlers (libcrypto's cleanup, stdio),
/// which would run while another thread is still inside PHP (the request_timeout watchdog).
pub fn exit_at_once(code: i32) -> ! {
    // SAFETY: _exit ends the process; no memory of ours is touched afterwards.
    unsafe { libc::_exit(code) }
}

/// Keep process-directed signals off the calling thread (a worker's front or watchdog
/// thread): they go to the thread that runs the app, where PHP's timeout (SIGPROF) and the
/// stop signals' handlers expect them.
pub fn keep_signals_off_this_thread() {
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&nix::sys::signal::SigSet::all()),
        None,
    );
}
