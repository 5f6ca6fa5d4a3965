//! Held requests (DESIGN.md §8): FastCGI requests whose answer waits for a message on a
//! channel — long-polling and COMET — at about a kilobyte of the master's memory each (PSS,
//! measured by tests/held_scale.rs and benches/held) and no worker.
//!
//! Where a held request lives, and why: **in the master**, on its tokio runtime. A worker
//! (process or thread) that finds a request is to be held — a relayed app answered with
//! `Grip-Hold`, or a `longpoll` pool's `sub`/`pub` path — sends the connection's descriptor
//! (SCM_RIGHTS) and what the answer needs ([`wire`]) to the master and goes back to work. The
//! master answers on the same connection when a message arrives or the hold times out, then
//! gives a kept connection (FCGI_KEEP_CONN) back to a worker of its pool the same way, where
//! the front parks it idle. Reasons for the master rather than each worker's front:
//! - one registry of channels and one broker connection (memory, or one Redis client) per
//!   instance, not one per worker process: a publish is one lookup, not a fan-out to N
//!   processes;
//! - held requests outlive workers: `max_requests`, `HUP` and a crashed worker replace workers
//!   without touching what is held (a front would have to linger, or pass them on anyway);
//! - TERM answers everything held with its timeout response before the master leaves; status
//!   reads the counters where they change.
//!
//! The cost is one `sendmsg` per held request on the way in and one on the way back (kept
//! connections only); nothing for requests that are not held.
//!
//! The pieces, one transformation each:
//! - [`message`]: what is published and what a held request is answered with.
//! - [`grip`]: a relayed app's CGI header block → hold instructions (`Grip-*` stripped).
//! - [`epcp`]: Pushpin's publish JSON → publications, or a one-line 400 reason.
//! - [`longpoll`]: the built-in `longpoll` app's paths → sub/pub operations; answers as CGI.
//! - [`channels`]: the instance's waiting subscribers per channel (local delivery).
//! - [`broker`]: ids, history and fan-out across instances: memory or Redis.
//! - [`wire`]: the worker → master and master → worker datagrams.
//! - [`holder`]: the master's side of the pools' links: starts held requests, gives back kept
//!   connections, owns the broker and the graceful stop.
//! - [`held`]: one held request's task, from subscribe to answer.
//! - [`publisher`]: the master's `POST /publish/` (EPCP) through the holder.

pub mod broker;
pub mod channels;
pub mod epcp;
pub mod grip;
pub mod held;
pub mod holder;
pub mod longpoll;
pub mod memory;
pub mod message;
pub mod publisher;
pub mod redis;
pub mod wire;
