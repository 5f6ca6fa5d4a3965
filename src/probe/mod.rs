//! The kernel's view of a pool's listening socket: queue depth, effective backlog and drops
//! through `sock_diag` (`unix_diag`, `inet_diag`) or `TCP_INFO`, and the sampler that records
//! it on the scoreboard. A unix listener's queue is seen empty through epoll first
//! ([`readiness`]): `unix_diag`'s lookup costs in proportion to every unix socket there is.

pub mod diag;
pub mod inet_diag;
pub mod queue_probe;
pub mod readiness;
pub mod reading;
pub mod sampler;
pub mod tcp_info;
pub mod unix_diag;

pub use queue_probe::{socket_inode, ProbeMethod, QueueProbe};
pub use reading::{queue_is_full, QueueReading};
pub use sampler::{record_sample, spawn_sampler, spawn_sampler_with_history, SamplerHandle};
