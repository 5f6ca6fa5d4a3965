//! Overload: how long each connection waited in the kernel accept queue, and what to do with
//! requests that waited too long (DESIGN.md §4 "Queue wait without client help", "Overload").
//!
//! - [`arrival`]: the sampler's ring of `(time, arrived)` samples in shared memory and the pure
//!   search "when did the k-th connection arrive".
//! - [`histogram`]: the fixed-bucket queue-wait histogram (shared memory) and its quantiles.
//! - [`policy`]: the pure shedding decisions (`deadline`, `codel`) and the shed answer.
//! - [`clock`]: the one clock every process of a pool agrees on.
//!
//! Nothing here makes a system call except [`clock::monotonic_us`]; the worker and the sampler
//! call these functions at their edges.

pub mod arrival;
pub mod clock;
pub mod histogram;
pub mod policy;

pub use arrival::{find_arrival, Arrival, ArrivalRing, Sample, RING_SAMPLES};
pub use clock::monotonic_us;
pub use histogram::{HistogramSnapshot, WaitHistogram, BUCKETS};
pub use policy::{codel, deadline, decide, CodelState, Decision};
