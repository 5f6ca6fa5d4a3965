//! Reading and writing a client connection with a deadline per wait, at no cost when no wait is
//! needed.
//!
//! Why not `SO_RCVTIMEO`/`SO_SNDTIMEO`: that is two `setsockopt` calls on every accepted
//! connection, about a quarter of the syscalls of a small request. Instead every read and write
//! is tried without blocking (`MSG_DONTWAIT`); only when the kernel has nothing to give (or no
//! room to take) does the worker `poll()` for at most the timeout. nginx sends the whole request
//! right after connecting, so the common case never polls.
//!
//! Executors use it to write responses (and the overload check's peek); connections are read
//! by the front (`crate::front`), which never blocks. Kept connections wait there between
//! requests, so nothing here watches for idle connections any more.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};

use crate::scoreboard::WorkerSlot;

/// A connection's descriptor with the worker's read and write timeouts.
pub struct TimedIo<'a> {
    fd: BorrowedFd<'a>,
    read_timeout: Duration,
    write_timeout: Duration,
    /// The worker's slot, beaten whenever a wait ends with the client ready: a long upload
    /// or download that keeps moving is alive, not hung (the master's `IO_SILENCE`). Only
    /// waits beat, so a request that needs none costs nothing more.
    alive: Option<&'a WorkerSlot>,
}

impl<'a> TimedIo<'a> {
    pub fn new(stream: &'a impl AsFd, read_timeout: Duration, write_timeout: Duration) -> Self {
        Self {
            fd: stream.as_fd(),
            read_timeout,
            write_timeout,
            alive: None,
        }
    }

    /// Beat `slot`'s heartbeat whenever a wait for the client ends in progress.
    pub fn beating(mut self, slot: &'a WorkerSlot) -> Self {
        self.alive = Some(slot);
        self
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
                Ok(n) => return Ok(n),
                Err(Errno::EAGAIN) => self.wait(PollFlags::POLLIN, self.read_timeout, "reading")?,
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
