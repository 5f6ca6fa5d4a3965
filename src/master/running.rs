//! The running master: starts every pool (sockets, scoreboard, sampler, workers, status
//! listener), supervises worker processes each tick, reloads on HUP, hands over to a new binary
//! on USR2, and stops — draining, at once, or after a hand-over.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::fd::{AsRawFd, RawFd};

use nix::sys::signal::Signal;

use super::apps::{self};
use super::notify::Notifier;
use super::pm::PmSettings;
use super::pools::{
    current_backlog, humantime, io_error, open_pool, pool_credentials, runs_processes, slots_for,
    spawn_spec, write_pid_file, MasterError, StartOptions,
};
use super::process_pool::ProcessPool;
use super::runtime_dir;
use super::signals::{self, Event};
use super::status_source::Pools;
use super::upgrade::{self, Inherited, Upgrade, UpgradeState, STATUS_NAME};
use crate::config::BrokerUrl;
use crate::config::{self, Config, ConfigSource};
use crate::hold::broker::Broker;
use crate::hold::holder::{Holder, PoolHold};
use crate::listen::{self, ListenAddress};
use crate::probe::{spawn_sampler_with_history, SamplerHandle};
use crate::scoreboard::Scoreboard;
use crate::status::history::History;
use crate::sys::inherit::close_inherited_on_exec;
use crate::worker::lock::LockShared;
use crate::worker::{spawn_thread_workers, PoolContext, WorkerThreads};

/// One started pool.
struct PoolHandle {
    ctx: Arc<PoolContext>,
    workers: Workers,
    /// The accept lock every worker of the pool takes (worker processes get a descriptor).
    lock: Arc<LockShared>,
    /// The pool's shared php-cgi (`php_children = "shared"`): declared after `workers`, so it
    /// outlives them.
    php: apps::PoolPhp,
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
    /// Held requests and the broker (DESIGN §8).
    holder: Arc<Holder>,
}

impl Running {
    /// Start every pool; the master's signals arrive on the returned channel. The handlers are
    /// installed before anything else starts (a signal sent while the master starts is handled
    /// once it is up; see `signals`).
    pub fn start(
        config: Config,
        options: StartOptions,
    ) -> Result<(Self, Receiver<Event>), MasterError> {
        // Before any child exists: descriptors we inherited (systemd's sockets that no pool
        // claims, anything a shell leaked) must not reach workers, php-cgi or scripts. What we
        // adopt below is ours; what a child needs it is given explicitly.
        let marked = close_inherited_on_exec()
            .map_err(io_error("cannot mark inherited descriptors close-on-exec"))?;
        if marked > 0 {
            tracing::debug!("{marked} inherited descriptors marked close-on-exec");
        }
        // First, while the process has one thread: it clears environment variables.
        let mut inherited =
            Inherited::from_env().map_err(io_error("binary upgrade: inherited sockets"))?;
        prepare_runtime_dir(&config)?;
        // Each held request is a descriptor in the master (DESIGN §8): take all the system
        // allows. Children inherit the raised soft limit.
        let nofile = raise_nofile_limit();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fastpm-master")
            .enable_all()
            .build()
            .map_err(io_error("cannot start the master's runtime"))?;
        let events =
            signals::listen(&runtime).map_err(io_error("cannot install signal handlers"))?;
        // Before any worker process: the thread that writes their relayed lines to the files.
        crate::logs::start_relay().map_err(io_error("cannot start the log relay"))?;
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
        let mut holder_pools = Vec::new();
        for index in 0..config.pools.len() {
            if runtime_dir::needs_pool_dir(&config.pools[index]) {
                runtime_dir::pool_dir(&config, &config.pools[index])?;
            }
            let opened = open_pool(
                &config,
                index,
                &options,
                somaxconn,
                &scoreboard,
                &mut inherited,
            )?;
            probes.push((index, opened.probe));
            if let Some(link) = opened.holder_end {
                let pool = &config.pools[index];
                holder_pools.push(PoolHold {
                    index,
                    name: pool.name.clone(),
                    link,
                    max_held: pool.app.max_held as usize,
                    hold_timeout: pool.app.hold_timeout,
                });
            }
            contexts.push((opened.ctx, opened.choice, opened.lock));
        }
        // Held requests (DESIGN §8) live here, on the master's runtime.
        let holder = {
            let _enter = runtime.enter();
            let history = config
                .pools
                .iter()
                .map(|p| p.app.history as usize)
                .max()
                .unwrap_or(0);
            let broker =
                match &config.global.broker {
                    BrokerUrl::Memory => Broker::memory(config.pools.len(), history),
                    BrokerUrl::Redis(url) => Broker::redis(url, config.pools.len(), history)
                        .map_err(|e| MasterError::Io {
                            what: format!("broker {}", config.global.broker),
                            source: std::io::Error::other(e.to_string()),
                        })?,
                };
            Holder::start(broker, Arc::clone(&scoreboard), holder_pools)
                .map_err(io_error("cannot start the holder"))?
        };
        // The sampler writes the one-second history the status listener serves (`/history`,
        // the dashboard, `status --watch`): it alone sees every queue reading.
        let history = Arc::new(History::new(config.pools.iter().map(|p| p.name.clone())));
        let sampler =
            spawn_sampler_with_history(probes, Arc::clone(&scoreboard), Some(Arc::clone(&history)));

        let mut pools = Vec::new();
        for (ctx, choice, lock) in contexts {
            let pool_name = ctx.config.name.clone();
            let php = apps::PoolPhp::start(
                &choice,
                &ctx.config,
                &config.global.runtime_dir,
                pool_credentials(&ctx.config)?.as_ref(),
            )
            .map_err(io_error(format!("pool {pool_name}: cannot start php-cgi")))?;
            if runs_processes(&ctx.config) {
                let spec = spawn_spec(&config, &ctx, &lock, &slot_counts, &options)?;
                let mut processes = ProcessPool::new(
                    pool_name,
                    spec,
                    pm_settings(&ctx.config),
                    ctx.metrics.max_children_reached.clone(),
                );
                processes.fill(scoreboard.slots(ctx.index));
                pools.push(PoolHandle {
                    ctx,
                    workers: Workers::Processes(Box::new(processes)),
                    lock,
                    php,
                });
                continue;
            }
            let pool_config = ctx.config.clone();
            let runtime_dir = config.global.runtime_dir.clone();
            // Thread workers run inside the master: their php-cgi and CGI children drop to the
            // pool's user themselves.
            let children_as = pool_credentials(&pool_config)?;
            // Workers are built in order; each gets its number (for its private socket names).
            let next_worker = std::sync::atomic::AtomicUsize::new(0);
            let make_app = || {
                let worker = next_worker.fetch_add(1, Relaxed);
                apps::build(
                    &choice,
                    &pool_config,
                    &runtime_dir,
                    worker,
                    children_as.as_ref(),
                )
            };
            let threads = spawn_thread_workers(Arc::clone(&ctx), &make_app)
                .map_err(io_error(format!("pool {pool_name}: cannot start workers")))?;
            pools.push(PoolHandle {
                ctx,
                workers: Workers::Threads(threads),
                lock,
                php,
            });
        }

        let (status_stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut status_fd = None;
        if let Some(addr) = config.global.status_listen {
            let source = Arc::new(Pools {
                pools: pools.iter().map(|p| Arc::clone(&p.ctx)).collect(),
                history: Arc::clone(&history),
                holder: Arc::clone(&holder),
                broker: config.global.broker.to_string(),
            });
            let std_listener = match inherited.sockets.remove(STATUS_NAME) {
                Some(fd) => std::net::TcpListener::from(fd),
                None => std::net::TcpListener::bind(addr)
                    .map_err(io_error(format!("cannot bind the status listener {addr}")))?,
            };
            status_fd = Some(std_listener.as_raw_fd());
            // Port 0 means "any free port": say the one the kernel gave.
            let addr = std_listener.local_addr().unwrap_or(addr);
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
                "ready: {} {} workers; {nofile} descriptors (RLIMIT_NOFILE); try: fastpm request {}",
                p.ctx.config.max_children,
                p.ctx.config.workers,
                try_hint(&p.ctx.config),
            );
        }
        let notifier = Notifier::from_env().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "NOTIFY_SOCKET is unusable; not notifying systemd");
            Notifier::disabled()
        });
        let _ = notifier.ready();
        inherited.signal_ready();
        let running = Self {
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
            holder,
        };
        Ok((running, events))
    }

    /// One supervisor tick: reap worker processes that ended and start their replacements; see
    /// whether a binary upgrade is done. True when this master should hand over and leave.
    pub fn supervise(&mut self) -> bool {
        for p in &mut self.pools {
            if let Workers::Processes(processes) = &mut p.workers {
                let slots = self.scoreboard.slots(p.ctx.index);
                processes.reap(slots);
                processes.sample_exec_states(slots);
                processes.kill_hung(slots);
                processes.maintain(p.ctx.board(), slots);
                p.php.forget_retired(processes.earlier_generation_running());
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
                a.name == b.name
                    && a.listen.address == b.listen.address
                    && a.workers == b.workers
                    && is_exec(a) == is_exec(b)
            });
        if !same_shape {
            // An exec pool's socket carries no accept timeout and fastpm's workers need one
            // (`pools::accept_timeout`); old and new workers share the socket during a reload.
            return Err(
                "pools, their addresses, worker kinds, or kind = \"exec\" changed: restart fastpm"
                    .into(),
            );
        }
        // Everything that can refuse is asked first, for every pool: a reload either happens
        // whole or not at all (never some pools replaced and the rest not).
        super::preflight::check(&new).map_err(|e| e.to_string())?;
        // A pool's user may have changed: its php socket directory follows (new workers bind
        // there). runtime_dir itself is the one this master started with (a restart moves it).
        for pool in new.pools.iter().filter(|p| runtime_dir::needs_pool_dir(p)) {
            runtime_dir::pool_dir(&self.config, pool).map_err(|e| e.to_string())?;
        }
        let mut plans = Vec::new();
        for (p, pool) in self.pools.iter().zip(&new.pools) {
            if !matches!(p.workers, Workers::Processes(_)) {
                plans.push(None);
                continue;
            }
            let (backlog, _) = config::effective_backlog(
                self.options.cli_backlog,
                self.options.listenq_env.as_deref(),
                pool.listen.backlog,
            )
            .map_err(|e| e.to_string())?;
            let capacity = (self.slot_counts[p.ctx.index] / 2) as u32;
            let mut pm = pm_settings(pool);
            if pm.max_children > capacity {
                tracing::warn!(pool = %pool.name, "max_children above {capacity} needs a restart; running {capacity}");
                pm.max_children = capacity;
            }
            let mut options = self.options.clone();
            options.config_text = Arc::new(text.clone());
            let mut spec = spawn_spec(&new, &p.ctx, &p.lock, &self.slot_counts, &options)
                .map_err(|e| e.to_string())?;
            spec.backlog = backlog;
            // The app as the new config chooses it (a shared php-cgi is started from it below,
            // as the pool's user the spec resolved): refused here, with everything else.
            let (choice, _) = apps::choose_for(&new, pool).map_err(|e| e.to_string())?;
            plans.push(Some((backlog, pm, spec, choice)));
        }
        // Then carried out. A failed listen() keeps the old backlog (said in the log); the
        // workers are replaced all the same.
        self.options.config_text = Arc::new(text);
        for (index, pool) in new.pools.iter().enumerate() {
            self.holder
                .reconfigure(index, pool.app.max_held as usize, pool.app.hold_timeout);
        }
        for ((p, pool), plan) in self.pools.iter_mut().zip(&new.pools).zip(plans) {
            let Workers::Processes(processes) = &mut p.workers else {
                tracing::warn!(pool = %pool.name, "thread workers keep their config until a restart");
                continue;
            };
            let Some((backlog, pm, mut spec, choice)) = plan else {
                continue;
            };
            // What status and the backlog advice read from now on.
            p.ctx
                .board()
                .set_limits(pm.max_children, pool.client_timeout);
            let current = current_backlog(&p.ctx);
            if backlog != current {
                match listen::relisten(&p.ctx.listener, backlog) {
                    Ok(()) => {
                        p.ctx
                            .board()
                            .listen_backlog
                            .store(u64::from(backlog), Relaxed);
                        tracing::info!(pool = %pool.name, "backlog {current} → {backlog}");
                    }
                    Err(e) => {
                        tracing::error!(pool = %pool.name, "listen() with backlog {backlog} failed ({e}); keeping {current}");
                        spec.backlog = current;
                    }
                }
            }
            // Before the new workers connect to it: a changed php-cgi gets a new shared parent.
            if let Err(e) = p.php.reload(
                &choice,
                pool,
                &self.config.global.runtime_dir,
                spec.credentials.as_ref(),
            ) {
                tracing::error!(pool = %pool.name, error = %e, "cannot start the new shared php-cgi");
            }
            processes.replace(spec, pm, self.scoreboard.slots(p.ctx.index));
        }
        self.config = new;
        Ok(())
    }

    /// Reopen the log files (logrotate renamed them). Only the master holds them: worker
    /// processes write through its relay, so none restarts (see `crate::logs`).
    pub fn handle_usr1(&self) {
        match crate::logs::reopen() {
            Some(done) if !done.reopened.is_empty() || !done.failed.is_empty() => {
                for e in &done.failed {
                    tracing::error!("SIGUSR1: {e}; still writing to the old file");
                }
                if !done.reopened.is_empty() {
                    tracing::info!("SIGUSR1: reopened {} log files", done.reopened.len());
                }
            }
            _ => tracing::info!("SIGUSR1: logs go to stderr; nothing to reopen"),
        }
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
        // Held requests first: each gets its timeout answer (not a cut connection), within a
        // bound that leaves the workers their share of the deadline.
        let within = deadline
            .saturating_duration_since(Instant::now())
            .min(HOLDER_STOP_MAX);
        let held = self.holder.held();
        self.runtime.block_on(self.holder.stop(within));
        if held > 0 {
            tracing::info!("{held} held requests answered as on their timeout");
        }
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
        // The workers are gone: what they wrote last is still in the relay pipe.
        crate::logs::finish(Instant::now() + Duration::from_secs(2));
        if let (true, Some(pid_file)) = (own_files, &self.config.global.pid_file) {
            let _ = std::fs::remove_file(pid_file);
        }
        self.runtime.shutdown_timeout(Duration::from_millis(200));
        tracing::info!("stopped");
        Ok(())
    }
}

/// Longest a stop waits for the holder to answer what it holds.
const HOLDER_STOP_MAX: Duration = Duration::from_secs(3);

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; the soft limit in force after.
fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE from {soft} to {hard}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

fn is_exec(pool: &crate::config::PoolConfig) -> bool {
    pool.app.kind == crate::config::AppKind::Exec
}

/// The name under which the master tells its worker processes its effective `runtime_dir`.
/// They read the config again after dropping privileges, and its default depends on the
/// effective uid (`/run/fastpm` for root only), so without it a worker of a root master would
/// look for its php-cgi socket directory somewhere else.
pub const WORKER_RUNTIME_DIR_ENV: &str = "FASTPM_RUNTIME_DIR";

/// Check (and create) `runtime_dir` and tell worker processes where it is. Call while the
/// process has one thread (it sets an environment variable).
fn prepare_runtime_dir(config: &Config) -> Result<(), MasterError> {
    runtime_dir::prepare(config)?;
    std::env::set_var(WORKER_RUNTIME_DIR_ENV, &config.global.runtime_dir);
    Ok(())
}

/// The pm of a process pool; an exec pool's programs are always `max_children` (`static`).
fn pm_settings(pool: &crate::config::PoolConfig) -> PmSettings {
    let mut pm = PmSettings::from_pool(pool);
    if pool.app.kind == crate::config::AppKind::Exec {
        pm.kind = crate::config::PmKind::Static;
    }
    pm
}

/// What to type to see a pool answer: a php pool needs a script that exists inside its
/// document root (hello.php of php-examples/ in the embedded default); `fastpm request` sends
/// SCRIPT_FILENAME equal to SCRIPT_NAME, which the pool resolves inside its document root.
fn try_hint(pool: &crate::config::PoolConfig) -> String {
    let address = &pool.listen.address;
    if pool.app.kind != crate::config::AppKind::Php {
        return format!("{address} /");
    }
    let script = ["hello.php", "index.php"]
        .into_iter()
        .find(|name| pool.app.document_root.join(name).is_file())
        .unwrap_or("index.php");
    format!("{address} /{script}")
}
