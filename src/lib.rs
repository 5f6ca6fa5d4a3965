//! fastpm — a FastCGI process manager that tells the truth about the listen backlog.
//!
//! The map (DESIGN.md §4), one concern per module:
//!
//! - [`config`]: the TOML schema, loading with file:line:column errors, the embedded default.
//! - [`listen`]: listen addresses, bind + backlog + the `somaxconn` clamp check, unix socket
//!   permissions, `allowed_clients`.
//! - [`probe`]: the kernel's view of a listening socket through `sock_diag` (queue depth,
//!   effective backlog, drops) and the sampler that records it on the scoreboard (and, each
//!   second, in the master's history).
//! - [`fastcgi`]: the protocol — records, name-value pairs, request assembly, response
//!   encoding — as pure parsers; the blocking connection driver; the client.
//! - [`loadgen`]: the `fastpm bench` engine, a closed-loop load generator that connects and
//!   gives up like nginx.
//! - [`scoreboard`]: the shared-memory counters and per-worker slots.
//! - [`front`]: per pool and process, the thread that accepts, reads whole requests with
//!   deadlines and parks idle kept connections, so only complete requests reach a worker.
//! - [`hold`]: held requests (§8): GRIP, the `longpoll` app, channels, brokers, the master's holder.
//! - [`worker`]: the accept lock and the executors that run complete requests.
//! - [`app`]: what runs a request (built-in `hello`, `echo`, `sleep`).
//! - [`status`]: one snapshot, rendered as text / JSON / OpenMetrics, served over FastCGI and
//!   the master's HTTP listener; the 15-minute history, the live dashboard at `/`, and
//!   `fastpm status` with its `--watch` terminal view.
//! - [`logs`]: the access log, error log and slow log (files the master owns and reopens on
//!   USR1; worker processes write through a pipe to it), and `log_limit`.
//! - [`master`]: the supervisor: starts pools and workers, the sampler, signals, shutdown.
//! - [`overload`]: queue-wait accounting (when did each connection arrive), its histogram,
//!   and the shedding policies, all pure.
//! - [`import_fpm`]: `fastpm import-fpm`, php-fpm's configuration read and converted to fastpm's.
//! - [`sys`]: the only place with `unsafe`.

pub mod app;
pub mod config;
pub mod fastcgi;
pub mod front;
pub mod hold;
pub mod import_fpm;
pub mod listen;
pub mod loadgen;
pub mod logs;
pub mod master;
pub mod overload;
pub mod probe;
pub mod scoreboard;
pub mod status;
pub mod sys;
pub mod worker;
