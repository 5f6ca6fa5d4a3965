//! Workers: wait for the accept lock, accept one connection, serve it, repeat.
//!
//! - [`context`]: what every worker of a pool shares (listener, scoreboard, limits, stop flag).
//! - [`lock`]: the accept lock, held only around wait + accept.
//! - [`io`]: reads and writes with a deadline, without per-connection `setsockopt`.
//! - [`request`]: one request's path through the worker: scoreboard, status/ping, app.
//! - [`serve`]: the loop itself.
//!
//! Thread workers run this code on threads of the master; worker processes (a later issue) run
//! the same loop after re-executing the binary.

pub mod context;
pub mod io;
pub mod lock;
pub mod process;
pub mod request;
pub mod serve;
pub mod watchdog;

pub use context::PoolContext;
pub use serve::{run_worker, spawn_thread_workers, WorkerThreads};
