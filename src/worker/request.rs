//! One request's path through a worker: count it, mark the scoreboard slot, route it to the
//! status page, the ping answer or the app, then record how long it took.
//!
//! Before an app request runs, the overload checks (DESIGN.md §4 "Overload"): a client that
//! has already gone is not served (`abandoned requests`), and the pool's policy may shed a
//! request that waited too long in the kernel queue (`shed requests`: 503 + `Retry-After` +
//! `FCGI_OVERLOADED`, without touching the app). The status and ping answers are never shed:
//! they are how an operator sees the overload.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};

use super::context::PoolContext;
use crate::app::App;
use crate::fastcgi::{Handler, ProtocolStatus, Request, ResponseWriter};
use crate::overload::policy::SHED_RESPONSE;
use crate::overload::{decide, monotonic_us, CodelState, Decision};
use crate::scoreboard::{WorkerSlot, WorkerState};
use crate::status::{self, PoolSnapshot, Query};

/// php-fpm's never-cache headers, as CGI header lines, for the status and ping answers.
fn no_cache_lines() -> String {
    status::NO_CACHE_HEADERS
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect()
}

/// Where a request goes, decided from its `SCRIPT_NAME` alone (as php-fpm does).
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Status,
    Ping,
    App,
}

/// Pure routing: the pool's `status_path` and `ping_path` win over the app.
pub fn route(script_name: &[u8], status_path: Option<&str>, ping_path: Option<&str>) -> Route {
    if status_path.is_some_and(|p| p.as_bytes() == script_name) {
        Route::Status
    } else if ping_path.is_some_and(|p| p.as_bytes() == script_name) {
        Route::Ping
    } else {
        Route::App
    }
}

/// The worker's FastCGI handler.
pub struct RequestHandler<'a> {
    ctx: &'a PoolContext,
    slot: &'a WorkerSlot,
    app: Box<dyn App>,
    /// The whole ping response, built once.
    ping: Vec<u8>,
}

impl<'a> RequestHandler<'a> {
    pub fn new(ctx: &'a PoolContext, slot: &'a WorkerSlot, app: Box<dyn App>) -> Self {
        let ping = format!(
            "Content-Type: text/plain\r\n{}\r\n{}",
            no_cache_lines(),
            ctx.config.ping_response
        )
        .into_bytes();
        Self {
            ctx,
            slot,
            app,
            ping,
        }
    }

    pub fn slot(&self) -> &'a WorkerSlot {
        self.slot
    }

    fn status(&self, request: &Request, out: &mut ResponseWriter<'_>) -> std::io::Result<u32> {
        let query = Query::parse(request.params.get_str("QUERY_STRING").unwrap_or(""));
        let snapshot = PoolSnapshot::collect(
            &self.ctx.info,
            self.ctx.board(),
            self.ctx.scoreboard.slots(self.ctx.index),
            query.full,
        );
        let rendered = status::render_pool(&snapshot, &query);
        let head = format!(
            "Content-Type: {}\r\n{}\r\n",
            rendered.content_type,
            no_cache_lines()
        );
        out.stdout(head.as_bytes())?;
        out.stdout(rendered.body.as_bytes())?;
        Ok(0)
    }
}

/// Whether the client behind `fd` has gone: it closed (or shut down its sending side, which a
/// FastCGI client does only when it gives up — the end of a request is the empty STDIN record,
/// never a half-close) or the connection broke. One non-blocking `recv(MSG_PEEK)` once the
/// request is fully read: 0 bytes = end of stream, the client is gone; `EAGAIN` = still there,
/// nothing more sent; bytes = still there (a keep-conn client's next request); a reset =
/// gone. (Not `poll(POLLRDHUP)`: nix cannot report that bit back.)
pub fn client_gone(fd: BorrowedFd<'_>) -> bool {
    let mut byte = [0u8; 1];
    match recv(
        fd.as_raw_fd(),
        &mut byte,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => true,
        Ok(_) => false,
        Err(Errno::ECONNRESET | Errno::EPIPE | Errno::ENOTCONN) => true,
        // EAGAIN: connected and quiet. EINTR and the like: assume connected (the app will find
        // out when it writes).
        Err(_) => false,
    }
}

/// What the overload checks decided for an app request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Run,
    /// The client has gone: skip the work.
    Abandoned,
    /// The policy refused it.
    Shed,
}

/// Answer a shed request: 503 + `Retry-After`, and END_REQUEST with `FCGI_OVERLOADED`.
fn shed(out: &mut ResponseWriter<'_>) -> std::io::Result<u32> {
    out.set_protocol_status(ProtocolStatus::Overloaded);
    out.stdout(SHED_RESPONSE)?;
    Ok(0)
}

/// One request's connection as the handler serves it: the accepted socket (to check the client
/// is still there) and how long the connection waited in the kernel queue (its first request
/// only; later requests on a keep-conn connection did not wait in the queue).
pub struct Connection<'h, 'a, 's> {
    handler: &'h mut RequestHandler<'a>,
    socket: BorrowedFd<'s>,
    queue_wait: Option<Duration>,
}

impl<'h, 'a, 's> Connection<'h, 'a, 's> {
    pub fn new(
        handler: &'h mut RequestHandler<'a>,
        socket: &'s impl AsFd,
        queue_wait_us: Option<u64>,
    ) -> Self {
        Self {
            handler,
            socket: socket.as_fd(),
            queue_wait: queue_wait_us.map(Duration::from_micros),
        }
    }
}

impl Handler for Connection<'_, '_, '_> {
    fn handle(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> std::io::Result<u32> {
        let wait = self.queue_wait.take();
        self.handler.handle_request(request, out, self.socket, wait)
    }
}

impl RequestHandler<'_> {
    /// Abandoned, shed, or run? Counts what it decides.
    fn overload_check(&self, socket: BorrowedFd<'_>, queue_wait: Option<Duration>) -> Verdict {
        let board = self.ctx.board();
        if crate::overload::policy::ask_if_client_gone(queue_wait) && client_gone(socket) {
            self.ctx.metrics.abandoned_requests.increment(1);
            return Verdict::Abandoned;
        }
        let state = CodelState::from_raw(board.codel_state.load(Relaxed));
        // Arrived by the sampler's latest count, minus taken off the queue: still waiting.
        // (Up to one sampling interval stale: it may miss the newest arrivals, never invent.)
        let queued_behind = board
            .arrivals
            .newest_arrived()
            .saturating_sub(board.accept_seq.load(Relaxed));
        let (decision, new_state) = decide(
            &self.ctx.config.overload,
            monotonic_us(),
            queue_wait,
            queued_behind,
            state,
        );
        if new_state != state {
            // Workers race here harmlessly: each writes a state derived from a recent one.
            board.codel_state.store(new_state.to_raw(), Relaxed);
        }
        match decision {
            Decision::Run => Verdict::Run,
            Decision::Shed => {
                self.ctx.metrics.shed_requests.increment(1);
                Verdict::Shed
            }
        }
    }

    /// Serve one request of a connection whose socket is `socket` and whose queue wait (for
    /// its first request) is `queue_wait`.
    fn handle_request(
        &mut self,
        request: &Request,
        out: &mut ResponseWriter<'_>,
        socket: BorrowedFd<'_>,
        queue_wait: Option<Duration>,
    ) -> std::io::Result<u32> {
        let started = Instant::now();
        let clock = crate::logs::RequestClock::start(self.ctx.index);
        let config = &self.ctx.config;
        self.ctx.metrics.accepted_conn.increment(1);
        let script_name = request.params.get("SCRIPT_NAME").unwrap_or(b"");
        let uri = request.params.get("REQUEST_URI").unwrap_or(script_name);
        super::watchdog::request_started(request.request_id);
        self.slot.begin_request(
            request.params.get("REQUEST_METHOD").unwrap_or(b"-"),
            uri,
            request.params.get("SCRIPT_FILENAME").unwrap_or(b"-"),
        );
        // Whether the app ran it: then its time is the pool's service time (status::advice).
        let mut app_ran = false;
        let result = match route(
            script_name,
            config.status_path.as_deref(),
            config.ping_path.as_deref(),
        ) {
            Route::Status => self.status(request, out),
            Route::Ping => out.stdout(&self.ping).map(|_| 0),
            Route::App => match self.overload_check(socket, queue_wait) {
                Verdict::Run => {
                    app_ran = true;
                    self.app.handle(request, out)
                }
                // Nobody to answer: the END_REQUEST the driver writes fails quietly.
                Verdict::Abandoned => Ok(0),
                Verdict::Shed => shed(out),
            },
        };
        self.slot.set_state(WorkerState::Finishing);
        self.slot.end_request();
        let done = crate::logs::Finished {
            pool_index: self.ctx.index,
            pool: &config.name,
            params: &request.params,
            head: out.response_head(),
            queue_wait,
            took: started.elapsed(),
        };
        if app_ran {
            self.ctx.metrics.request_duration.record(done.took);
        }
        if !config.slow_request.is_zero() && done.took > config.slow_request {
            self.ctx.metrics.slow_requests.increment(1);
            crate::logs::slow_request(&done);
        }
        crate::logs::access(&clock, &done);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn client_gone_only_after_the_peer_closed() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        assert!(!client_gone(ours.as_fd()), "connected, quiet");
        theirs.write_all(b"next request").unwrap();
        assert!(!client_gone(ours.as_fd()), "connected, more to read");
        drop(theirs);
        // Unread bytes are still there: peeking finds them first. A fully read request
        // leaves none, so read them as the connection driver would have.
        let mut buf = [0u8; 64];
        let _ = std::io::Read::read(&mut &ours, &mut buf).unwrap();
        assert!(client_gone(ours.as_fd()), "closed");
    }

    #[test]
    fn routes_by_script_name() {
        /// (script name, status path, ping path, expected route)
        type Row<'a> = (&'a [u8], Option<&'a str>, Option<&'a str>, Route);
        let table: &[Row] = &[
            (b"/status", Some("/status"), Some("/ping"), Route::Status),
            (b"/ping", Some("/status"), Some("/ping"), Route::Ping),
            (b"/index.php", Some("/status"), Some("/ping"), Route::App),
            (b"/status", None, Some("/ping"), Route::App),
            (b"/ping", Some("/status"), None, Route::App),
            (b"/status/", Some("/status"), None, Route::App),
            (b"", Some("/status"), Some("/ping"), Route::App),
        ];
        for (script, status, ping, want) in table {
            assert_eq!(&route(script, *status, *ping), want, "{script:?}");
        }
    }
}
