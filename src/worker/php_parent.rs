//! The php parent of an embedded-PHP pool (`php_children = "embedded"`): one process per pool
//! (per config generation), started by the master as it starts worker processes (re-exec, the
//! config text on stdin, the pool's user), in which PHP starts once — php.ini, extensions,
//! opcache's shared memory — and which then forks the pool's worker processes when the master
//! asks. Each worker is a copy of it, so the workers share one opcache and the tables PHP built
//! at start-up, as php-fpm's children share its master's. (Each worker starting PHP itself
//! cost 2.64× php-fpm's memory on DokuWiki: four opcaches, four copies of those tables.)
//!
//! The master talks to it over a SOCK_SEQPACKET pair (`--control-fd`): an [`Order`] (JSON)
//! with the new worker's descriptors attached, answered by [`Report::Spawned`] with its pid
//! (or [`Report::Failed`]); and whenever one of its workers ends, [`Report::Exited`] with the
//! raw wait status — the master is not the workers' parent and cannot reap them. It stays
//! single-threaded (a fork copies one thread only), is not stopped by the stop signals (the
//! master stops the workers, then closes its end, and it leaves). Its workers die with it.

use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use serde::{Deserialize, Serialize};

use super::lock::LockHandoff;
use super::process::{StopFlags, WorkerArgs, WorkerError};
use crate::config;
use crate::sys::fdpass::{recv_with_fds, send_with_fds, ReceivedMany};
use crate::sys::fork::{fork_worker, Forked};
use crate::sys::inherit::adopt_inherited_fd;
use crate::sys::php_embed::Interpreter;

/// The command line the master gives the php parent.
#[derive(Debug, Clone, clap::Args)]
pub struct PhpParentArgs {
    /// Position of the pool in the config.
    #[arg(long)]
    pub pool_index: usize,
    /// Inherited end of the master's control pair.
    #[arg(long)]
    pub control_fd: i32,
    /// The config file the text on stdin came from; absent = embedded default.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Start a worker for `slot`. Descriptors attached, in this order: the listening socket, the
/// scoreboard, the accept lock's (unless `lock` is "none"), the holder link (when `hold`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Order {
    pub slot: usize,
    /// Scoreboard layout, slots per pool.
    pub slots: Vec<usize>,
    /// The accept lock's handoff as the master would give it on a command line
    /// (`LockHandoff`: "none", or "mutex:fd=N" with the master's number; the descriptor
    /// itself is attached).
    pub lock: String,
    pub backlog: u32,
    pub somaxconn: Option<u32>,
    pub hold: bool,
}

impl Order {
    /// How many descriptors come with this order.
    pub fn descriptors(&self) -> usize {
        2 + usize::from(self.lock != "none") + usize::from(self.hold)
    }

    /// The worker's command line, with the descriptors as this process received them.
    fn worker_args(
        &self,
        pool_index: usize,
        config: Option<PathBuf>,
        fds: &[OwnedFd],
    ) -> Result<WorkerArgs, String> {
        if fds.len() != self.descriptors() {
            return Err(format!(
                "{} descriptors came with the order, {} expected",
                fds.len(),
                self.descriptors()
            ));
        }
        let mut fds = fds.iter().map(AsRawFd::as_raw_fd);
        let mut next = || fds.next().expect("counted above");
        let listener_fd = next();
        let scoreboard_fd = next();
        let lock = match self.lock.parse::<LockHandoff>() {
            Ok(LockHandoff::None) => LockHandoff::None,
            Ok(handoff) => handoff.at(next()),
            Err(e) => return Err(e.to_string()),
        };
        let hold_fd = self.hold.then(&mut next);
        Ok(WorkerArgs {
            pool_index,
            slot: self.slot,
            listener_fd,
            scoreboard_fd,
            slots: self.slots.clone(),
            lock: lock.to_string(),
            backlog: self.backlog,
            somaxconn: self.somaxconn,
            hold_fd,
            config,
        })
    }
}

/// What the php parent tells the master.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Report {
    Spawned {
        slot: usize,
        pid: i32,
    },
    Failed {
        slot: usize,
        error: String,
    },
    /// One of its workers ended; `status` as wait(2) gives it.
    Exited {
        pid: i32,
        status: i32,
    },
}

/// Largest order or report (JSON).
pub const MAX_MESSAGE: usize = 4096;

/// How long a report may wait for room in the master's queue.
const SEND_PATIENCE: Duration = Duration::from_secs(5);

/// How often the php parent looks for workers that ended, when no order comes.
const REAP_EVERY: Duration = Duration::from_millis(100);

/// Run the php parent until the master closes the control pair.
pub fn run(
    args: PhpParentArgs,
    init_logging: impl FnOnce(&config::Config),
) -> Result<(), WorkerError> {
    // The workers' own handlers, installed before PHP starts: PHP records the handlers it
    // finds then and puts them back after every request (zend_signal), so they must be the
    // ones a worker needs (a stop signal sets a flag), not SIG_IGN or the default. In the php
    // parent itself the flags are never read: a stop signal does nothing to it.
    let flags = super::process::install_signals()?;
    let config = super::process::config_from_master(args.config.as_deref())?;
    init_logging(&config);
    let pool = super::process::pool_of(&config, args.pool_index)?;
    let control = adopt_inherited_fd(args.control_fd).map_err(|source| WorkerError::Inherit {
        what: "php parent control",
        source,
    })?;
    // PHP starts here, once; every worker forked below takes it over.
    let started = Interpreter::start(&pool.app.php_ini, &pool.app.ini);
    if let Err(e) = &started {
        // Its workers answer 503 with the reason (as when php-cgi cannot start).
        tracing::error!(pool = %pool.name, "PHP cannot start: {e}");
    }
    Interpreter::park(started);
    tracing::debug!(pool = %pool.name, "php parent ready");

    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        reap(&control);
        let mut fds = [PollFd::new(control.as_fd(), PollFlags::POLLIN)];
        let wait = PollTimeout::try_from(REAP_EVERY).unwrap_or(PollTimeout::ZERO);
        if let Err(e) = poll(&mut fds, wait) {
            if e != nix::errno::Errno::EINTR {
                tracing::error!(pool = %pool.name, error = %e, "php parent: poll");
            }
            continue;
        }
        match recv_with_fds(control.as_fd(), &mut buf) {
            Ok(ReceivedMany::Empty) => {}
            Ok(ReceivedMany::Closed) => return Ok(()),
            Ok(ReceivedMany::Datagram(n, received)) => {
                let report = match serde_json::from_slice::<Order>(&buf[..n]) {
                    Ok(order) => spawn(&order, received, &args, &config, &control, &flags),
                    Err(e) => {
                        tracing::error!(pool = %pool.name, error = %e, "php parent: bad order");
                        continue;
                    }
                };
                send(&control, &report);
            }
            Err(e) => {
                tracing::error!(pool = %pool.name, error = %e, "php parent: control pair");
                return Ok(());
            }
        }
    }
}

/// Fork the worker `order` asks for. In the child this never returns: it serves, then exits.
fn spawn(
    order: &Order,
    fds: Vec<OwnedFd>,
    args: &PhpParentArgs,
    config: &config::Config,
    control: &OwnedFd,
    flags: &StopFlags,
) -> Report {
    let worker = match order.worker_args(args.pool_index, args.config.clone(), &fds) {
        Ok(worker) => worker,
        Err(error) => {
            return Report::Failed {
                slot: order.slot,
                error,
            }
        }
    };
    match fork_worker() {
        Ok(Forked::Child) => {
            // The worker has no business with the control pair; its descriptors it adopts by
            // number (`worker`).
            let _ = nix::unistd::close(control.as_raw_fd());
            for fd in fds {
                let _ = fd.into_raw_fd();
            }
            let code = match super::process::run_forked(worker, config.clone(), flags.clone()) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("{e}");
                    1
                }
            };
            std::process::exit(code);
        }
        // The parent's copies of the worker's descriptors are closed (dropped) on return.
        Ok(Forked::Parent(pid)) => Report::Spawned {
            slot: order.slot,
            pid: pid.as_raw(),
        },
        Err(e) => Report::Failed {
            slot: order.slot,
            error: format!("fork: {e}"),
        },
    }
}

/// Report every worker that ended.
fn reap(control: &OwnedFd) {
    loop {
        let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, (code & 0xff) << 8),
            Ok(WaitStatus::Signaled(pid, signal, core)) => {
                (pid, signal as i32 | if core { 0x80 } else { 0 })
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        };
        send(
            control,
            &Report::Exited {
                pid: pid.as_raw(),
                status,
            },
        );
    }
}

fn send(control: &OwnedFd, report: &Report) {
    let bytes = serde_json::to_vec(report).expect("a report serialises");
    if let Err(e) = send_with_fds(control.as_fd(), &bytes, &[], SEND_PATIENCE) {
        tracing::error!(error = %e, "php parent: cannot report {report:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_count_their_descriptors() {
        let order = |lock: &str, hold| Order {
            slot: 1,
            slots: vec![2],
            lock: lock.into(),
            backlog: 511,
            somaxconn: None,
            hold,
        };
        assert_eq!(order("none", false).descriptors(), 2);
        assert_eq!(order("mutex:fd=7", false).descriptors(), 3);
        assert_eq!(order("flock:fd=9", true).descriptors(), 4);
    }
}
