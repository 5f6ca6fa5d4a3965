//! What all workers of one pool share, built once by the master.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::config::PoolConfig;
use crate::fastcgi::Limits;
use crate::listen::{ClientFilter, Listener};
use crate::scoreboard::{PoolBoard, Scoreboard, WorkerSlot};
use crate::status::PoolInfo;

use super::lock::AcceptLock;

/// How long a worker waits for the next bytes of a request (or of the next request on a
/// keep-conn connection) before it closes that connection. One worker serves one connection at a
/// time, so a client that sends half a request and stalls must not hold it forever.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a worker blocks writing a response to a client that does not read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a waiting worker looks at the stop flag. Also the listener's `SO_RCVTIMEO`, so
/// accepted TCP sockets inherit it: worker code never blocks in a plain read on them (see
/// `worker::io`).
pub const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// One pool as its workers see it.
pub struct PoolContext {
    /// Position of the pool on the scoreboard.
    pub index: usize,
    pub config: PoolConfig,
    /// The pool's listening socket (blocking, with an accept timeout of [`STOP_CHECK_INTERVAL`]).
    pub listener: Listener,
    pub lock: AcceptLock,
    /// `allowed_clients` for TCP pools.
    pub clients: ClientFilter,
    pub limits: Limits,
    pub scoreboard: Arc<Scoreboard>,
    /// Static facts for the status page (name, pm, address, backlog, somaxconn).
    pub info: PoolInfo,
    /// Set by the master to ask workers to finish: they drain what is queued, then exit.
    pub stopping: AtomicBool,
    /// Set by the master for an immediate stop: workers exit without draining.
    pub quitting: AtomicBool,
}

impl PoolContext {
    pub fn board(&self) -> &PoolBoard {
        self.scoreboard.pool(self.index)
    }

    pub fn slot(&self, worker: usize) -> &WorkerSlot {
        &self.scoreboard.slots(self.index)[worker]
    }
}
