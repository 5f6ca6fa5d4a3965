//! Opening a pool: bind its socket with the effective backlog (or take it over after a binary
//! upgrade), warn when `somaxconn` clamps it, read back what the kernel holds, create its accept
//! lock, and describe how its worker processes are started.

use std::sync::Arc;
use std::time::Duration;

use std::os::fd::AsRawFd;

use super::apps::{self, AppError};
use super::children::{ExecCommand, SpawnSpec};
use super::runtime_dir::RuntimeDirError;
use super::upgrade::Inherited;
use crate::config::{self, BacklogError, Config, ConfigSource, WorkerKind};
use crate::config::{AppKind, PmKind, PoolConfig};
use crate::listen::{self, BindOptions, ListenAddress, ListenError, Listener};
use crate::probe::QueueProbe;
use crate::scoreboard::Scoreboard;
use crate::status::PoolInfo;
use crate::sys::privileges::{self, Credentials};
use crate::worker::context::STOP_CHECK_INTERVAL;
use crate::worker::lock::{AcceptLock, LockError, LockShared};
use crate::worker::PoolContext;

/// Everything that can keep the master from starting or stopping cleanly.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Backlog(#[from] BacklogError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("pool {pool}: {source}")]
    Lock { pool: String, source: LockError },
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    RuntimeDir(#[from] RuntimeDirError),
    #[error("pool {pool}: workers = \"process\" is not available in this build yet; use workers = \"thread\"")]
    ProcessWorkers { pool: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub(super) fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MasterError {
    let what = what.into();
    move |source| MasterError::Io { what, source }
}

/// What the command line adds to the config.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// `--backlog N`.
    pub cli_backlog: Option<u32>,
    /// The `LISTENQ` environment variable, as read at start.
    pub listenq_env: Option<String>,
    /// The exact config text loaded: worker processes get it on stdin, so a file edited on disk
    /// reaches them only through a reload.
    pub config_text: Arc<String>,
}

/// Bind one pool and build what its workers share.
pub(super) fn open_pool(
    config: &Config,
    index: usize,
    options: &StartOptions,
    somaxconn: Option<u32>,
    scoreboard: &Arc<Scoreboard>,
    inherited: &mut Inherited,
) -> Result<OpenedPool, MasterError> {
    let pool = &config.pools[index];
    let lock_error = |source| MasterError::Lock {
        pool: pool.name.clone(),
        source,
    };
    let shared = Arc::new(
        LockShared::create(pool.accept_lock, &config.global.runtime_dir, &pool.name)
            .map_err(lock_error)?,
    );
    if !runs_processes(pool) && pool.pm != PmKind::Static {
        tracing::warn!(pool = %pool.name, "pm = \"{}\" applies to worker processes; thread workers run max_children ({}) threads", pool.pm, pool.max_children);
    }
    // Worker processes take the lock themselves; the master's copy of the pool never accepts.
    let lock = if runs_processes(pool) {
        AcceptLock::None
    } else {
        AcceptLock::for_worker(&shared).map_err(lock_error)?
    };
    let (choice, why) = apps::choose_for(config, pool)?;
    if let Some(why) = why {
        tracing::warn!("{why}");
    }

    let (backlog, source) = config::effective_backlog(
        options.cli_backlog,
        options.listenq_env.as_deref(),
        pool.listen.backlog,
    )?;
    let address = &pool.listen.address;
    let listener = match adopt(inherited, &pool.name, address, backlog) {
        Some(listener) => listener,
        None => listen::bind(
            address,
            &BindOptions {
                backlog,
                mode: pool.listen.mode,
                owner: pool.listen.owner.clone(),
                group: pool.listen.group.clone(),
            },
        )?,
    };
    // Port 0 means "any free port": from here on the pool is known by the one it got (the
    // log, the status page, the ready line).
    let bound;
    let address = match address {
        ListenAddress::Tcp(a) if a.port() == 0 => {
            bound = listener.address().unwrap_or_else(|_| address.clone());
            &bound
        }
        _ => address,
    };
    if let Some(warning) = somaxconn.and_then(|s| listen::clamp_warning(address, backlog, s)) {
        tracing::warn!("{warning}");
    }
    let mut probe = QueueProbe::for_listener(&listener).map_err(io_error(format!(
        "pool {}: cannot probe {address}",
        pool.name
    )))?;
    match probe.read() {
        Ok(reading) => tracing::info!(
            pool = %pool.name,
            "listening on {address}: backlog {backlog} ({}), the kernel holds {}",
            source,
            reading.backlog
        ),
        Err(e) => {
            tracing::warn!(pool = %pool.name, error = %e, "listening on {address}: cannot read the queue back from the kernel")
        }
    }
    prepare_for_accept(&listener, accept_timeout(pool.app.kind)).map_err(|e| MasterError::Io {
        what: format!("pool {}: cannot set up the socket for accept()", pool.name),
        source: e,
    })?;

    let info = PoolInfo {
        name: pool.name.clone(),
        process_manager: pool.pm.to_string(),
        listen_address: address.to_string(),
        listen_backlog: backlog,
        somaxconn,
        max_children: pool.max_children,
    };
    scoreboard
        .pool(index)
        .listen_backlog
        .store(u64::from(backlog), std::sync::atomic::Ordering::Relaxed);
    scoreboard
        .pool(index)
        .set_limits(pool.max_children, pool.client_timeout);
    let mut ctx = PoolContext::new(
        index,
        pool.clone(),
        listener,
        lock,
        Arc::clone(scoreboard),
        info,
    );
    // The link with the master's holder (DESIGN §8): every pool whose requests fastpm's own
    // workers read (an exec program speaks FastCGI itself and holds nothing).
    let holder_end = if pool.app.kind == AppKind::Exec {
        None
    } else {
        let (master_end, workers_end) =
            crate::sys::fdpass::seqpacket_pair(crate::hold::wire::MAX_DATAGRAM).map_err(
                io_error(format!("pool {}: cannot make the holder link", pool.name)),
            )?;
        ctx.hold_link = Some(workers_end);
        Some(master_end)
    };
    Ok(OpenedPool {
        ctx: Arc::new(ctx),
        choice,
        probe,
        lock: shared,
        holder_end,
    })
}

/// A pool bound and ready for workers.
pub(super) struct OpenedPool {
    pub ctx: Arc<PoolContext>,
    pub choice: apps::Choice,
    pub probe: QueueProbe,
    pub lock: Arc<LockShared>,
    /// The master's end of the pool's holder link (`None` for exec pools).
    pub holder_end: Option<std::os::fd::OwnedFd>,
}

/// The receive timeout (`SO_RCVTIMEO`) a pool's listening socket carries.
///
/// fastpm's own workers accept without blocking (their fronts wait with epoll); the timeout
/// stays as a bound for anything that would block on the socket, and accepted TCP sockets
/// inherit it. An exec pool's programs
/// accept on copies of the same socket, and a socket option belongs to the open file
/// description, shared by every copy: with a timeout their blocking `accept()` fails with
/// `EAGAIN`, and php-cgi and libfcgi programs exit on that — the master then restarts them
/// (cold) several times a second. Their socket carries none: a plain blocking listener, as
/// spawn-fcgi gives it. Nothing of fastpm accepts on an exec pool's socket.
pub fn accept_timeout(kind: AppKind) -> Option<Duration> {
    match kind {
        AppKind::Exec => None,
        _ => Some(STOP_CHECK_INTERVAL),
    }
}

/// Set the listening socket's receive timeout (`None` clears one a previous master or a
/// socket unit may have set: the option outlives the process that set it) and its blocking
/// mode: non-blocking for fastpm's own workers, whose fronts (`crate::front`) wait with epoll
/// and must get EAGAIN when another worker took the connection first; blocking for an exec
/// pool's programs (`None`), as spawn-fcgi gives it. O_NONBLOCK too belongs to the open file
/// description every worker shares.
fn prepare_for_accept(listener: &Listener, timeout: Option<Duration>) -> std::io::Result<()> {
    listener.set_nonblocking(timeout.is_some())?;
    let timeout = timeout.unwrap_or(Duration::ZERO);
    let timeval = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    nix::sys::socket::setsockopt(
        listener,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::from(timeval),
    )?;
    Ok(())
}

pub(super) fn write_pid_file(config: &Config) -> Result<(), MasterError> {
    if let Some(path) = &config.global.pid_file {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(io_error(format!(
            "cannot write pid_file {}",
            path.display()
        )))?;
    }
    Ok(())
}

pub(super) fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Scoreboard slots of a pool: worker processes get twice `max_children`, so during a reload
/// the new generation starts before the old one has left.
pub(super) fn slots_for(pool: &PoolConfig) -> usize {
    if runs_processes(pool) {
        2 * pool.max_children as usize
    } else {
        pool.max_children as usize
    }
}

/// Worker processes, or an exec pool's programs (which are processes whatever `workers` says).
pub(super) fn runs_processes(pool: &PoolConfig) -> bool {
    pool.workers == WorkerKind::Process || pool.app.kind == AppKind::Exec
}

/// The ids a pool's `user`/`group` name (`None` when unset): worker processes run as them, and
/// so do the php-cgi and CGI children of worker threads.
pub(super) fn pool_credentials(pool: &PoolConfig) -> Result<Option<Credentials>, MasterError> {
    privileges::resolve(pool.user.as_deref(), pool.group.as_deref()).map_err(|e| MasterError::Io {
        what: format!("pool {}: user/group", pool.name),
        source: std::io::Error::other(e.to_string()),
    })
}

/// The backlog in force for a pool: the scoreboard's (a reload may have changed it), else the
/// one it was bound with.
pub(super) fn current_backlog(ctx: &PoolContext) -> u32 {
    ctx.board().backlog_or(ctx.info.listen_backlog)
}

/// What a pool's worker processes are started with.
pub(super) fn spawn_spec(
    config: &Config,
    ctx: &PoolContext,
    lock: &Arc<LockShared>,
    slot_counts: &[usize],
    options: &StartOptions,
) -> Result<SpawnSpec, MasterError> {
    // The pool as `config` has it: on a reload, the new `user`, `group`, exec `command` and
    // `env` (the context keeps what the pool was bound with).
    let pool = config
        .pools
        .get(ctx.index)
        .filter(|p| p.name == ctx.config.name)
        .unwrap_or(&ctx.config);
    let credentials = pool_credentials(pool)?;
    let config_path = match &config.source {
        ConfigSource::File(path) => Some(path.clone()),
        ConfigSource::Embedded => None,
    };
    Ok(SpawnSpec {
        pool_index: ctx.index,
        listener_fd: ctx.listener.as_raw_fd(),
        scoreboard_fd: ctx.scoreboard.raw_fd(),
        slots: slot_counts.to_vec(),
        lock: Arc::clone(lock),
        backlog: current_backlog(ctx),
        somaxconn: ctx.info.somaxconn,
        config_path: config_path.clone(),
        config_text: Arc::clone(&options.config_text),
        credentials: credentials.clone(),
        hold_fd: ctx.hold_link.as_ref().map(|fd| fd.as_raw_fd()),
        exec: (pool.app.kind == AppKind::Exec).then(|| ExecCommand {
            argv: pool.app.command.clone(),
            env: pool.app.env.clone(),
            clear_env: pool.app.clear_env,
        }),
        php_parent: (pool.app.kind == AppKind::Php
            && pool.app.php_children == crate::config::PhpChildren::Embedded)
            .then(|| {
                super::php_parent::PhpParent::new(super::php_parent::ParentSpec {
                    pool_index: ctx.index,
                    config_path,
                    config_text: Arc::clone(&options.config_text),
                    credentials,
                })
            }),
    })
}

/// After a binary upgrade: the pool's socket from the previous master, if it is still at the
/// configured address (then its backlog is set again with `listen()`).
fn adopt(
    inherited: &mut Inherited,
    pool: &str,
    address: &ListenAddress,
    backlog: u32,
) -> Option<Listener> {
    let fd = inherited.sockets.remove(pool)?;
    let listener = match Listener::from_inherited(fd) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(pool, error = %e, "inherited socket unusable; binding anew");
            return None;
        }
    };
    let same = listener.address().is_ok_and(|a| &a == address)
        || matches!(address, ListenAddress::Systemd(_));
    if !same {
        tracing::warn!(
            pool,
            "inherited socket is not at {address} any more; binding anew"
        );
        return None;
    }
    if let Err(e) = listen::relisten(&listener, backlog) {
        tracing::warn!(pool, error = %e, "listen() on the inherited socket failed");
    }
    tracing::info!(pool, "took over {address} from the previous master");
    Some(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_timeout_table() {
        use AppKind::*;
        for (kind, want) in [
            (Exec, None),
            (Php, Some(STOP_CHECK_INTERVAL)),
            (Cgi, Some(STOP_CHECK_INTERVAL)),
            (Hello, Some(STOP_CHECK_INTERVAL)),
            (Echo, Some(STOP_CHECK_INTERVAL)),
            (Sleep, Some(STOP_CHECK_INTERVAL)),
            (Longpoll, Some(STOP_CHECK_INTERVAL)),
        ] {
            assert_eq!(accept_timeout(kind), want, "{kind}");
        }
    }
}
