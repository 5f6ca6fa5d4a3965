//! What all workers of one pool share, built once by the master.

use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::config::PoolConfig;
use crate::fastcgi::Limits;
use crate::listen::{ClientFilter, Listener};
use crate::scoreboard::{PoolBoard, Scoreboard, WorkerSlot};
use crate::status::recorder::PoolMetrics;
use crate::status::PoolInfo;

use super::lock::AcceptLock;

/// How long an executor's `TimedIo` waits for bytes from a client. Executors get complete
/// requests from the front (`crate::front`, which reads with whole-request deadlines), so
/// this bounds only what an app may still read from the connection itself.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a worker blocks writing a response to a client that does not read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The listener's `SO_RCVTIMEO` (the fronts accept without blocking; accepted TCP sockets
/// inherit it, so no code ever blocks in a plain read on them for long: see `worker::io`).
pub const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// One pool as its workers see it.
pub struct PoolContext {
    /// Position of the pool on the scoreboard.
    pub index: usize,
    pub config: PoolConfig,
    /// The pool's listening socket (non-blocking; fronts wait for it with epoll).
    pub listener: Listener,
    pub lock: AcceptLock,
    /// `allowed_clients` for TCP pools.
    pub clients: ClientFilter,
    pub limits: Limits,
    pub scoreboard: Arc<Scoreboard>,
    /// What the pool's workers, fronts and master count, through the `metrics` facade: handles
    /// registered once here whose cells are this pool's on `scoreboard`.
    pub metrics: PoolMetrics,
    /// Static facts for the status page (name, pm, address, backlog, somaxconn).
    pub info: PoolInfo,
    /// Set by the master (thread workers) or by SIGTERM/SIGINT (a worker process) to ask
    /// workers to finish: they drain what is queued, then exit. An `Arc` so a signal handler
    /// can own a reference.
    pub stopping: Arc<AtomicBool>,
    /// Set by the master or by SIGQUIT for an immediate stop: workers exit without draining.
    pub quitting: Arc<AtomicBool>,
    /// Set by SIGUSR2 in a worker process (the master's reload retiring an old generation):
    /// leave as at `max_requests` — accept nothing new, close kept connections gently (after
    /// their next answer, or once idle), then exit. Closing them all at once is what costs a
    /// POST behind nginx's keep-alive cache.
    pub retiring: Arc<AtomicBool>,
    /// The workers' end of the pool's SEQPACKET pair with the master's holder (DESIGN §8):
    /// held requests go out on it, kept connections come back on it. `None` only where no
    /// master runs (tests of a bare worker); then a request that asks to be held gets a 503.
    pub hold_link: Option<OwnedFd>,
}

impl PoolContext {
    /// What a pool's workers share, the same for thread workers (built by the master) and for a
    /// worker process (built after exec from inherited descriptors).
    pub fn new(
        index: usize,
        config: PoolConfig,
        listener: Listener,
        lock: AcceptLock,
        scoreboard: Arc<Scoreboard>,
        info: PoolInfo,
    ) -> Self {
        let clients = ClientFilter::new(config.listen.allowed_clients.clone());
        // php-fpm answers GET_VALUES with max_children for both.
        let limits = Limits {
            max_params_bytes: usize::try_from(config.max_params).unwrap_or(usize::MAX),
            max_body_bytes: usize::try_from(config.max_body).unwrap_or(usize::MAX),
            max_conns: config.max_children,
            max_reqs: config.max_children,
        };
        Self {
            index,
            config,
            listener,
            lock,
            clients,
            limits,
            metrics: PoolMetrics::register(&scoreboard, index),
            scoreboard,
            info,
            stopping: Arc::new(AtomicBool::new(false)),
            quitting: Arc::new(AtomicBool::new(false)),
            retiring: Arc::new(AtomicBool::new(false)),
            hold_link: None,
        }
    }

    pub fn board(&self) -> &PoolBoard {
        self.scoreboard.pool(self.index)
    }

    pub fn slot(&self, worker: usize) -> &WorkerSlot {
        &self.scoreboard.slots(self.index)[worker]
    }
}
