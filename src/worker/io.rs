//! Reading and writing a client connection with a deadline per wait, at no cost when no wait is
//! needed.
//!
//! Why not `SO_RCVTIMEO`/`SO_SNDTIMEO`: that is two `setsockopt` calls on every accepted
//! connection, about a quarter of the syscalls of a small request. Instead every read and write
//! is tried without blocking (`MSG_DONTWAIT`); only when the kernel has nothing to give (or no
//! room to take) does the worker `poll()` for at most the timeout. nginx sends the whole request
//! right after connecting, so the common case never polls.
//!
//! A kept connection (FCGI_KEEP_CONN) that sits idle between requests holds its worker. When
//! every worker is held like that, new connections wait in the listen queue until some idle
//! one times out (10 s) — with nginx's `keepalive` larger than the pool, that is every burst of
//! concurrency. So while idle (see `Handler::between_requests`) the wait also watches the
//! listening socket, and a connection still queued after [`YIELD_GRACE`] makes the worker give
//! up its idle one (read returns end of file) and go back to accept(). Nothing is lost: no
//! request was in progress, and nginx drops a cached connection that closes, or retries a
//! request that raced the close on a fresh connection.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};

use crate::scoreboard::WorkerSlot;

/// How long a connection must stay queued before an idle kept connection gives way to it. A
/// free worker takes a new connection within microseconds; only when none is free does it
/// stay queued this long.
pub const YIELD_GRACE: Duration = Duration::from_millis(5);

/// A connection's descriptor with the worker's read and write timeouts.
pub struct TimedIo<'a> {
    fd: BorrowedFd<'a>,
    read_timeout: Duration,
    write_timeout: Duration,
    /// Give way to connections queued here while idle (see the module comment).
    yield_to: Option<YieldTo<'a>>,
    /// The worker's slot, beaten whenever a wait ends with the client ready: a long upload
    /// or download that keeps moving is alive, not hung (the master's `IO_SILENCE`). Only
    /// waits beat, so a request that needs none costs nothing more.
    alive: Option<&'a WorkerSlot>,
}

/// The listening socket an idle kept connection gives way to, and the flag saying it is idle.
#[derive(Clone, Copy)]
pub struct YieldTo<'a> {
    pub listener: BorrowedFd<'a>,
    /// Set by the handler's `between_requests`, cleared when bytes arrive.
    pub idle: &'a Cell<bool>,
    /// Set when the connection was given up: the caller counts it.
    pub yielded: &'a Cell<bool>,
    /// Asked at least every [`IDLE_STOP_CHECK`] while idle: `true` gives the connection up
    /// (the worker is stopping, for TERM, QUIT or a reload). Idle, nothing is lost.
    pub give_up: &'a dyn Fn() -> bool,
}

/// How often an idle kept connection's wait looks at [`YieldTo::give_up`]: a stop or reload
/// reaches a worker held by an idle kept connection within this time, not at the 10 s read
/// timeout.
pub const IDLE_STOP_CHECK: Duration = Duration::from_millis(200);

impl<'a> TimedIo<'a> {
    pub fn new(stream: &'a impl AsFd, read_timeout: Duration, write_timeout: Duration) -> Self {
        Self {
            fd: stream.as_fd(),
            read_timeout,
            write_timeout,
            yield_to: None,
            alive: None,
        }
    }

    /// Beat `slot`'s heartbeat whenever a wait for the client ends in progress.
    pub fn beating(mut self, slot: &'a WorkerSlot) -> Self {
        self.alive = Some(slot);
        self
    }

    /// Let this connection give way to queued ones while it is idle.
    pub fn yielding_to(mut self, yield_to: YieldTo<'a>) -> Self {
        self.yield_to = Some(yield_to);
        self
    }

    /// Wait for the idle connection's next bytes, or for a queued connection that no free worker
    /// took within [`YIELD_GRACE`]. `Ok(true)`: readable; `Ok(false)`: give the connection up.
    fn wait_idle(&self, listener: BorrowedFd<'_>, give_up: &dyn Fn() -> bool) -> io::Result<bool> {
        let deadline = Instant::now() + self.read_timeout;
        loop {
            if give_up() {
                return Ok(false);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [
                PollFd::new(self.fd, PollFlags::POLLIN),
                PollFd::new(listener, PollFlags::POLLIN),
            ];
            match poll(
                &mut fds,
                PollTimeout::try_from(left.min(IDLE_STOP_CHECK)).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(0) if !left.is_zero() => continue,
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no next request on the kept connection for {} ms",
                            self.read_timeout.as_millis()
                        ),
                    ))
                }
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            if ready(&fds[0]) {
                return Ok(true);
            }
            if !ready(&fds[1]) {
                continue;
            }
            // A connection is queued: give a free worker the grace to take it (our own next
            // request may come meanwhile), then look again.
            match self.wait(PollFlags::POLLIN, YIELD_GRACE, "reading") {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(e) => return Err(e),
            }
            let mut queued = [PollFd::new(listener, PollFlags::POLLIN)];
            if matches!(poll(&mut queued, PollTimeout::ZERO), Ok(n) if n > 0) {
                return Ok(false);
            }
        }
    }

    /// Wait until the socket is ready for `events`, or fail with `TimedOut`.
    fn wait(&self, events: PollFlags, timeout: Duration, what: &str) -> io::Result<()> {
        let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.fd, events)];
        loop {
            match poll(&mut fds, ms) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no progress {what} for {} ms", timeout.as_millis()),
                    ))
                }
                Ok(_) => {
                    if let Some(slot) = self.alive {
                        slot.beat();
                    }
                    return Ok(());
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Read for TimedIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => {
                    if let Some(y) = self.yield_to {
                        y.idle.set(false);
                    }
                    return Ok(n);
                }
                Err(Errno::EAGAIN) => match self.yield_to {
                    Some(y) if y.idle.get() => {
                        if !self.wait_idle(y.listener, y.give_up)? {
                            y.idle.set(false);
                            y.yielded.set(true);
                            return Ok(0);
                        }
                    }
                    _ => self.wait(PollFlags::POLLIN, self.read_timeout, "reading")?,
                },
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Write for TimedIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !super::watchdog::may_write() {
            return Err(io::Error::other(
                "request_timeout: the watchdog answered this request",
            ));
        }
        loop {
            // MSG_NOSIGNAL: a client that left gives EPIPE, not a signal.
            match send(
                self.fd.as_raw_fd(),
                buf,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => return Ok(n),
                Err(Errno::EAGAIN) => {
                    self.wait(PollFlags::POLLOUT, self.write_timeout, "writing")?
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn reads_what_is_there_and_times_out_when_nothing_comes() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"hello").unwrap();
        let mut io = TimedIo::new(&b, Duration::from_millis(50), Duration::from_millis(50));
        let mut buf = [0u8; 16];
        assert_eq!(io.read(&mut buf).unwrap(), 5);
        let started = std::time::Instant::now();
        let err = io.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(45));
        drop(a);
        assert_eq!(io.read(&mut buf).unwrap(), 0, "EOF after the peer closes");
    }

    /// A listening socket with one connection waiting in its queue (never accepted).
    fn listener_with_a_queued_connection(
        dir: &std::path::Path,
    ) -> (std::os::unix::net::UnixListener, UnixStream) {
        let path = dir.join("l.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let queued = UnixStream::connect(&path).unwrap();
        (listener, queued)
    }

    /// `conn`'s I/O, giving way to connections queued on `listener` while `idle` is set.
    fn yielding<'a>(
        conn: &'a UnixStream,
        listener: &'a std::os::unix::net::UnixListener,
        idle: &'a Cell<bool>,
        yielded: &'a Cell<bool>,
        read_timeout: Duration,
    ) -> TimedIo<'a> {
        TimedIo::new(conn, read_timeout, Duration::from_secs(5)).yielding_to(YieldTo {
            listener: listener.as_fd(),
            idle,
            yielded,
            give_up: &|| false,
        })
    }

    #[test]
    fn an_idle_kept_connection_gives_way_to_a_queued_one() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, _queued) = listener_with_a_queued_connection(dir.path());
        let (_a, b) = UnixStream::pair().unwrap();
        let (idle, yielded) = (Cell::new(true), Cell::new(false));
        let mut io = yielding(&b, &listener, &idle, &yielded, Duration::from_secs(5));
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        assert_eq!(
            io.read(&mut buf).unwrap(),
            0,
            "given up like a closed connection"
        );
        assert!(yielded.get());
        assert!(!idle.get());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn an_idle_kept_connection_serves_its_own_next_request_when_nothing_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.path().join("l.sock")).unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        let (idle, yielded) = (Cell::new(true), Cell::new(false));
        let mut io = yielding(&b, &listener, &idle, &yielded, Duration::from_secs(5));
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            a.write_all(b"next!").unwrap();
            a
        });
        let mut buf = [0u8; 16];
        assert_eq!(io.read(&mut buf).unwrap(), 5);
        assert!(!yielded.get());
        assert!(!idle.get(), "bytes arrived: no longer idle");
        drop(writer.join());
    }

    #[test]
    fn a_connection_in_the_middle_of_a_request_never_gives_way() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, _queued) = listener_with_a_queued_connection(dir.path());
        let (_a, b) = UnixStream::pair().unwrap();
        let (idle, yielded) = (Cell::new(false), Cell::new(false));
        let mut io = yielding(&b, &listener, &idle, &yielded, Duration::from_millis(100));
        let mut buf = [0u8; 16];
        let err = io.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(!yielded.get());
    }

    #[test]
    fn a_wait_that_ends_in_progress_beats_the_heartbeat() {
        let board = crate::scoreboard::Scoreboard::create(&[1]).unwrap();
        let slot = &board.slots(0)[0];
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut io = TimedIo::new(&b, Duration::from_secs(5), Duration::from_secs(5)).beating(slot);
        let before = slot.heartbeat_us.load(std::sync::atomic::Ordering::Relaxed);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            a.write_all(b"x").unwrap();
            a
        });
        let mut buf = [0u8; 4];
        assert_eq!(io.read(&mut buf).unwrap(), 1);
        let after = slot.heartbeat_us.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            after > before,
            "no beat after a wait that ended in data: {before} {after}"
        );
        drop(writer.join());
    }

    #[test]
    fn write_times_out_when_the_peer_never_reads() {
        let (_a, b) = UnixStream::pair().unwrap();
        let mut io = TimedIo::new(&b, Duration::from_millis(50), Duration::from_millis(50));
        let chunk = vec![0u8; 64 * 1024];
        let err = loop {
            if let Err(e) = io.write(&chunk) {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn write_to_a_closed_peer_is_an_error_not_a_signal() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let mut io = TimedIo::new(&b, Duration::from_millis(50), Duration::from_millis(50));
        assert!(io.write(b"x").is_err());
    }
}
