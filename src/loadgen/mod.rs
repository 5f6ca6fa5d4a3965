//! The `fastpm bench` engine: a closed-loop FastCGI load generator (each client sends its next
//! request as soon as the previous one ended), bounded by a duration and/or a request count,
//! that connects the way nginx does and gives up the way nginx does.
//!
//! - Connect: one **non-blocking** `connect()` per connection. On a unix socket whose accept
//!   queue is full the kernel answers `EAGAIN` at once; that is an outcome (nginx's 502), not a
//!   retry — unlike `fastpm request`, which retries like mod_cgid. On TCP a full queue drops
//!   the SYN and the connect times out (nginx's 504).
//! - Give up: `--timeout-ms` bounds connect + request + response, like nginx's
//!   `fastcgi_connect_timeout` / `fastcgi_read_timeout`; on expiry the client closes the
//!   connection — from the server's side, an abandoned request.
//!
//! [`outcome`] classifies what happened (pure), [`summary`] tallies and renders the JSON,
//! [`timeline`] buckets outcomes over time (pure), [`engine`] runs the client threads.

pub mod engine;
pub mod outcome;
pub mod summary;
pub mod timeline;

pub use engine::{run, BenchPlan, PlanError};
pub use outcome::{http_status, Outcome};
pub use summary::{LatencyMs, Summary, Tally};
pub use timeline::TimelineBucket;
