//! Starting and stopping the pools: bind each pool's socket with its effective backlog, warn
//! when `somaxconn` clamps it, read back what the kernel holds, start the sampler, the worker
//! threads and the status listener; later drain and stop them.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::fd::{AsRawFd, RawFd};

use nix::sys::signal::Signal;

use super::apps::{self, AppError};
use super::children::SpawnSpec;
use super::notify::Notifier;
use super::pm::PmSettings;
use super::process_pool::ProcessPool;
use super::status_source::Pools;
use super::upgrade::{self, Inherited, Upgrade, UpgradeState, STATUS_NAME};
use crate::config::{self, BacklogError, Config, ConfigSource, WorkerKind};
use crate::config::{PmKind, PoolConfig};
use crate::listen::{self, BindOptions, ListenAddress, ListenError, Listener};
use crate::probe::{spawn_sampler, QueueProbe, SamplerHandle};
use crate::scoreboard::Scoreboard;
use crate::status::PoolInfo;
use crate::sys::privileges;
use crate::worker::context::STOP_CHECK_INTERVAL;
use crate::worker::lock::{AcceptLock, LockError, LockShared};
use crate::worker::{spawn_thread_workers, PoolContext, WorkerThreads};

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
    #[error("pool {pool}: workers = \"process\" is not available in this build yet; use workers = \"thread\"")]
    ProcessWorkers { pool: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MasterError {
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

/// One started pool.
struct PoolHandle {
    ctx: Arc<PoolContext>,
    workers: Workers,
    /// The accept lock every worker of the pool takes (worker processes get a descriptor).
    lock: Arc<LockShared>,
}

/// A pool's workers: threads of the master, or supervised processes.
enum Workers {
    Threads(WorkerThreads),
    Processes(Box<ProcessPool>),
}

/// A started master.
pub struct Running {
    config: Config,
    /// Runs the status listener and the signal handlers.
    runtime: tokio::runtime::Runtime,
    pools: Vec<PoolHandle>,
    sampler: SamplerHandle,
    /// Telling the status listener to stop.
    status_stop: tokio::sync::watch::Sender<bool>,
    scoreboard: Arc<Scoreboard>,
    /// Scoreboard layout (slots per pool), handed to worker processes.
    slot_counts: Vec<usize>,
    options: StartOptions,
    notifier: Notifier,
    /// The status listener's descriptor, handed to a new master on upgrade.
    status_fd: Option<RawFd>,
    /// A binary upgrade in progress (SIGUSR2).
    upgrade: Option<Upgrade>,
}

impl Running {
    pub fn start(config: Config, options: StartOptions) -> Result<Self, MasterError> {
        // First, while the process has one thread: it clears environment variables.
        let mut inherited =
            Inherited::from_env().map_err(io_error("binary upgrade: inherited sockets"))?;
        prepare_runtime_dir(&config.global.runtime_dir)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fastpm-master")
            .enable_all()
            .build()
            .map_err(io_error("cannot start the master's runtime"))?;
        let somaxconn = match listen::read_somaxconn() {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read net.core.somaxconn; the backlog clamp cannot be checked");
                None
            }
        };
        let slot_counts: Vec<usize> = config.pools.iter().map(slots_for).collect();
        let scoreboard = Arc::new(
            Scoreboard::create(&slot_counts).map_err(io_error("cannot create the scoreboard"))?,
        );

        let mut probes = Vec::new();
        let mut contexts = Vec::new();
        for index in 0..config.pools.len() {
            let (ctx, choice, probe, lock) = open_pool(
                &config,
                index,
                &options,
                somaxconn,
                &scoreboard,
                &mut inherited,
            )?;
            probes.push((index, probe));
            contexts.push((ctx, choice, lock));
        }
        let sampler = spawn_sampler(probes, Arc::clone(&scoreboard));

        let mut pools = Vec::new();
        for (ctx, choice, lock) in contexts {
            let pool_name = ctx.config.name.clone();
            if ctx.config.workers == WorkerKind::Process {
                let spec = spawn_spec(&config, &ctx, &lock, &slot_counts, &options)?;
                let mut processes =
                    ProcessPool::new(pool_name, spec, PmSettings::from_pool(&ctx.config));
                processes.fill(scoreboard.slots(ctx.index));
                pools.push(PoolHandle {
                    ctx,
                    workers: Workers::Processes(Box::new(processes)),
                    lock,
                });
                continue;
            }
            let pool_config = ctx.config.clone();
            let runtime_dir = config.global.runtime_dir.clone();
            // Workers are built in order; each gets its number (for its private socket names).
            let next_worker = std::sync::atomic::AtomicUsize::new(0);
            let make_app = || {
                let worker = next_worker.fetch_add(1, Relaxed);
                apps::build(&choice, &pool_config, &runtime_dir, worker)
            };
            let threads = spawn_thread_workers(Arc::clone(&ctx), &make_app)
                .map_err(io_error(format!("pool {pool_name}: cannot start workers")))?;
            pools.push(PoolHandle {
                ctx,
                workers: Workers::Threads(threads),
                lock,
            });
        }

        let (status_stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut status_fd = None;
        if let Some(addr) = config.global.status_listen {
            let source = Arc::new(Pools(pools.iter().map(|p| Arc::clone(&p.ctx)).collect()));
            let std_listener = match inherited.sockets.remove(STATUS_NAME) {
                Some(fd) => std::net::TcpListener::from(fd),
                None => std::net::TcpListener::bind(addr)
                    .map_err(io_error(format!("cannot bind the status listener {addr}")))?,
            };
            status_fd = Some(std_listener.as_raw_fd());
            std_listener
                .set_nonblocking(true)
                .map_err(io_error("status listener"))?;
            let _enter = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(std_listener)
                .map_err(io_error("status listener"))?;
            runtime.spawn(async move {
                if let Err(e) = crate::status::http::serve(listener, source, stop_rx).await {
                    tracing::error!(error = %e, "status listener failed");
                }
            });
            tracing::info!("status on http://{addr}/status (also /metrics, and / in a browser)");
        }
        write_pid_file(&config)?;
        for p in &pools {
            tracing::info!(
                pool = %p.ctx.config.name,
                "ready: {} {} workers; try: fastpm request {} /",
                p.ctx.config.max_children,
                p.ctx.config.workers,
                p.ctx.config.listen.address,
            );
        }
        let notifier = Notifier::from_env().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "NOTIFY_SOCKET is unusable; not notifying systemd");
            Notifier::disabled()
        });
        let _ = notifier.ready();
        inherited.signal_ready();
        Ok(Self {
            status_fd,
            upgrade: None,
            config,
            runtime,
            pools,
            sampler,
            status_stop,
            scoreboard,
            slot_counts,
            options,
            notifier,
        })
    }

    /// One supervisor tick: reap worker processes that ended and start their replacements; see
    /// whether a binary upgrade is done. True when this master should hand over and leave.
    pub fn supervise(&mut self) -> bool {
        for p in &mut self.pools {
            if let Workers::Processes(processes) = &mut p.workers {
                let slots = self.scoreboard.slots(p.ctx.index);
                processes.reap(slots);
                processes.kill_hung(slots);
                processes.maintain(p.ctx.board(), slots);
            }
        }
        let Some(upgrade) = &mut self.upgrade else {
            return false;
        };
        match upgrade.poll() {
            UpgradeState::Pending => false,
            UpgradeState::Ready => true,
            UpgradeState::Failed(status) => {
                tracing::error!("binary upgrade failed: the new master ended ({status}) before it was ready; still serving");
                self.upgrade = None;
                false
            }
        }
    }

    /// The new master serves: retire our workers (each finishes its connection) and leave the
    /// sockets, their files and the pid file to it.
    pub fn hand_over(mut self) -> Result<(), MasterError> {
        let new_pid = self.upgrade.as_ref().map(|u| u.child.id()).unwrap_or(0);
        tracing::info!("binary upgrade: new master {new_pid} serves; retiring this one");
        for p in &mut self.pools {
            p.ctx.quitting.store(true, Relaxed);
            p.ctx.stopping.store(true, Relaxed);
            if let Workers::Processes(processes) = &mut p.workers {
                processes.signal_all(Signal::SIGQUIT);
            }
        }
        let deadline = Instant::now() + self.config.global.shutdown_timeout;
        self.finish_with(deadline, false)
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// Reload: read the config again; each process pool starts a new generation of workers on
    /// it, then retires the old one (the listening socket stays; a changed backlog is applied
    /// with a fresh `listen()`). Thread pools and changes to the set of pools or their
    /// addresses need a restart.
    pub fn handle_hup(&mut self) {
        let _ = self.notifier.reloading();
        match self.reload() {
            Ok(()) => tracing::info!("SIGHUP: reloaded"),
            Err(why) => tracing::error!("SIGHUP: reload refused, running unchanged: {why}"),
        }
        let _ = self.notifier.ready();
    }

    fn reload(&mut self) -> Result<(), String> {
        let ConfigSource::File(path) = &self.config.source else {
            return Err("the embedded default config cannot change; nothing to reload".into());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let new = config::load_str(&text, self.config.source.clone()).map_err(|e| e.to_string())?;
        let same_shape = new.pools.len() == self.config.pools.len()
            && new.pools.iter().zip(&self.config.pools).all(|(a, b)| {
                a.name == b.name && a.listen.address == b.listen.address && a.workers == b.workers
            });
        if !same_shape {
            return Err("pools, their addresses or worker kinds changed: restart fastpm".into());
        }
        self.options.config_text = Arc::new(text);
        for (p, pool) in self.pools.iter_mut().zip(&new.pools) {
            let Workers::Processes(processes) = &mut p.workers else {
                tracing::warn!(pool = %pool.name, "thread workers keep their config until a restart");
                continue;
            };
            let (backlog, _) = config::effective_backlog(
                self.options.cli_backlog,
                self.options.listenq_env.as_deref(),
                pool.listen.backlog,
            )
            .map_err(|e| e.to_string())?;
            if backlog != p.ctx.info.listen_backlog {
                listen::relisten(&p.ctx.listener, backlog).map_err(|e| {
                    format!("pool {}: listen() with backlog {backlog}: {e}", pool.name)
                })?;
                tracing::info!(pool = %pool.name, "backlog {} → {backlog}", p.ctx.info.listen_backlog);
            }
            let capacity = (self.slot_counts[p.ctx.index] / 2) as u32;
            let mut pm = PmSettings::from_pool(pool);
            if pm.max_children > capacity {
                tracing::warn!(pool = %pool.name, "max_children above {capacity} needs a restart; running {capacity}");
                pm.max_children = capacity;
            }
            let mut spec = spawn_spec(&new, &p.ctx, &p.lock, &self.slot_counts, &self.options)
                .map_err(|e| e.to_string())?;
            spec.backlog = backlog;
            processes.replace(spec, pm, self.scoreboard.slots(p.ctx.index));
        }
        self.config = new;
        Ok(())
    }

    pub fn handle_usr1(&self) {
        tracing::info!("SIGUSR1: logs go to stderr; nothing to reopen");
    }

    /// Binary upgrade: start the binary on disk as a new master that inherits our sockets
    /// (see `upgrade.rs`); we leave once it serves.
    pub fn handle_usr2(&mut self) {
        if self.upgrade.is_some() {
            tracing::warn!("SIGUSR2: a binary upgrade is already under way");
            return;
        }
        let mut sockets: Vec<(String, RawFd)> = self
            .pools
            .iter()
            .map(|p| (p.ctx.config.name.clone(), p.ctx.listener.as_raw_fd()))
            .collect();
        if let Some(fd) = self.status_fd {
            sockets.push((STATUS_NAME.to_string(), fd));
        }
        match upgrade::start(&sockets) {
            Ok(u) => {
                tracing::info!(
                    "SIGUSR2: binary upgrade: started new master {}",
                    u.child.id()
                );
                self.upgrade = Some(u);
            }
            Err(e) => tracing::error!(error = %e, "SIGUSR2: cannot start the new master"),
        }
    }

    /// Drain: workers serve what is queued and in flight, bounded by `shutdown_timeout`.
    pub fn stop_graceful(mut self, why: &str) -> Result<(), MasterError> {
        let timeout = self.config.global.shutdown_timeout;
        tracing::info!(
            "{why}: graceful stop; draining (at most {})",
            humantime(timeout)
        );
        for p in &mut self.pools {
            p.ctx.stopping.store(true, Relaxed);
            if let Workers::Processes(processes) = &mut p.workers {
                processes.signal_all(Signal::SIGTERM);
            }
        }
        self.finish(Instant::now() + timeout)
    }

    /// Stop now: workers leave after the request they are running, if any.
    pub fn stop_now(mut self, why: &str) -> Result<(), MasterError> {
        tracing::info!("{why}: immediate stop");
        for p in &mut self.pools {
            p.ctx.quitting.store(true, Relaxed);
            p.ctx.stopping.store(true, Relaxed);
            if let Workers::Processes(processes) = &mut p.workers {
                processes.signal_all(Signal::SIGQUIT);
            }
        }
        self.finish(Instant::now() + Duration::from_millis(500))
    }

    fn finish(self, deadline: Instant) -> Result<(), MasterError> {
        self.finish_with(deadline, true)
    }

    /// Stop the workers (bounded by `deadline`) and the rest; `own_files`: remove the unix
    /// socket files and the pid file (not after a hand-over: they are the new master's).
    fn finish_with(self, deadline: Instant, own_files: bool) -> Result<(), MasterError> {
        let _ = self.notifier.stopping();
        let _ = self.status_stop.send(true);
        let mut left = 0;
        for p in self.pools {
            left += match p.workers {
                Workers::Threads(threads) => threads.join_until(deadline),
                Workers::Processes(mut processes) => {
                    processes.wait_all(deadline, self.scoreboard.slots(p.ctx.index))
                }
            };
            if let (true, ListenAddress::Unix(path)) = (own_files, &p.ctx.config.listen.address) {
                let _ = std::fs::remove_file(path);
            }
        }
        if left > 0 {
            tracing::warn!(
                "{left} workers were still busy at the deadline; their requests are cut off"
            );
        }
        drop(self.sampler);
        if let (true, Some(pid_file)) = (own_files, &self.config.global.pid_file) {
            let _ = std::fs::remove_file(pid_file);
        }
        self.runtime.shutdown_timeout(Duration::from_millis(200));
        tracing::info!("stopped");
        Ok(())
    }
}

/// Bind one pool and build what its workers share.
fn open_pool(
    config: &Config,
    index: usize,
    options: &StartOptions,
    somaxconn: Option<u32>,
    scoreboard: &Arc<Scoreboard>,
    inherited: &mut Inherited,
) -> Result<(Arc<PoolContext>, apps::Choice, QueueProbe, Arc<LockShared>), MasterError> {
    let pool = &config.pools[index];
    let lock_error = |source| MasterError::Lock {
        pool: pool.name.clone(),
        source,
    };
    let shared = Arc::new(
        LockShared::create(pool.accept_lock, &config.global.runtime_dir, &pool.name)
            .map_err(lock_error)?,
    );
    if pool.workers == WorkerKind::Thread && pool.pm != PmKind::Static {
        tracing::warn!(pool = %pool.name, "pm = \"{}\" applies to worker processes; thread workers run max_children ({}) threads", pool.pm, pool.max_children);
    }
    // Worker processes take the lock themselves; the master's copy of the pool never accepts.
    let lock = match pool.workers {
        WorkerKind::Process => AcceptLock::None,
        WorkerKind::Thread => AcceptLock::for_worker(&shared).map_err(lock_error)?,
    };
    let php_found = config::php_cgi_on_path(&pool.app.php_cgi).is_some();
    let embedded = matches!(config.source, ConfigSource::Embedded);
    let (choice, why) = apps::choose(
        &pool.name,
        pool.app.kind,
        &pool.app.php_cgi,
        php_found,
        embedded,
    )?;
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
    // Workers block in accept() for at most this long, then look at the stop flags.
    nix::sys::socket::setsockopt(
        &listener,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::from(libc::timeval {
            tv_sec: 0,
            tv_usec: STOP_CHECK_INTERVAL.as_micros() as libc::suseconds_t,
        }),
    )
    .map_err(|e| MasterError::Io {
        what: format!("pool {}: cannot set the accept timeout", pool.name),
        source: e.into(),
    })?;

    let info = PoolInfo {
        name: pool.name.clone(),
        process_manager: pool.pm.to_string(),
        listen_address: address.to_string(),
        listen_backlog: backlog,
        somaxconn,
        max_children: pool.max_children,
    };
    let ctx = PoolContext::new(
        index,
        pool.clone(),
        listener,
        lock,
        Arc::clone(scoreboard),
        info,
    );
    Ok((Arc::new(ctx), choice, probe, shared))
}

/// `runtime_dir` holds private sockets: created 0700.
fn prepare_runtime_dir(dir: &Path) -> Result<(), MasterError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(format!(
            "cannot create runtime_dir {}",
            dir.display()
        )))
}

fn write_pid_file(config: &Config) -> Result<(), MasterError> {
    if let Some(path) = &config.global.pid_file {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(io_error(format!(
            "cannot write pid_file {}",
            path.display()
        )))?;
    }
    Ok(())
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Scoreboard slots of a pool: worker processes get twice `max_children`, so during a reload
/// the new generation starts before the old one has left.
fn slots_for(pool: &PoolConfig) -> usize {
    match pool.workers {
        WorkerKind::Thread => pool.max_children as usize,
        WorkerKind::Process => 2 * pool.max_children as usize,
    }
}

/// What a pool's worker processes are started with.
fn spawn_spec(
    config: &Config,
    ctx: &PoolContext,
    lock: &Arc<LockShared>,
    slot_counts: &[usize],
    options: &StartOptions,
) -> Result<SpawnSpec, MasterError> {
    let pool = &ctx.config;
    let credentials =
        privileges::resolve(pool.user.as_deref(), pool.group.as_deref()).map_err(|e| {
            MasterError::Io {
                what: format!("pool {}: user/group", pool.name),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
    Ok(SpawnSpec {
        pool_index: ctx.index,
        listener_fd: ctx.listener.as_raw_fd(),
        scoreboard_fd: ctx.scoreboard.raw_fd(),
        slots: slot_counts.to_vec(),
        lock: Arc::clone(lock),
        backlog: ctx.info.listen_backlog,
        somaxconn: ctx.info.somaxconn,
        config_path: match &config.source {
            ConfigSource::File(path) => Some(path.clone()),
            ConfigSource::Embedded => None,
        },
        config_text: Arc::clone(&options.config_text),
        credentials,
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
