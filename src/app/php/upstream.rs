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

/// The longest content of one record (the FastCGI length field is 16 bits).
const MAX_CONTENT: usize = 65535;

/// The request as php-cgi gets it, without copying a large body a second time: `head` is
/// BEGIN_REQUEST and PARAMS already encoded (and, when `body` is empty, the STDIN records too);
/// `body` is the request's own STDIN buffer, sent as STDIN records whose 8-byte headers are made
/// on the way, then the empty STDIN record that ends the stream.
///
/// Why: a 128 MiB upload used to sit in memory twice per worker (the request, and its encoded
/// copy), and the copy's buffer stayed allocated after the request.
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    pub head: &'a [u8],
    pub body: &'a [u8],
}

impl<'a> Outgoing<'a> {
    /// Everything already encoded in `head`.
    pub fn encoded(head: &'a [u8]) -> Self {
        Self { head, body: &[] }
    }

    /// Bytes on the wire in total.
    fn len(&self) -> usize {
        if self.body.is_empty() {
            return self.head.len();
        }
        let records = self.body.len().div_ceil(MAX_CONTENT) + 1;
        self.head.len() + self.body.len() + 8 * records
    }

    /// The bytes from wire offset `pos` to the end of the piece that holds it (a slice of
    /// `head` or `body`, or the rest of a record header written into `header`).
    pub fn piece<'b>(&'b self, pos: usize, header: &'b mut [u8; 8]) -> &'b [u8] {
        if pos < self.head.len() {
            return &self.head[pos..];
        }
        // Full records first, then the short one (if any), then the empty one.
        let off = pos - self.head.len();
        let full_records = self.body.len() / MAX_CONTENT;
        let full_bytes = full_records * (MAX_CONTENT + 8);
        let (start, content, within) = if off < full_bytes {
            let record = off / (MAX_CONTENT + 8);
            (record * MAX_CONTENT, MAX_CONTENT, off % (MAX_CONTENT + 8))
        } else {
            let start = full_records * MAX_CONTENT;
            let rest = self.body.len() - start;
            let off = off - full_bytes;
            if rest > 0 && off < 8 + rest {
                (start, rest, off)
            } else {
                // The empty record that ends the stream.
                (
                    self.body.len(),
                    0,
                    off - if rest > 0 { 8 + rest } else { 0 },
                )
            }
        };
        if within < 8 {
            let len = (content as u16).to_be_bytes();
            let id = UPSTREAM_REQUEST_ID.to_be_bytes();
            *header = [
                1,
                RecordType::Stdin.as_u8(),
                id[0],
                id[1],
                len[0],
                len[1],
                0,
                0,
            ];
            return &header[within..];
        }
        &self.body[start + within - 8..start + content]
    }
}

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

    /// Send `request` (BEGIN_REQUEST, PARAMS, STDIN: see [`Outgoing`]) on `conn` and relay the
    /// answer into `out`. STDERR content goes to `on_stderr`. A client that stops reading does
    /// not stop the relay: php-cgi's answer is still drained, so the connection stays usable,
    /// and the first client-side write error is stored in `client_error`. `on_slow` is called
    /// when the answer has not come within the socket's `SO_RCVTIMEO` (see `Wait`).
    #[allow(clippy::too_many_arguments)]
    pub fn exchange(
        &mut self,
        conn: &UnixStream,
        request: Outgoing<'_>,
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
        let total = request.len();
        let mut header = [0u8; 8];
        let mut written = 0;
        let (mut start, mut end) = (0usize, 0usize);
        let mut forwarded = false;
        // Nothing can have arrived before the request is sent: the first read waits in poll()
        // instead of costing a recv() that would only say EAGAIN.
        let mut may_have_data = false;
        loop {
            if written < total {
                match send(
                    fd,
                    request.piece(written, &mut header),
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                ) {
                    Ok(n) => {
                        written += n;
                        if written < total {
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
            if !may_have_data && written == total && blocking_first_read {
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
                                        reusable: written == total && start + used == end,
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
            if written < total {
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

#[cfg(test)]
mod outgoing_tests {
    use super::*;

    /// Walking the pieces gives exactly the records of the body, each header made on the way.
    #[test]
    fn pieces_equal_the_encoded_request() {
        for body_len in [
            1,
            100,
            MAX_CONTENT - 1,
            MAX_CONTENT,
            MAX_CONTENT + 1,
            3 * MAX_CONTENT + 7,
        ] {
            let head = b"HEADBYTES".to_vec();
            let body: Vec<u8> = (0..body_len).map(|i| (i % 251) as u8).collect();
            // Records without padding (allowed: padding is the sender's choice).
            let mut want = head.clone();
            for chunk in body.chunks(MAX_CONTENT).chain([&[][..]]) {
                let len = (chunk.len() as u16).to_be_bytes();
                want.extend_from_slice(&[1, 5, 0, 1, len[0], len[1], 0, 0]);
                want.extend_from_slice(chunk);
            }
            let out = Outgoing {
                head: &head,
                body: &body,
            };
            assert_eq!(out.len(), want.len(), "body {body_len}");
            let mut got = Vec::new();
            let mut header = [0u8; 8];
            // Uneven steps, as partial sends would take them.
            let mut step = 1;
            while got.len() < out.len() {
                let piece = out.piece(got.len(), &mut header);
                assert!(
                    !piece.is_empty(),
                    "body {body_len}: empty piece at {}",
                    got.len()
                );
                let take = piece.len().min(step);
                got.extend_from_slice(&piece[..take]);
                step = step * 7 % 70_001 + 1;
            }
            assert!(got == want, "body {body_len}: bytes differ");
        }
    }
}
