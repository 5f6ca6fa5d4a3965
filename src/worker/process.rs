//! A worker process: what `fastpm worker` (started by the master, never by a person) does after
//! exec. It takes the pool's listening socket, the scoreboard and the accept lock from inherited
//! descriptors, reads the exact config text the master runs on from stdin, and runs the same
//! serve loop thread workers run.
//!
//! Why re-exec and not fork: the master runs tokio and threads; a forked copy of a threaded
//! process may only call async-signal-safe functions (DESIGN.md §7).

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::{self, ConfigSource};
use crate::listen::Listener;
use crate::master::apps;
use crate::scoreboard::Scoreboard;
use crate::status::PoolInfo;
use crate::sys::inherit::adopt_inherited_fd;

use super::context::PoolContext;
use super::lock::{AcceptLock, LockHandoff};
use super::serve::run_worker;

/// The command line the master gives a worker process.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Position of the pool in the config (and on the scoreboard).
    #[arg(long)]
    pub pool_index: usize,
    /// The worker's scoreboard slot.
    #[arg(long)]
    pub slot: usize,
    /// Inherited listening socket.
    #[arg(long)]
    pub listener_fd: i32,
    /// Inherited scoreboard memfd.
    #[arg(long)]
    pub scoreboard_fd: i32,
    /// Scoreboard layout: slots per pool, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub slots: Vec<usize>,
    /// The accept lock handoff (`none`, `mutex:fd=N`, `fcntl:fd=N`, `flock:fd=N`).
    #[arg(long)]
    pub lock: String,
    /// The pool's effective backlog and the netns somaxconn, for the status page.
    #[arg(long)]
    pub backlog: u32,
    #[arg(long)]
    pub somaxconn: Option<u32>,
    /// Inherited end of the pool's link with the master's holder (held requests, DESIGN §8).
    #[arg(long)]
    pub hold_fd: Option<i32>,
    /// The config file the text on stdin came from (relative paths); absent = embedded default.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Why a worker process could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker: cannot read the config from the master: {0}")]
    ReadConfig(std::io::Error),
    #[error("worker: {0}")]
    Config(#[from] config::ConfigError),
    #[error("worker: pool index {0} is not in the config")]
    NoPool(usize),
    #[error("worker: cannot take inherited {what}: {source}")]
    Inherit {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("worker: {0}")]
    Lock(#[from] super::lock::LockError),
    #[error("worker: {0}")]
    App(#[from] apps::AppError),
    #[error("worker: cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

fn inherit(what: &'static str) -> impl FnOnce(std::io::Error) -> WorkerError {
    move |source| WorkerError::Inherit { what, source }
}

/// Run one worker process until the master (or a signal) tells it to stop.
pub fn run(
    args: WorkerArgs,
    init_logging: impl FnOnce(&config::Config),
) -> Result<(), WorkerError> {
    // First, before its php-cgi starts: a TERM or QUIT from the master must never find the
    // worker without its handlers (the default action would kill it).
    let flags = install_signals()?;
    let config = config_from_master(args.config.as_deref())?;
    init_logging(&config);
    serve(args, config, flags)
}

/// The exact config text the master runs on, from stdin (`path`: the file it came from, for
/// relative paths; `None` = the embedded default): a worker process and a php parent start so.
pub(crate) fn config_from_master(
    path: Option<&std::path::Path>,
) -> Result<config::Config, WorkerError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(WorkerError::ReadConfig)?;
    let source = match path {
        Some(path) => ConfigSource::File(path.to_path_buf()),
        None => ConfigSource::Embedded,
    };
    Ok(config::load_str(&text, source)?)
}

/// Pool `index` of `config`.
pub(crate) fn pool_of(
    config: &config::Config,
    index: usize,
) -> Result<crate::config::PoolConfig, WorkerError> {
    config
        .pools
        .get(index)
        .cloned()
        .ok_or(WorkerError::NoPool(index))
}

/// A worker forked by its pool's php parent (`php_parent`): PHP, the config, the logs and the
/// stop handlers (with `flags`: the php parent installed them with [`install_signals`]) are
/// already set up.
pub(crate) fn run_forked(
    args: WorkerArgs,
    config: config::Config,
    flags: StopFlags,
) -> Result<(), WorkerError> {
    // What the php parent was sent is not the new worker's to act on.
    for flag in [&flags.stopping, &flags.quitting, &flags.retiring] {
        flag.store(false, std::sync::atomic::Ordering::Relaxed);
    }
    serve(args, config, flags)
}

fn serve(args: WorkerArgs, config: config::Config, flags: StopFlags) -> Result<(), WorkerError> {
    let pool = pool_of(&config, args.pool_index)?;

    let listener_fd = adopt_inherited_fd(args.listener_fd).map_err(inherit("listener"))?;
    let listener = Listener::from_inherited(listener_fd).map_err(inherit("listener"))?;
    let board_fd = adopt_inherited_fd(args.scoreboard_fd).map_err(inherit("scoreboard"))?;
    let scoreboard =
        Arc::new(Scoreboard::attach(board_fd, &args.slots).map_err(inherit("scoreboard"))?);
    let handoff: LockHandoff = args.lock.parse()?;
    let lock = AcceptLock::from_handoff(&handoff)?;

    let (choice, _why) = apps::choose_for(&config, &pool)?;
    let info = PoolInfo {
        name: pool.name.clone(),
        process_manager: pool.pm.to_string(),
        listen_address: pool.listen.address.to_string(),
        listen_backlog: args.backlog,
        somaxconn: args.somaxconn,
        max_children: pool.max_children,
    };
    // Built on this (the worker's only) thread: a php-cgi child dies with it.
    // The master's runtime_dir, not one derived from this (maybe unprivileged) process's uid.
    let runtime_dir = std::env::var_os(crate::master::running::WORKER_RUNTIME_DIR_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| config.global.runtime_dir.clone());
    // The process already runs as the pool's user: its children inherit the ids.
    let app = apps::build(&choice, &pool, &runtime_dir, args.slot, None);
    // php and cgi enforce request_timeout themselves (they kill their child and answer 504).
    let app_enforces_timeout = matches!(choice, apps::Choice::Php | apps::Choice::Cgi);
    if !pool.request_timeout.is_zero() && !app_enforces_timeout {
        super::watchdog::spawn(
            Arc::clone(&scoreboard),
            args.pool_index,
            args.slot,
            pool.request_timeout,
            pool.name.clone(),
        );
    }
    let mut ctx = PoolContext::new(args.pool_index, pool, listener, lock, scoreboard, info);
    ctx.stopping = flags.stopping;
    ctx.quitting = flags.quitting;
    ctx.retiring = flags.retiring;
    ctx.hold_link = match args.hold_fd {
        Some(fd) => Some(adopt_inherited_fd(fd).map_err(inherit("holder link"))?),
        None => None,
    };
    run_worker(&ctx, args.slot, app);
    Ok(())
}

/// The flags a worker's signal handlers set; they become its pool context's.
#[derive(Clone)]
pub(crate) struct StopFlags {
    /// TERM, INT: drain and exit.
    stopping: Arc<AtomicBool>,
    /// QUIT: exit now.
    quitting: Arc<AtomicBool>,
    /// USR2: retire gently (a reload's old generation).
    retiring: Arc<AtomicBool>,
}

/// TERM and INT: drain and exit; QUIT: exit now; USR2: retire gently (the master's reload). HUP
/// and USR1 are the master's business: a worker ignores them (their default action would kill
/// it). Then lets through what came before (`main` deferred them: see `master::signals`). The
/// php parent installs them too, for the workers it forks ([`run_forked`]).
pub(crate) fn install_signals() -> Result<StopFlags, WorkerError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
    use signal_hook::flag::register;
    let flags = StopFlags {
        stopping: Arc::new(AtomicBool::new(false)),
        quitting: Arc::new(AtomicBool::new(false)),
        retiring: Arc::new(AtomicBool::new(false)),
    };
    let ignored = Arc::new(AtomicBool::new(false));
    for (signal, flag) in [
        (SIGTERM, &flags.stopping),
        (SIGINT, &flags.stopping),
        (SIGQUIT, &flags.quitting),
        (SIGHUP, &ignored),
        (SIGUSR1, &ignored),
        (SIGUSR2, &flags.retiring),
    ] {
        register(signal, Arc::clone(flag)).map_err(WorkerError::Signals)?;
    }
    crate::master::signals::deliver_deferred_signals().map_err(WorkerError::Signals)?;
    Ok(flags)
}
