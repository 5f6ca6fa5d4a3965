//! Workers: executors run the complete requests their front (`crate::front`) hands over.
//!
//! - [`context`]: what every worker of a pool shares (listener, scoreboard, limits, stop flag).
//! - [`lock`]: the accept lock, held by a front around one non-blocking accept.
//! - [`io`]: reads and writes with a deadline, without per-connection `setsockopt`.
//! - [`request`]: one request's path through the worker: scoreboard, status/ping, app.
//! - [`serve`]: executors, and how a pool's front and executors are put together.
//!
//! Thread workers run this code on threads of the master; worker processes run the same after
//! re-executing the binary.

pub mod context;
pub mod io;
pub mod lock;
pub mod process;
pub mod request;
pub mod serve;
pub mod watchdog;

pub use context::PoolContext;
pub use serve::{run_worker, spawn_thread_workers, WorkerThreads};
