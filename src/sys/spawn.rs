//! Starting a worker process: the descriptors it must inherit survive `exec`, everything else
//! stays close-on-exec, and the worker dies with the master.
//!
//! Why `pre_exec`: fastpm's descriptors are all `O_CLOEXEC` (so php-cgi children and anything
//! else exec'd never leak them); only the chosen ones are made inheritable, and only in the child
//! between `fork` and `exec`, so the master's own copies keep the flag.

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Make `fds` inheritable in the child `cmd` will start, and have the kernel send it SIGKILL if
/// the thread that starts it (the master's supervisor thread) dies.
pub fn inherit_fds_and_die_with_parent(cmd: &mut Command, fds: Vec<RawFd>) {
    inherit_fds(cmd, fds, true)
}

/// Make `fds` inheritable in the child; with `die_with_parent`, the child gets SIGKILL when the
/// starting thread dies (worker processes), without it the child outlives us (a new master
/// after a binary upgrade).
pub fn inherit_fds(cmd: &mut Command, fds: Vec<RawFd>, die_with_parent: bool) {
    // SAFETY: the closure runs in the child after fork and before exec, where only
    // async-signal-safe functions may be called: fcntl and prctl are system calls that allocate
    // nothing; `fds` was allocated before fork and is only read.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if die_with_parent
                && libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) == -1
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
