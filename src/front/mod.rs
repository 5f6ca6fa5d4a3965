//! The front: the part of a worker process (or of the master, for a thread pool) that owns
//! connections while they hold no complete request, so that a slow or silent client costs a
//! few hundred bytes and a descriptor, never an executor (the code that runs the app,
//! `worker::executor`). DESIGN.md §8, "The front and the kernel queue".
//!
//! One front per pool and per process: in each worker process one front thread beside the
//! executor (the process's main thread, which built the app); for a thread pool one front
//! thread in the master for the pool's N executor threads.
//!
//! Who does what:
//! 1. A *free executor* accepts (the socket is shared by every worker process of the pool; the
//!    accept lock, if any, is held around one non-blocking `accept()`), reads once, and runs a
//!    complete request itself — nginx sends the whole request right after connecting, so the
//!    common case costs one `epoll_wait` more than a blocking `accept()` and no thread switch
//!    (the first version routed every request through the front thread and lost a third of
//!    the ping bench). A connection whose request is not all there goes to the front.
//! 2. The front reads it with a deadline for the whole request, counted from accept (or from
//!    a kept connection's next first byte) — [`policy::PARAMS_DEADLINE`] for the params,
//!    [`policy::REQUEST_DEADLINE`] for params and body — not a timeout that restarts on every
//!    byte, so a client dripping bytes is closed all the same. Management records
//!    (GET_VALUES…) are answered by the same [`crate::fastcgi::Assembler`] the blocking driver
//!    uses ([`intake::look`], shared with the executors).
//! 3. A request the front completes is queued ([`handoff`]); a free executor runs it as any
//!    other (`RequestHandler`, overload checks, scoreboard, watchdog), writing with `TimedIo`,
//!    alternating with the kernel's queue when both wait ([`policy::first_look`]).
//! 4. A kept connection (FCGI_KEEP_CONN) goes back to the front after its response and waits
//!    there idle: no worker is held, so nothing closes it for a queued connection — the close
//!    that raced nginx's next request on it (a 502) is gone.
//! 5. DESIGN §8's rule: connections being read or idle do not stop the pool accepting, up to
//!    [`policy::MAX_FRONT_CONNECTIONS`] per front ([`policy::may_accept`]); every executor
//!    being busy does — the backlog queues in the kernel, where `listen queue`, drops and queue
//!    wait see it, and where another worker process with a free executor takes it. A new
//!    connection leaves the kernel queue only when an executor is free to run it.
//! 6. TERM drains (executors accept until the queue is empty; requests being read may finish
//!    within their deadline; idle and silent connections close); QUIT, reload (old workers get
//!    QUIT) and `max_requests` close what the front holds at once
//!    ([`policy::close_on_stop`]). Requests already complete are served either way.
//! 7. The front publishes `reading connections` and `idle kept connections` in its scoreboard
//!    slot (a thread pool's: slot 0); the handoff publishes `queued requests` (complete requests
//!    waiting for an executor) in the same slot on every push and take. The status snapshot
//!    sums them per pool. Queue wait covers fastpm's queue too, for every request.
//!
//! Why epoll (through nix's safe wrappers) and not a tokio runtime: executors are blocking
//! threads that must also wait for the listener; the front needs a handful of descriptors in
//! one-shot mode and a timer tick. A reactor, wakers and a task system would add cost and
//! nothing this needs, and a worker process stays free of a runtime (DESIGN §7: re-exec, never
//! fork, after a runtime exists).
//!
//! Held requests (§8, a later issue) fit as a third [`policy::Phase`]: `Held { channel,
//! deadline }`. An executor whose app answered with `Grip-Hold` gives the connection to the
//! front (as it gives kept ones, [`handoff::Handoff::give`]) with the request id and the
//! response to send on timeout; a published message reaches the front the same way (a list
//! plus the eventfd); the front writes the records without blocking (a small write buffer per
//! held connection, armed for EPOLLOUT while the socket is full), and the connection then
//! becomes idle or closes. The deadline sweep already gives the timeout.

pub mod conn;
pub mod event_loop;
pub mod handoff;
pub mod intake;
pub mod pass;
pub mod policy;

pub use conn::FrontConn;
pub use event_loop::{front_epoll, run_front};
pub use handoff::{Handoff, Job};
pub use intake::{admit, look, Look};
