//! The front: the part of a worker process (or of the master, for a thread pool) that owns
//! connections while they hold no complete request, so that only complete requests reach an
//! executor (the code that runs the app, `worker::serve`). DESIGN.md §8, "The front and the
//! kernel queue".
//!
//! One front per pool and per process: in each worker process one front thread beside the
//! executor (the process's main thread, which built the app); for a thread pool one front
//! thread in the master for the pool's N executor threads. The front
//!
//! 1. accepts from the pool's listening socket without blocking (the socket is shared by every
//!    worker process of the pool; the accept lock, if any, is held around one non-blocking
//!    `accept()` only);
//! 2. reads each connection with a deadline for the whole request, counted from accept (or
//!    from a kept connection's next first byte) — [`policy::PARAMS_DEADLINE`] for the params,
//!    [`policy::REQUEST_DEADLINE`] for params and body — not a timeout that restarts on every
//!    byte, so a client dripping bytes is closed all the same; management records
//!    (GET_VALUES…) are answered here by the same [`crate::fastcgi::Assembler`] the blocking
//!    driver uses;
//! 3. hands a complete request with its connection (and any bytes read after it) to a free
//!    executor ([`handoff`]), which runs it exactly as before and writes the response with
//!    `TimedIo`;
//! 4. takes kept connections (FCGI_KEEP_CONN) back after the response and parks them idle: no
//!    worker is held, so nothing needs closing for a queued connection — the close that raced
//!    nginx's next request on the connection (a 502) is gone;
//! 5. follows §8's rule ([`policy::may_accept`]): connections being read or idle do not stop
//!    it accepting, up to [`policy::MAX_FRONT_CONNECTIONS`]; a complete request waiting for an
//!    executor does, and so does every executor being busy — the backlog queues in the kernel,
//!    where `listen queue`, drops and queue wait see it, and where another worker process with
//!    a free executor takes it;
//! 6. on TERM drains (accepts until the queue is empty; requests being read may finish; idle
//!    and silent connections close), on QUIT, reload or `max_requests` closes what it holds at
//!    once ([`policy::close_on_stop`]); requests already complete are served either way;
//! 7. publishes `reading connections` and `idle kept connections` in its scoreboard slot.
//!
//! Why epoll (through nix's safe wrappers) and not a tokio runtime: the front decides *when*
//! to accept (its listener goes in and out of the epoll set), reads a new connection once
//! right after `accept()` without registering it (nginx sends the whole request at once, so
//! the common case never touches epoll), and re-arms one-shot registrations instead of
//! paying a registration and a deregistration per connection. Executors are blocking threads
//! either way; a reactor and a task system would add cost and nothing this loop needs.
//!
//! Held requests (§8, a later issue) fit as a third [`policy::Phase`]: `Held { channel,
//! deadline }`. The executor's answer carries GRIP headers; instead of writing it, the
//! executor gives the connection back with the request id and the response to use on
//! timeout (as kept connections come back, through [`handoff::Handoff::finished`]). A
//! message for the channel reaches the front the same way (a list plus the eventfd); the
//! front writes the records non-blocking (a small write buffer per held connection, armed for
//! EPOLLOUT when the socket is full) and the connection becomes idle or closes. The deadline
//! sweep already gives the timeout.

pub mod conn;
pub mod event_loop;
pub mod handoff;
pub mod intake;
pub mod policy;

pub use conn::FrontConn;
pub use event_loop::run_front;
pub use handoff::{Handoff, Job};
