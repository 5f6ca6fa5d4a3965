//! Workers: executors run the complete requests their front (`crate::front`) hands over.
//!
//! - [`context`]: what every worker of a pool shares (listener, scoreboard, limits, stop flag).
//! - [`lock`]: the accept lock, held by a front around one non-blocking accept.
//! - [`io`]: reads and writes with a deadline, without per-connection `setsockopt`.
//! - [`request`]: one request's path through the worker: scoreboard, status/ping, app.
//! - [`executor`]: runs complete requests; accepts while free, gives the front the rest.
//! - [`serve`]: how a pool's front and executors are put together; accept errors.
//! - [`php_parent`]: an embedded-PHP pool's php parent, which starts PHP once and forks the
//!   pool's worker processes from it.
//!
//! Thread workers run this code on threads of the master; worker processes run the same after
//! re-executing the binary.

pub mod context;
pub mod executor;
pub mod io;
pub mod lock;
pub mod php_parent;
pub mod process;
pub mod request;
pub mod serve;
pub mod watchdog;

pub use context::PoolContext;
pub use serve::{run_worker, spawn_thread_workers, WorkerThreads};
