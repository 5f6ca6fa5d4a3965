//! One pool's worker processes: start them (re-exec of fastpm with inherited descriptors), reap
//! them, signal them. The supervisor loop (`pools.rs`) decides when; this file does the doing.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::php_parent::PhpParent;
use super::pm::WorkerExit;
use crate::sys::child::ChildSetup;
use crate::sys::inherit::adopt_inherited_fd;
use crate::sys::privileges::Credentials;
use crate::worker::lock::{LockHandoff, LockShared};
use crate::worker::php_parent::Order;
use crate::worker::watchdog::REQUEST_TIMEOUT_EXIT;

/// Everything a pool's worker processes are started with; fixed for a generation.
pub struct SpawnSpec {
    pub pool_index: usize,
    /// The master's listening socket (the child gets the same number).
    pub listener_fd: RawFd,
    pub scoreboard_fd: RawFd,
    /// Scoreboard layout, slots per pool.
    pub slots: Vec<usize>,
    pub lock: Arc<LockShared>,
    pub backlog: u32,
    pub somaxconn: Option<u32>,
    /// The config file (relative paths); `None` = the embedded default.
    pub config_path: Option<PathBuf>,
    /// The exact text the master runs on, handed to the worker on its stdin.
    pub config_text: Arc<String>,
    /// `user`/`group` to run as (master running as root).
    pub credentials: Option<Credentials>,
    /// The workers' end of the pool's link with the master's holder (same number in the child).
    pub hold_fd: Option<RawFd>,
    /// `kind = "exec"`: start this program instead of a fastpm worker.
    pub exec: Option<ExecCommand>,
    /// `php_children = "embedded"`: workers are forked by the pool's php parent (PHP started
    /// once, shared), not started by the master.
    pub php_parent: Option<Arc<PhpParent>>,
}

/// An exec pool's program (spawn-fcgi's model): it gets the listening socket as fd 0 and
/// accepts FastCGI connections itself.
#[derive(Clone, Debug)]
pub struct ExecCommand {
    pub argv: Vec<String>,
    pub env: std::collections::BTreeMap<String, String>,
    pub clear_env: bool,
}

/// How the master holds a worker process.
pub enum Handle {
    /// Its own child (a re-executed fastpm, or an exec pool's program).
    Own(Child),
    /// Forked by the pool's php parent: its exit is learnt from the parent.
    Forked { pid: i32, parent: Arc<PhpParent> },
}

/// One running worker process.
pub struct WorkerProcess {
    pub slot: usize,
    pub handle: Handle,
    pub started: Instant,
    /// Which config generation started it (a reload starts a new one).
    pub generation: u64,
    /// Set once the supervisor asked it to stop, so its exit is not a crash.
    pub stop_requested: bool,
    /// An exec pool's program: signalled as a process group, and QUIT (which would make it
    /// dump core) is sent as TERM.
    pub exec: bool,
}

impl WorkerProcess {
    /// Just started (spawned, or forked by the php parent).
    fn started(slot: usize, handle: Handle, generation: u64, exec: bool) -> Self {
        WorkerProcess {
            slot,
            handle,
            started: Instant::now(),
            generation,
            stop_requested: false,
            exec,
        }
    }

    pub fn pid(&self) -> u32 {
        match &self.handle {
            Handle::Own(child) => child.id(),
            Handle::Forked { pid, .. } => *pid as u32,
        }
    }

    /// Wait (at most a few seconds for a forked one) until it has ended: after SIGKILL.
    pub fn wait(&mut self) {
        match &mut self.handle {
            Handle::Own(child) => {
                let _ = child.wait();
            }
            Handle::Forked { pid, parent } => {
                let deadline = Instant::now() + std::time::Duration::from_secs(3);
                while parent.take_exit(*pid).is_none() && Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }

    /// Send `signal`; a process that is already gone is not an error.
    pub fn signal(&mut self, signal: Signal) {
        if matches!(signal, Signal::SIGTERM | Signal::SIGQUIT | Signal::SIGKILL) {
            self.stop_requested = true;
        }
        let pid = self.pid() as i32;
        if self.exec {
            let signal = if signal == Signal::SIGQUIT {
                Signal::SIGTERM
            } else {
                signal
            };
            // Its own process group: the group reaches whatever it forked too.
            let _ = kill(Pid::from_raw(-pid), signal);
        } else {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Ask it to leave gently (a reload's old generation): a fastpm worker gets USR2 and leaves
    /// as at `max_requests` (its kept connections closed after their next answer or once
    /// idle, not all at once); an exec program gets TERM.
    pub fn retire(&mut self) {
        if self.exec {
            return self.signal(Signal::SIGQUIT);
        }
        self.stop_requested = true;
        let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGUSR2);
    }

    /// `Some(exit)` once the process has ended: our own child reaped with `waitpid(pid,
    /// WNOHANG)` (never `waitpid(-1)`, which would steal the exit of children that are not ours
    /// to reap); one forked by a php parent as that parent reported it.
    pub fn try_reap(&mut self) -> Option<WorkerExit> {
        use std::os::unix::process::ExitStatusExt;
        let status = match &mut self.handle {
            Handle::Own(child) => child.try_wait().ok()??,
            Handle::Forked { pid, parent } => parent.take_exit(*pid)?,
        };
        Some(if self.stop_requested {
            WorkerExit::Requested
        } else if status.code() == Some(REQUEST_TIMEOUT_EXIT) {
            // Its watchdog answered 504 and ended it: replaced like a recycled worker.
            WorkerExit::Requested
        } else if let Some(code) = status.code() {
            WorkerExit::Exited(code)
        } else {
            WorkerExit::Signaled(status.signal().unwrap_or(0))
        })
    }
}

/// Start the worker process (or an exec pool's program) for `slot`.
pub fn spawn(spec: &SpawnSpec, slot: usize, generation: u64) -> std::io::Result<WorkerProcess> {
    if let Some(exec) = &spec.exec {
        return spawn_exec(spec, exec, slot, generation);
    }
    let lock_fd = spec.lock.child_fd().map_err(std::io::Error::other)?;
    if let Some(parent) = &spec.php_parent {
        return spawn_forked(
            spec,
            parent,
            lock_fd.as_ref().map(|fd| fd.as_raw_fd()),
            slot,
            generation,
        );
    }
    let (fds, handoff) = inherited(spec, lock_fd.as_ref().map(|fd| fd.as_raw_fd()));
    let slots: Vec<String> = spec.slots.iter().map(|n| n.to_string()).collect();
    let mut cmd = fastpm_again("worker");
    cmd.arg("--pool-index")
        .arg(spec.pool_index.to_string())
        .arg("--slot")
        .arg(slot.to_string())
        .arg("--listener-fd")
        .arg(spec.listener_fd.to_string())
        .arg("--scoreboard-fd")
        .arg(spec.scoreboard_fd.to_string())
        .arg("--slots")
        .arg(slots.join(","))
        .arg("--lock")
        .arg(handoff.to_string())
        .arg("--backlog")
        .arg(spec.backlog.to_string());
    if let Some(n) = spec.somaxconn {
        cmd.arg("--somaxconn").arg(n.to_string());
    }
    if let Some(fd) = spec.hold_fd {
        cmd.arg("--hold-fd").arg(fd.to_string());
    }
    if let Some(path) = &spec.config_path {
        cmd.arg("--config").arg(path);
    }
    // A worker that dies before reading its config is reaped and reported like any other exit.
    let child = start_again(cmd, spec.credentials.clone(), fds, &spec.config_text)?;
    drop(lock_fd);
    Ok(WorkerProcess::started(
        slot,
        Handle::Own(child),
        generation,
        false,
    ))
}

/// fastpm's binary to be started again as `subcommand` (`worker`, `php-parent`).
pub(super) fn fastpm_again(subcommand: &str) -> Command {
    // /proc/self/exe, not current_exe(): after a binary upgrade the old path ends in " (deleted)".
    let mut cmd = Command::new("/proc/self/exe");
    // What `ps` shows: the binary's name, not /proc/self/exe.
    std::os::unix::process::CommandExt::arg0(&mut cmd, "fastpm");
    cmd.arg(subcommand);
    cmd
}

/// Start `cmd` (from [`fastpm_again`]) as `credentials`, keeping `fds` open, with
/// `config_text` (what the master runs on) on its stdin.
pub(super) fn start_again(
    mut cmd: Command,
    credentials: Option<Credentials>,
    fds: Vec<RawFd>,
    config_text: &str,
) -> io::Result<Child> {
    cmd.stdin(Stdio::piped());
    // Its stderr is the master's log relay when log files are configured (crate::logs).
    crate::logs::relay_to(&mut cmd);
    // Dies with the master's supervisor thread, which lives as long as the master.
    // Born with its signals blocked: one sent before its handlers exist waits for them.
    ChildSetup::new()
        .run_as(credentials)
        .inherit(fds)
        .block_signals(super::signals::handled_set())
        .apply(&mut cmd);
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // One that dies before reading is noticed by who started it (reaped, or its first
        // order unanswered).
        let _ = stdin.write_all(config_text.as_bytes());
    }
    Ok(child)
}

/// Start an exec pool's program with a copy of the listening socket as fd 0, in its own
/// process group (inside fastpm's session), dying with the master.
fn spawn_exec(
    spec: &SpawnSpec,
    exec: &ExecCommand,
    slot: usize,
    generation: u64,
) -> std::io::Result<WorkerProcess> {
    let (program, args) = exec
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("exec pool with an empty command"))?;
    // A fresh copy that nothing else owns; the child gets it as fd 0.
    let listener = adopt_inherited_fd(nix::unistd::dup(spec.listener_fd)?)?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::from(listener));
    if exec.clear_env {
        cmd.env_clear();
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
    }
    cmd.envs(&exec.env);
    crate::logs::relay_stderr_to(&mut cmd);
    ChildSetup::new()
        .own_process_group()
        .run_as(spec.credentials.clone())
        .apply(&mut cmd);
    let child = cmd.spawn()?;
    Ok(WorkerProcess::started(
        slot,
        Handle::Own(child),
        generation,
        true,
    ))
}

/// The descriptors a worker inherits, in the order a php parent's [`Order`] lists them (the
/// listener, the scoreboard, the accept lock's if any, the holder link if any), and the
/// lock's handoff with the numbers they have here.
fn inherited(spec: &SpawnSpec, lock_fd: Option<RawFd>) -> (Vec<RawFd>, LockHandoff) {
    let mut fds = vec![spec.listener_fd, spec.scoreboard_fd];
    let handoff = match lock_fd {
        Some(fd) => {
            fds.push(fd);
            spec.lock.handoff(fd)
        }
        None => LockHandoff::None,
    };
    fds.extend(spec.hold_fd);
    (fds, handoff)
}

/// Have the pool's php parent fork the worker for `slot`, with the same descriptors a
/// re-executed worker would inherit.
fn spawn_forked(
    spec: &SpawnSpec,
    parent: &Arc<PhpParent>,
    lock_fd: Option<RawFd>,
    slot: usize,
    generation: u64,
) -> std::io::Result<WorkerProcess> {
    let (fds, handoff) = inherited(spec, lock_fd);
    let order = Order {
        slot,
        slots: spec.slots.clone(),
        lock: handoff.to_string(),
        backlog: spec.backlog,
        somaxconn: spec.somaxconn,
        hold: spec.hold_fd.is_some(),
    };
    let pid = parent.spawn(&order, &fds)?;
    let handle = Handle::Forked {
        pid,
        parent: Arc::clone(parent),
    };
    Ok(WorkerProcess::started(slot, handle, generation, false))
}
