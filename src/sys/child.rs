//! Every program fastpm starts (worker processes, exec-pool programs, php-cgi, CGI scripts, a
//! new master after a binary upgrade) is set up by [`ChildSetup`]: one `pre_exec` hook that owns
//! the order of what happens between `fork` and `exec`, and one place that keeps systemd's
//! variables out of children.
//!
//! The order in the hook, and why:
//!
//! 1. `setpgid(0, 0)` (optional): a process group of its own, so `kill(-pid)` reaches the child
//!    and whatever it forks (php-cgi and CGI scripts), inside fastpm's session — not `setsid`:
//!    with `kernel.sched_autogroup_enabled` each session is a scheduling group of its own, and a
//!    pool whose php-cgi each led a session got a share of the CPU per child beside fastpm's
//!    (php-fpm's children all stay in php-fpm's session: one share).
//!    Then the controlling terminal is given up (`TIOCNOTTY` on `/dev/tty`, when there is
//!    one), which a session of its own used to give: a child that dropped to `www-data` must not
//!    reach the terminal of the root who started fastpm in the foreground (`TIOCSTI` pushes
//!    input into it). With no controlling terminal it cannot open `/dev/tty`, `TIOCSTI` on an
//!    inherited terminal descriptor needs `CAP_SYS_ADMIN`, and a hang-up does not reach it.
//! 2. Drop privileges (optional): setgroups/setgid/setuid to the pool's `user`/`group`, skipped
//!    when the process already runs as exactly those ids (a worker process that dropped them
//!    already starting its php-cgi).
//! 3. `PR_SET_PDEATHSIG` (SIGKILL, or SIGTERM when asked): *after* the drop, because the
//!    kernel clears the parent-death signal whenever credentials change (prctl(2)); set before it, a `user = "nobody"` worker
//!    would outlive a SIGKILLed master. The signal fires when the *thread* that forked exits,
//!    not the process: worker threads start their own php-cgi and CGI children, so a child dies
//!    with its worker thread and with fastpm; the master starts worker processes from its
//!    supervisor thread, which lives as long as the master.
//! 4. `getppid()` against the parent's pid read before `fork`: if the parent died before step 3,
//!    nobody would ever kill the child, so it leaves at once (`_exit`).
//! 5. Clear `FD_CLOEXEC` on the descriptors the child must inherit. fastpm's own descriptors are
//!    all close-on-exec, so only the chosen ones survive `exec`, and only in the child: the
//!    parent's copies keep the flag.
//!
//! The hook is async-signal-safe: it allocates nothing (everything it reads was allocated before
//! `fork`) and calls only system calls.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::SigSet;

use super::privileges::{current_ids, drop_privileges, running_as, Credentials};

/// systemd's variables belong to the master: a child that inherited them could notify systemd
/// in the master's name or adopt descriptors that are not its own.
pub const SYSTEMD_ENV: [&str; 4] = [
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
];

/// How a child process is set up between `fork` and `exec`. Built, then [`ChildSetup::apply`]d
/// to a `Command` as its one `pre_exec` hook.
#[derive(Clone, Debug)]
pub struct ChildSetup {
    /// A process group of its own but the parent's session (see `own_process_group`).
    own_group: bool,
    /// Give up the controlling terminal (every child but a new master).
    drop_terminal: bool,
    credentials: Option<Credentials>,
    die_with_parent: bool,
    /// The parent-death signal: SIGKILL, or SIGTERM for a program that cleans up after itself
    /// on it (a php-cgi parent kills its children on SIGTERM; SIGKILL would orphan them).
    death_signal: libc::c_int,
    inherit: Vec<RawFd>,
    keep_systemd_env: bool,
    /// Signals the child starts with blocked (a fastpm worker: those it handles, so one sent
    /// between exec and its handlers waits instead of killing it with the default action).
    block: Option<SigSet>,
}

impl Default for ChildSetup {
    fn default() -> Self {
        Self::new()
    }
}

impl ChildSetup {
    /// A child that dies with the thread that starts it, inherits no descriptor beyond 0–2,
    /// keeps the parent's ids and gets no systemd variables.
    pub fn new() -> Self {
        Self {
            own_group: false,
            drop_terminal: true,
            credentials: None,
            die_with_parent: true,
            death_signal: libc::SIGKILL,
            inherit: Vec::new(),
            keep_systemd_env: false,
            block: None,
        }
    }

    /// Start the child with `signals` blocked (the mask survives `exec`). Only for a program
    /// that unblocks them itself once it handles them: fastpm's own workers, never php-cgi.
    pub fn block_signals(mut self, signals: SigSet) -> Self {
        self.block = Some(signals);
        self
    }

    /// Send `signal` instead of SIGKILL when the starting thread dies.
    pub fn death_signal(mut self, signal: nix::sys::signal::Signal) -> Self {
        self.death_signal = signal as libc::c_int;
        self
    }

    /// Make the child a process-group leader inside the parent's session: `kill(-pid)` reaches
    /// it and what it forks, and it stays in fastpm's scheduling group (with
    /// `kernel.sched_autogroup_enabled`, each session is one), as php-fpm's children stay in
    /// php-fpm's. A program that calls `setsid` itself (php-cgi's parent does) then fails to,
    /// being a group leader, and stays too. A terminal signal (Ctrl-C) goes to the foreground
    /// group only: the master's, which stops the pool in order.
    pub fn own_process_group(mut self) -> Self {
        self.own_group = true;
        self
    }

    /// Run the child as `credentials` (`None`: the parent's ids).
    pub fn run_as(mut self, credentials: Option<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Keep these descriptors open across `exec`, at the same numbers.
    pub fn inherit(mut self, fds: Vec<RawFd>) -> Self {
        self.inherit = fds;
        self
    }

    /// A new master after a binary upgrade: it must outlive the old one, and it is systemd's
    /// service now (it notifies `MAINPID=` itself), so it keeps systemd's variables.
    pub fn new_master(mut self) -> Self {
        self.die_with_parent = false;
        self.keep_systemd_env = true;
        self.drop_terminal = false;
        self
    }

    /// Install the hook on `cmd` and remove systemd's variables from its environment (after
    /// whatever the caller set: a configured `env` cannot bring them back).
    pub fn apply(self, cmd: &mut Command) {
        if !self.keep_systemd_env {
            for var in SYSTEMD_ENV {
                cmd.env_remove(var);
            }
        }
        let parent = std::process::id() as libc::pid_t;
        let setup = self;
        // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
        // calls are allowed: setpgid, open, ioctl, close, prctl, getppid, _exit and fcntl are
        // plain system calls, and
        // `drop_privileges` only makes system calls too. `setup` was allocated in the parent
        // before fork and is only read; nothing allocates or takes a lock.
        unsafe {
            cmd.pre_exec(move || setup.in_child(parent));
        }
    }

    /// The hook itself (see the module comment for the order). Runs in the forked child.
    fn in_child(&self, parent: libc::pid_t) -> io::Result<()> {
        // SAFETY: setpgid with integer arguments only changes this (child) process.
        if self.own_group && unsafe { libc::setpgid(0, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
        if self.drop_terminal {
            give_up_terminal()?;
        }
        if let Some(creds) = &self.credentials {
            if !running_as(&current_ids(), creds) {
                drop_privileges(creds)?;
            }
        }
        if self.die_with_parent {
            die_with_parent(self.death_signal, parent)?;
        }
        if let Some(set) = &self.block {
            // SAFETY: sigprocmask reads a sigset_t that lives in `self` (allocated before fork)
            // and writes nothing of ours (no old mask asked for); async-signal-safe.
            let blocked =
                unsafe { libc::sigprocmask(libc::SIG_BLOCK, set.as_ref(), std::ptr::null_mut()) };
            if blocked == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        for &fd in &self.inherit {
            // SAFETY: F_SETFD with an integer flag; a bad number only gives EBADF.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// In a just-forked child: get `signal` when the parent (`parent`, its pid before the fork)
/// dies, and end at once if it already has (between fork and prctl: nobody would ever send
/// it). Async-signal-safe.
pub(crate) fn die_with_parent(signal: libc::c_int, parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl with integer arguments touches no memory of ours.
    let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) };
    if set == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid cannot fail; _exit ends this child without running any Rust code.
    unsafe {
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// Give up the controlling terminal, if this process has one; it stays in its session. For a
/// process that is not a session leader `TIOCNOTTY` only clears its own link to the terminal
/// (the leader's would hang the session up). Async-signal-safe: open, ioctl and close.
fn give_up_terminal() -> io::Result<()> {
    // SAFETY: open with a NUL-terminated static path and integer flags; no memory of ours is
    // written. O_NOCTTY: opening never makes it our terminal.
    let fd = unsafe {
        libc::open(
            c"/dev/tty".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd == -1 {
        // ENXIO: no controlling terminal (the usual case: systemd, a pipe, a daemon). Any
        // other failure to open it leaves nothing reachable through it either.
        return Ok(());
    }
    // SAFETY: TIOCNOTTY takes no argument; `fd` is the descriptor opened above.
    let given_up = unsafe { libc::ioctl(fd, libc::TIOCNOTTY) };
    let error = io::Error::last_os_error();
    // SAFETY: closing the descriptor opened above, used nowhere else.
    unsafe { libc::close(fd) };
    if given_up == -1 {
        return Err(error);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;
    use std::time::{Duration, Instant};

    /// `SigBlk` of a child started with and without `block_signals`.
    #[test]
    fn blocked_signals_reach_the_program_and_only_when_asked() {
        let blocked_mask = |setup: ChildSetup| {
            let mut cmd = Command::new("grep");
            cmd.args(["^SigBlk:", "/proc/self/status"]);
            setup.apply(&mut cmd);
            let out = cmd.output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            u64::from_str_radix(text.trim().trim_start_matches("SigBlk:").trim(), 16).unwrap()
        };
        let mut set = SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGTERM);
        set.add(nix::sys::signal::Signal::SIGHUP);
        let bits = (1u64 << (libc::SIGTERM - 1)) | (1u64 << (libc::SIGHUP - 1));
        assert_eq!(
            blocked_mask(ChildSetup::new().block_signals(set)) & bits,
            bits
        );
        assert_eq!(blocked_mask(ChildSetup::new()) & bits, 0);
    }

    #[test]
    fn systemd_variables_are_removed_even_when_configured() {
        let mut cmd = Command::new("true");
        cmd.env("NOTIFY_SOCKET", "/run/x").env("APP", "1");
        ChildSetup::new().apply(&mut cmd);
        let envs: Vec<(&OsStr, Option<&OsStr>)> = cmd.get_envs().collect();
        for var in SYSTEMD_ENV {
            assert!(envs.contains(&(OsStr::new(var), None)), "{var}: {envs:?}");
        }
        assert!(envs.contains(&(OsStr::new("APP"), Some(OsStr::new("1")))));
    }

    /// Poll `child` until it ends (bounded); its exit status.
    fn ended_within(child: &mut std::process::Child, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    #[test]
    fn a_child_that_dropped_privileges_still_dies_with_its_thread() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root, like the master"
        );
        let nobody = crate::sys::privileges::resolve(Some("nobody"), None)
            .unwrap()
            .unwrap();
        // Started by a thread that then exits: the parent-death signal must fire.
        let mut child = std::thread::spawn(move || {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            ChildSetup::new()
                .own_process_group()
                .run_as(Some(nobody))
                .apply(&mut cmd);
            cmd.spawn().unwrap()
        })
        .join()
        .unwrap();
        let status = ended_within(&mut child, Duration::from_secs(5));
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert_eq!(
            status.and_then(|s| s.signal()),
            Some(libc::SIGKILL),
            "the child outlived the thread that started it"
        );
    }

    #[test]
    fn only_the_chosen_descriptors_are_inherited() {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (chosen, other) = (read_end.as_raw_fd(), write_end.as_raw_fd());
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "test -e /proc/self/fd/{chosen} && ! test -e /proc/self/fd/{other}"
        ));
        ChildSetup::new().inherit(vec![chosen]).apply(&mut cmd);
        assert!(cmd.status().unwrap().success());
        let flags = nix::fcntl::fcntl(chosen, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "the parent's copy keeps close-on-exec"
        );
    }

    #[test]
    fn a_new_master_keeps_systemd_variables() {
        let mut cmd = Command::new("true");
        cmd.env("NOTIFY_SOCKET", "/run/x");
        ChildSetup::new().new_master().apply(&mut cmd);
        let envs: Vec<(&OsStr, Option<&OsStr>)> = cmd.get_envs().collect();
        assert_eq!(
            envs,
            [(OsStr::new("NOTIFY_SOCKET"), Some(OsStr::new("/run/x")))]
        );
    }
}
