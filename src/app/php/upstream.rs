//! One request relayed to php-cgi over the kept connection: write the encoded request while
//! reading the answer (so a large body cannot deadlock against early output), forward STDOUT to
//! the client as it arrives, hand STDERR to the caller, stop at END_REQUEST or at the deadline.
//! Non-blocking `send`/`recv`; `poll` only when the kernel has nothing to give or take.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};

use crate::fastcgi::{parse_end_request, parse_record, RecordType, ResponseWriter};

/// The request id fastpm uses on its php-cgi connections (one request at a time).
pub const UPSTREAM_REQUEST_ID: u16 = 1;

/// Read buffer size: a whole maximal record (8 + 65535 + 255 bytes) always fits.
const READ_BUFFER: usize = 128 * 1024;

/// How a relayed request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// END_REQUEST arrived. `reusable` is false when php-cgi answered before taking the whole
    /// request: the rest of it would be read as the next request, so the connection must go.
    Complete { app_status: u32, reusable: bool },
    /// The connection was already dead when the request was sent (php-cgi exited while idle):
    /// nothing was run, the request can be retried on a fresh child.
    DeadBeforeRequest,
    /// php-cgi went away (or spoke garbage) while running the request. `forwarded` says whether
    /// part of a response already reached the client (then no error status can be sent).
    Died { forwarded: bool },
    /// The deadline passed before END_REQUEST.
    TimedOut { forwarded: bool },
}

/// How long a relay may wait for php-cgi.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// When the request must be over (`request_timeout`); `None` = no limit.
    pub deadline: Option<Instant>,
    /// Wait for the first answer inside a blocking `recv()`: allowed when `conn` is a blocking
    /// socket whose `SO_RCVTIMEO` is set and at most the time left until `deadline`. When that
    /// read times out with no answer, `on_slow` is called (once) and the wait goes on in
    /// `poll` until the deadline.
    pub blocking_first_read: bool,
}

/// The read buffer, reused across requests.
pub struct Relay {
    buf: Vec<u8>,
}

impl Default for Relay {
    fn default() -> Self {
        Self::new()
    }
}

impl Relay {
    pub fn new() -> Self {
        Self {
            buf: vec![0; READ_BUFFER],
        }
    }

    /// Send `request` (BEGIN_REQUEST, PARAMS, STDIN, already encoded) on `conn` and relay the
    /// answer into `out`. STDERR content goes to `on_stderr`. A client that stops reading does
    /// not stop the relay: php-cgi's answer is still drained, so the connection stays usable,
    /// and the first client-side write error is stored in `client_error`. `on_slow` is called
    /// when the answer has not come within the socket's `SO_RCVTIMEO` (see `Wait`).
    #[allow(clippy::too_many_arguments)]
    pub fn exchange(
        &mut self,
        conn: &UnixStream,
        request: &[u8],
        wait: Wait,
        out: &mut ResponseWriter<'_>,
        on_stderr: &mut dyn FnMut(&[u8]),
        on_slow: &mut dyn FnMut(),
        client_error: &mut Option<io::Error>,
    ) -> Outcome {
        let Wait {
            deadline,
            blocking_first_read,
        } = wait;
        let fd = conn.as_raw_fd();
        let mut written = 0;
        let (mut start, mut end) = (0usize, 0usize);
        let mut forwarded = false;
        // Nothing can have arrived before the request is sent: the first read waits in poll()
        // instead of costing a recv() that would only say EAGAIN.
        let mut may_have_data = false;
        loop {
            if written < request.len() {
                match send(
                    fd,
                    &request[written..],
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                ) {
                    Ok(n) => {
                        written += n;
                        if written < request.len() {
                            continue;
                        }
                    }
                    Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                    Err(_) if written == 0 => return Outcome::DeadBeforeRequest,
                    Err(_) => return Outcome::Died { forwarded },
                }
            }
            // Right after the whole request went out, wait for the answer inside recv() itself
            // (bounded by the socket's SO_RCVTIMEO, see `Php`): one syscall instead of poll +
            // recv. Later reads are non-blocking, bounded by poll and the deadline.
            let mut flags = MsgFlags::MSG_DONTWAIT;
            if !may_have_data && written == request.len() && blocking_first_read {
                flags = MsgFlags::empty();
                may_have_data = true;
            }
            if !may_have_data {
                may_have_data = true;
            } else {
                if end == self.buf.len() {
                    // A record longer than the buffer cannot exist; compact first.
                    self.buf.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                }
                match recv(fd, &mut self.buf[end..], flags) {
                    Ok(0) => return Outcome::Died { forwarded },
                    Ok(n) => {
                        end += n;
                        loop {
                            let parsed = match parse_record(&self.buf[start..end]) {
                                Ok(Some((record, used))) => (record, used),
                                Ok(None) => break,
                                Err(_) => return Outcome::Died { forwarded },
                            };
                            let (record, used) = parsed;
                            if record.header.request_id != UPSTREAM_REQUEST_ID {
                                return Outcome::Died { forwarded };
                            }
                            match record.header.record_type {
                                RecordType::Stdout => {
                                    if !record.content.is_empty() {
                                        forwarded = true;
                                        if client_error.is_none() {
                                            if let Err(e) = out.stdout(record.content) {
                                                *client_error = Some(e);
                                            }
                                        }
                                    }
                                }
                                RecordType::Stderr => {
                                    if !record.content.is_empty() {
                                        on_stderr(record.content);
                                    }
                                }
                                RecordType::EndRequest => {
                                    let Ok(body) = parse_end_request(record.content) else {
                                        return Outcome::Died { forwarded };
                                    };
                                    return Outcome::Complete {
                                        app_status: body.app_status,
                                        reusable: written == request.len() && start + used == end,
                                    };
                                }
                                _ => return Outcome::Died { forwarded },
                            }
                            start += used;
                        }
                        if start == end {
                            start = 0;
                            end = 0;
                        }
                        continue;
                    }
                    Err(Errno::EAGAIN) if flags.is_empty() => on_slow(),
                    Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                    Err(_) => return Outcome::Died { forwarded },
                }
            }
            let mut events = PollFlags::POLLIN;
            if written < request.len() {
                events |= PollFlags::POLLOUT;
            }
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Outcome::TimedOut { forwarded };
                    }
                    // Round up, so the wait never ends a hair before the deadline.
                    let ms = left.as_micros().div_ceil(1000);
                    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [PollFd::new(conn.as_fd(), events)];
            match poll(&mut fds, timeout) {
                Ok(0) => return Outcome::TimedOut { forwarded },
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return Outcome::Died { forwarded },
            }
        }
    }
}
