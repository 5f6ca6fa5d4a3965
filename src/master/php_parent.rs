//! The master's side of an embedded-PHP pool's php parent (`worker::php_parent`): start it
//! (again, after it died), have it fork the pool's worker processes, and collect what it
//! reports of their exits — the master is not their parent, so it cannot reap them; the php
//! parent does and tells. One per pool and config generation: a reload's new workers come from
//! a new php parent (a new php.ini, `ini`, user…), the old one goes when its last worker has.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::sys::fdpass::{recv_with_fds, send_with_fds, seqpacket_pair, ReceivedMany};
use crate::sys::privileges::Credentials;
use crate::worker::php_parent::{Order, Report, MAX_MESSAGE};

/// How long the master waits for the php parent to answer an order. The first answer waits
/// for PHP's start-up (php.ini, extensions, opcache) too.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// The wait status recorded for a worker whose php parent died: it was killed with it
/// (`PR_SET_PDEATHSIG`), so it counts as killed.
const KILLED: i32 = libc::SIGKILL;

/// What the php parent is started with; fixed for a config generation.
pub struct ParentSpec {
    pub pool_index: usize,
    /// The config file (relative paths); `None` = the embedded default.
    pub config_path: Option<PathBuf>,
    /// The exact text the master runs on, handed over on stdin.
    pub config_text: Arc<String>,
    /// `user`/`group`: the php parent (so PHP, and every worker) runs as them.
    pub credentials: Option<Credentials>,
}

/// A pool's php parent: started with the pool (`prestart`, so PHP's start-up overlaps the
/// master's), again when a worker is wanted after it died.
pub struct PhpParent {
    spec: ParentSpec,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: Option<Running>,
    /// Exit statuses reported and not collected yet, by worker pid.
    exits: HashMap<i32, i32>,
    /// Workers forked and not reported ended: killed with the php parent if it dies.
    forked: HashSet<i32>,
    /// When the reports were last taken and the parent last checked ([`PhpParent::take_exit`]).
    looked_at: Option<Instant>,
}

/// The supervisor asks [`PhpParent::take_exit`] for each worker in turn, every tick: a look
/// at the reports serves the calls that follow it within this long. Without it an idle pool
/// of 4 workers cost the master 792 `recvmsg` (all EAGAIN) and 792 `wait4` in 10 s.
const STILL_FRESH: Duration = Duration::from_millis(5);

struct Running {
    child: Child,
    /// The master's end of the control pair.
    control: OwnedFd,
}

impl PhpParent {
    pub fn new(spec: ParentSpec) -> Arc<Self> {
        Arc::new(Self {
            spec,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start the php parent now, unless it runs (PHP's start-up goes on in it meanwhile).
    pub fn prestart(&self) -> io::Result<()> {
        self.ensure_running(&mut self.lock()).map(drop)
    }

    /// The running php parent, started if it is not (or has died).
    fn ensure_running<'s>(&self, state: &'s mut State) -> io::Result<&'s Running> {
        self.check_alive(state);
        let running = match state.running.take() {
            Some(running) => running,
            None => self.start()?,
        };
        Ok(state.running.insert(running))
    }

    /// Have the php parent fork the worker `order` describes, with `fds` (see [`Order`]); the
    /// new worker's pid.
    pub fn spawn(&self, order: &Order, fds: &[RawFd]) -> io::Result<i32> {
        let bytes = serde_json::to_vec(order).map_err(io::Error::other)?;
        let mut state = self.lock();
        let running = self.ensure_running(&mut state)?;
        send_with_fds(running.control.as_fd(), &bytes, fds, Duration::from_secs(5))?;
        let deadline = Instant::now() + ANSWER_WITHIN;
        loop {
            match self.next_report(&mut state, deadline)? {
                Report::Spawned { slot, pid } if slot == order.slot => {
                    state.forked.insert(pid);
                    return Ok(pid);
                }
                Report::Failed { slot, error } if slot == order.slot => {
                    return Err(io::Error::other(format!("php parent: {error}")));
                }
                report => record(&mut state, report),
            }
        }
    }

    /// How worker `pid` ended, once the php parent said so (or died, taking it along).
    pub fn take_exit(&self, pid: i32) -> Option<ExitStatus> {
        let mut state = self.lock();
        if state.looked_at.is_none_or(|at| at.elapsed() >= STILL_FRESH) {
            self.drain(&mut state);
            self.check_alive(&mut state);
            state.looked_at = Some(Instant::now());
        }
        state.exits.remove(&pid).map(ExitStatus::from_raw)
    }

    /// The next report, waiting until `deadline`.
    fn next_report(&self, state: &mut State, deadline: Instant) -> io::Result<Report> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            if let Some(report) = self.receive(state, &mut buf)? {
                return Ok(report);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the php parent did not answer",
                ));
            }
            let Some(running) = &state.running else {
                return Err(io::Error::other("the php parent is gone"));
            };
            let mut fds = [PollFd::new(running.control.as_fd(), PollFlags::POLLIN)];
            let wait = PollTimeout::try_from(left.min(Duration::from_millis(100)))
                .unwrap_or(PollTimeout::ZERO);
            let _ = poll(&mut fds, wait);
        }
    }

    /// Take every report queued now.
    fn drain(&self, state: &mut State) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            match self.receive(state, &mut buf) {
                Ok(Some(report)) => record(state, report),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    tracing::error!(error = %e, "php parent: bad report")
                }
                // Nothing queued, or the php parent is gone (`check_alive` notices it too).
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// One report if one is queued, without waiting.
    fn receive(&self, state: &mut State, buf: &mut [u8]) -> io::Result<Option<Report>> {
        let Some(running) = &state.running else {
            return Err(io::Error::other("the php parent is gone"));
        };
        match recv_with_fds(running.control.as_fd(), buf)? {
            ReceivedMany::Datagram(n, _) => serde_json::from_slice(&buf[..n])
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            ReceivedMany::Empty => Ok(None),
            ReceivedMany::Closed => {
                self.parent_ended(state);
                Err(io::Error::other(
                    "the php parent ended (see the log: PHP's start-up?)",
                ))
            }
        }
    }

    /// When the php parent has exited: its workers were killed with it.
    fn check_alive(&self, state: &mut State) {
        let ended = match &mut state.running {
            Some(running) => !matches!(running.child.try_wait(), Ok(None)),
            None => false,
        };
        if ended {
            self.parent_ended(state);
        }
    }

    fn parent_ended(&self, state: &mut State) {
        let Some(mut running) = state.running.take() else {
            return;
        };
        let status = running.child.wait().ok();
        let orphans: Vec<i32> = state.forked.drain().collect();
        tracing::error!(
            pool_index = self.spec.pool_index,
            status = ?status,
            workers = orphans.len(),
            "the php parent ended; its workers ended with it"
        );
        for pid in orphans {
            state.exits.insert(pid, KILLED);
        }
    }

    /// Start the php parent as the pool's user, the config on its stdin.
    fn start(&self) -> io::Result<Running> {
        let (control, theirs) = seqpacket_pair(MAX_MESSAGE)?;
        let mut cmd = super::children::fastpm_again("php-parent");
        cmd.arg("--pool-index")
            .arg(self.spec.pool_index.to_string())
            .arg("--control-fd")
            .arg(theirs.as_raw_fd().to_string());
        if let Some(path) = &self.spec.config_path {
            cmd.arg("--config").arg(path);
        }
        let child = super::children::start_again(
            cmd,
            self.spec.credentials.clone(),
            vec![theirs.as_raw_fd()],
            &self.spec.config_text,
        )?;
        drop(theirs);
        Ok(Running { child, control })
    }
}

fn record(state: &mut State, report: Report) {
    match report {
        Report::Exited { pid, status } => {
            state.forked.remove(&pid);
            state.exits.insert(pid, status);
        }
        other => tracing::warn!("php parent: unexpected {other:?}"),
    }
}

impl Drop for PhpParent {
    /// Closing the control pair makes the php parent leave (its workers have, by now); killed
    /// if it has not within a second.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let Some(Running { mut child, control }) = state.running.take() else {
            return;
        };
        drop(control);
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
