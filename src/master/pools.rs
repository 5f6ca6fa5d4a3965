//! Starting and stopping the pools: bind each pool's socket with its effective backlog, warn
//! when `somaxconn` clamps it, read back what the kernel holds, start the sampler, the worker
//! threads and the status listener; later drain and stop them.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::apps::{self, AppError};
use super::status_source::Pools;
use crate::config::{self, BacklogError, Config, ConfigSource, WorkerKind};
use crate::fastcgi::Limits;
use crate::listen::{self, BindOptions, ClientFilter, ListenAddress, ListenError};
use crate::probe::{spawn_sampler, QueueProbe, SamplerHandle};
use crate::scoreboard::Scoreboard;
use crate::status::PoolInfo;
use crate::worker::lock::{AcceptLock, LockError};
use crate::worker::context::STOP_CHECK_INTERVAL;
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
}

/// One started pool.
struct PoolHandle {
    ctx: Arc<PoolContext>,
    threads: WorkerThreads,
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
}

impl Running {
    pub fn start(config: Config, options: StartOptions) -> Result<Self, MasterError> {
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
        let slots: Vec<usize> = config
            .pools
            .iter()
            .map(|p| p.max_children as usize)
            .collect();
        let scoreboard = Arc::new(
            Scoreboard::create(&slots).map_err(io_error("cannot create the scoreboard"))?,
        );

        let mut probes = Vec::new();
        let mut contexts = Vec::new();
        for index in 0..config.pools.len() {
            let (ctx, choice, probe) = open_pool(&config, index, &options, somaxconn, &scoreboard)?;
            probes.push((index, probe));
            contexts.push((ctx, choice));
        }
        let sampler = spawn_sampler(probes, Arc::clone(&scoreboard));

        let mut pools = Vec::new();
        for (ctx, choice) in contexts {
            let pool_name = ctx.config.name.clone();
            let threads = spawn_thread_workers(Arc::clone(&ctx), &|| apps::build(&choice, &pool_name))
                .map_err(io_error(format!("pool {pool_name}: cannot start workers")))?;
            pools.push(PoolHandle { ctx, threads });
        }

        let (status_stop, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(addr) = config.global.status_listen {
            let source = Arc::new(Pools(pools.iter().map(|p| Arc::clone(&p.ctx)).collect()));
            let std_listener = std::net::TcpListener::bind(addr)
                .map_err(io_error(format!("cannot bind the status listener {addr}")))?;
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
        Ok(Self {
            config,
            runtime,
            pools,
            sampler,
            status_stop,
        })
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    pub fn handle_hup(&self) {
        tracing::warn!("SIGHUP: reload arrives with process workers; this build keeps running unchanged");
    }

    pub fn handle_usr1(&self) {
        tracing::info!("SIGUSR1: logs go to stderr; nothing to reopen");
    }

    pub fn handle_usr2(&self) {
        tracing::warn!("SIGUSR2: binary upgrade arrives with process workers; this build keeps running unchanged");
    }

    /// Drain: workers serve what is queued and in flight, bounded by `shutdown_timeout`.
    pub fn stop_graceful(self, why: &str) -> Result<(), MasterError> {
        let timeout = self.config.global.shutdown_timeout;
        tracing::info!(
            "{why}: graceful stop; draining (at most {})",
            humantime(timeout)
        );
        for p in &self.pools {
            p.ctx.stopping.store(true, Relaxed);
        }
        self.finish(Instant::now() + timeout)
    }

    /// Stop now: workers leave after the request they are running, if any.
    pub fn stop_now(self, why: &str) -> Result<(), MasterError> {
        tracing::info!("{why}: immediate stop");
        for p in &self.pools {
            p.ctx.quitting.store(true, Relaxed);
            p.ctx.stopping.store(true, Relaxed);
        }
        self.finish(Instant::now() + Duration::from_millis(500))
    }

    fn finish(self, deadline: Instant) -> Result<(), MasterError> {
        let _ = self.status_stop.send(true);
        let mut left = 0;
        for p in self.pools {
            left += p.threads.join_until(deadline);
            if let ListenAddress::Unix(path) = &p.ctx.config.listen.address {
                let _ = std::fs::remove_file(path);
            }
        }
        if left > 0 {
            tracing::warn!("{left} workers were still busy at the deadline; their requests are cut off");
        }
        drop(self.sampler);
        if let Some(pid_file) = &self.config.global.pid_file {
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
) -> Result<(Arc<PoolContext>, apps::Choice, QueueProbe), MasterError> {
    let pool = &config.pools[index];
    if pool.workers == WorkerKind::Process {
        return Err(MasterError::ProcessWorkers {
            pool: pool.name.clone(),
        });
    }
    let lock = AcceptLock::for_threads(pool.accept_lock).map_err(|source| MasterError::Lock {
        pool: pool.name.clone(),
        source,
    })?;
    let php_found = config::php_cgi_on_path(&pool.app.php_cgi).is_some();
    let embedded = matches!(config.source, ConfigSource::Embedded);
    let (choice, why) = apps::choose(&pool.name, pool.app.kind, php_found, embedded)?;
    if let Some(why) = why {
        tracing::warn!("{why}");
    }

    let (backlog, source) = config::effective_backlog(
        options.cli_backlog,
        options.listenq_env.as_deref(),
        pool.listen.backlog,
    )?;
    let address = &pool.listen.address;
    let listener = listen::bind(
        address,
        &BindOptions {
            backlog,
            mode: pool.listen.mode,
            owner: pool.listen.owner.clone(),
            group: pool.listen.group.clone(),
        },
    )?;
    if let Some(warning) = somaxconn.and_then(|s| listen::clamp_warning(address, backlog, s)) {
        tracing::warn!("{warning}");
    }
    let mut probe = QueueProbe::for_listener(&listener)
        .map_err(io_error(format!("pool {}: cannot probe {address}", pool.name)))?;
    match probe.read() {
        Ok(reading) => tracing::info!(
            pool = %pool.name,
            "listening on {address}: backlog {backlog} ({}), the kernel holds {}",
            source,
            reading.backlog
        ),
        Err(e) => tracing::warn!(pool = %pool.name, error = %e, "listening on {address}: cannot read the queue back from the kernel"),
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
    let ctx = PoolContext {
        index,
        config: pool.clone(),
        listener,
        lock,
        clients: ClientFilter::new(pool.listen.allowed_clients.clone()),
        limits: Limits {
            max_conns: pool.max_children,
            max_reqs: pool.max_children,
            ..Limits::default()
        },
        scoreboard: Arc::clone(scoreboard),
        info,
        stopping: Default::default(),
        quitting: Default::default(),
    };
    Ok((Arc::new(ctx), choice, probe))
}

/// `runtime_dir` holds private sockets: created 0700.
fn prepare_runtime_dir(dir: &Path) -> Result<(), MasterError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(format!("cannot create runtime_dir {}", dir.display())))
}

fn write_pid_file(config: &Config) -> Result<(), MasterError> {
    if let Some(path) = &config.global.pid_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(io_error(format!("cannot write pid_file {}", path.display())))?;
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
