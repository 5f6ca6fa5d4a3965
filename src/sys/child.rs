//! Child processes that must not outlive fastpm and that can be signalled as a group: the
//! `pre_exec` hook that makes a spawned program its own session (so `kill(-pid)` reaches it and
//! whatever it forks) and asks the kernel to SIGKILL it when the spawning thread goes away.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Make the program `cmd` will start a session leader (its pid is its process-group id) that
/// the kernel kills with SIGKILL when the thread that spawned it exits (`PR_SET_PDEATHSIG`).
/// Worker threads spawn their own children, so a child dies with its worker and with fastpm.
pub fn own_group_and_die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook runs in the forked child before exec and calls only async-signal-safe
    // functions (setsid, prctl, getppid, _exit); it allocates nothing and touches no locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) == -1
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would ever kill us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}
