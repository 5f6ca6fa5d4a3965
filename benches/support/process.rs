//! A server process under test (php-fpm, fastpm): started in its own process group with its
//! output in a log file, waited on until its socket answers a real request, and stopped on drop
//! (also during a panic) — TERM to the group, a bounded wait, then KILL to the group.

use std::fs::{self, File};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cleanup;
use crate::client::{self, Scratch};
use crate::fcgi::Expect;

/// How long a server gets to stop after TERM before its whole group is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How many lines of a server's log to show when it failed.
const LOG_TAIL_LINES: usize = 20;

pub struct ServerProcess {
    /// Short name for messages ("php-fpm", "fastpm").
    pub name: &'static str,
    child: Child,
    /// stdout and stderr of the server, shown when it fails to start.
    log: PathBuf,
}

impl ServerProcess {
    /// Spawns `command` as the leader of a new process group (so its workers can be stopped
    /// together) with stdin closed and stdout/stderr appended to `log`.
    pub fn spawn(name: &'static str, mut command: Command, log: &Path) -> io::Result<Self> {
        let out = File::create(log)?;
        let err = out.try_clone()?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command.spawn()?;
        cleanup::track_group(child.id() as i32);
        Ok(ServerProcess {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    /// Polls `socket` with `request` until a response with the expected body arrives, the
    /// process exits, or `limit` passes. The error says why, with the server's log tail.
    pub fn wait_ready(
        &mut self,
        socket: &Path,
        request: &[u8],
        expect: Expect,
        limit: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut scratch = Scratch::default();
        loop {
            if let Some(status) = self.exit_status() {
                return Err(format!(
                    "{} exited ({status}) before {} answered{}",
                    self.name,
                    socket.display(),
                    self.log_tail()
                ));
            }
            let failure = match client::request(
                socket,
                request,
                expect,
                limit.min(Duration::from_secs(2)),
                &mut scratch,
            ) {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if Instant::now() >= deadline {
                let got = String::from_utf8_lossy(&scratch.stdout[..scratch.stdout.len().min(300)])
                    .into_owned();
                return Err(format!(
                    "{} did not answer on {} within {limit:?} (last attempt: {failure}; response {got:?}){}",
                    self.name,
                    socket.display(),
                    self.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// How the leader ended, if it has — without reaping it, so that its process group id
    /// cannot be reused by an unrelated process before `Drop` has killed the group.
    fn exit_status(&self) -> Option<String> {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(Pid::from_raw(self.child.id() as i32)), flags) {
            Ok(WaitStatus::Exited(_, code)) => Some(format!("exit status {code}")),
            Ok(WaitStatus::Signaled(_, signal, _)) => Some(format!("killed by {signal}")),
            Ok(_) => None,
            Err(err) => Some(format!("cannot be waited for: {err}")),
        }
    }

    /// The last lines of the log, formatted to append to an error message.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n  ");
        if tail.is_empty() {
            format!("; its log {} is empty", self.log.display())
        } else {
            format!("; last lines of {}:\n  {tail}", self.log.display())
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let leader = self.child.id() as i32;
        let group = Pid::from_raw(leader);
        if self.exit_status().is_none() {
            let _ = killpg(group, Signal::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while self.exit_status().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if self.exit_status().is_none() {
                eprintln!(
                    "bench: {} did not stop within {STOP_GRACE:?} of SIGTERM; killing its process group",
                    self.name
                );
            }
        }
        // The leader is not reaped yet, so the group id still names our group: whatever is left
        // in it (a worker the leader did not stop, or the leader itself) goes now.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
        cleanup::untrack_group(leader);
    }
}
