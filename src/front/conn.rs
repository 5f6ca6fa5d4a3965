//! One connection as the front holds it: the socket, its request [`Assembler`], the bytes read
//! but not yet used, and where it is ([`Phase`]). [`FrontConn::step`] reads what the socket
//! has without blocking and feeds it to the assembler until a request is complete, the socket
//! has nothing more, or the connection must end — partial input is the normal state between
//! two steps. The same value travels to an executor with its request and comes back after the
//! response when the connection is kept (FCGI_KEEP_CONN).
//!
//! Memory: a silent connection costs this struct and its descriptor; bytes are read into the
//! front's one scratch buffer and only a partial record (or what followed a complete request)
//! is copied into the connection's own `pending`.
//!
//! A fresh unix connection's first read is a `MSG_PEEK` ([`FrontConn::peeked`]): when it
//! brings the whole request, the bytes stay in the socket until the response has been written
//! ([`FrontConn::drain_peeked`]). Taking bytes off a unix socket wakes the peer's reader
//! (`unix_write_space`: room to write again), and the web server, asleep waiting for the
//! response, would be woken once for nothing before every response (measured: docs/
//! BENCHMARKS.md, "The wake-up before the answer"). Anything else (a partial request, one
//! over [`MAX_LEFT_PEEKED`], an end) drains at once.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};

use super::policy::Phase;
use crate::fastcgi::{
    AssembleError, Assembler, Event, LimitExceeded, Limits, ProtocolError, Request,
};
use crate::listen::{Peer, Stream};

/// The most peeked bytes left in the socket under a complete request: draining copies them a
/// second time, which grows with the request while the wake-up it saves does not. The bound is
/// a guess, not a measured break-even: it keeps every GET nginx sends (well under 2 KiB) and
/// takes a request with a body of many KiB at once, as before the peek.
pub const MAX_LEFT_PEEKED: usize = 16 * 1024;

/// One accepted connection.
pub struct FrontConn {
    pub stream: Stream,
    pub peer: Peer,
    assembler: Assembler,
    /// Read but not yet fed: a partial record, or what followed a complete request.
    pending: Vec<u8>,
    /// How long the connection waited in the kernel queue; its first request's (the executor
    /// takes it: later requests on a kept connection did not wait there).
    pub queue_wait_us: Option<u64>,
    pub(super) phase: Phase,
    /// Bytes of the current phase's request have arrived (a silent connection has none).
    pub(super) bytes_seen: bool,
    /// Known to the front's epoll (one-shot: disarmed after each event until re-armed).
    pub(super) registered: bool,
    /// A request was answered on it and it was kept (FCGI_KEEP_CONN).
    kept: bool,
    /// Bytes read with `MSG_PEEK` and still in the socket (see the module comment): taken off
    /// by [`FrontConn::drain_peeked`] before the socket is read, asked whether the client is
    /// gone, handed on or closed — closing a unix socket with unread bytes would end the
    /// client's stream with ECONNRESET instead of an end of file.
    peeked: usize,
}

/// What one [`FrontConn::step`] came to.
#[derive(Debug)]
pub enum Step {
    /// A request is complete: the connection goes to an executor with it.
    Complete(Request),
    /// The socket has nothing more now: wait until it is readable.
    Wait,
    /// The connection is over; replies owed are in the caller's `replies`.
    Close(End),
}

/// Why a connection ends in the front.
#[derive(Debug)]
pub enum End {
    /// The peer closed between records (or gave up on a request it had begun).
    PeerClosed,
    /// A request ended without the app (ABORT_REQUEST, unknown role) and without keep-conn.
    Done,
    Io(io::Error),
    Protocol(ProtocolError),
    /// Answered with 431/413 (in the replies), then closed.
    Limit(LimitExceeded),
}

impl FrontConn {
    pub fn new(
        stream: Stream,
        peer: Peer,
        limits: &Limits,
        queue_wait_us: Option<u64>,
        now: Instant,
    ) -> Self {
        Self {
            stream,
            peer,
            assembler: Assembler::new(limits),
            pending: Vec::new(),
            queue_wait_us,
            phase: Phase::Reading {
                since: now,
                params_done: false,
            },
            bytes_seen: false,
            registered: false,
            kept: false,
            peeked: 0,
        }
    }

    /// The request's allocations back for the next one, after the executor answered it; the
    /// connection is kept if the request asked for it.
    pub fn recycle(&mut self, request: Request) {
        self.kept = request.keep_conn;
        self.assembler.recycle(request);
    }

    /// A kept connection coming back from the master's holder (or passed on by a retiring
    /// worker): idle, or with `pending` bytes of its next request already read.
    pub fn handed_back(
        stream: Stream,
        peer: Peer,
        limits: &Limits,
        pending: Vec<u8>,
        now: Instant,
    ) -> Self {
        let mut conn = Self::new(stream, peer, limits, None, now);
        conn.pending = pending;
        conn.kept = true;
        conn.returned(now);
        conn
    }

    /// Bytes read past the request (they travel with the connection to the holder).
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// Not one byte has arrived on this fresh connection yet.
    pub fn nothing_read(&self) -> bool {
        !self.bytes_seen && !self.kept
    }

    /// A request was answered on it and it is kept.
    pub fn is_kept(&self) -> bool {
        self.kept
    }

    /// Back from the executor, kept: idle from `now` until its next request's first byte —
    /// unless bytes of that request were read with the last one.
    pub fn returned(&mut self, now: Instant) {
        self.bytes_seen = !self.pending.is_empty();
        self.phase = if self.bytes_seen {
            Phase::Reading {
                since: now,
                params_done: false,
            }
        } else {
            Phase::Idle { since: now }
        };
    }

    /// Read and feed until a request is complete, the socket has nothing more, or the
    /// connection must end. `read`: look at the socket at all (a connection just back from an
    /// executor first uses what it has). Replies the protocol owes (GET_VALUES_RESULT,
    /// UNKNOWN_TYPE, refusals, 431/413) are appended to `replies`.
    pub fn step(
        &mut self,
        scratch: &mut [u8],
        replies: &mut Vec<u8>,
        now: Instant,
        mut read: bool,
    ) -> Step {
        loop {
            if !self.pending.is_empty() {
                let pending = std::mem::take(&mut self.pending);
                let (used, step) = self.feed_all(&pending, replies);
                self.pending = pending;
                self.pending.drain(..used);
                if let Some(step) = step {
                    return step;
                }
            }
            if !read {
                return Step::Wait;
            }
            // A guard: the executor drains after the answer, before the connection is read
            // again; reading past peeked bytes would feed the same request twice.
            if let Err(e) = self.drain_peeked(scratch) {
                return Step::Close(End::Io(e));
            }
            // Only the first bytes of a fresh unix connection are peeked (module comment).
            let peek = self.nothing_read() && matches!(self.stream, Stream::Unix(_));
            let flags = if peek {
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_PEEK
            } else {
                MsgFlags::MSG_DONTWAIT
            };
            let n = match recv(self.stream.as_fd().as_raw_fd(), scratch, flags) {
                Ok(0) => return Step::Close(self.at_eof()),
                Ok(n) => n,
                Err(Errno::EAGAIN) => return Step::Wait,
                Err(Errno::EINTR) => continue,
                Err(e) => return Step::Close(End::Io(e.into())),
            };
            self.arrived(now);
            if peek {
                self.peeked = n;
            }
            if n < scratch.len() {
                // The socket is very likely drained: feed, and wait for readiness rather than
                // spend a read on EAGAIN (readiness is level-triggered; nothing is missed).
                read = false;
            }
            let step = if self.pending.is_empty() {
                let (used, step) = self.feed_all(&scratch[..n], replies);
                self.pending.extend_from_slice(&scratch[used..n]);
                step
            } else {
                self.pending.extend_from_slice(&scratch[..n]);
                None
            };
            // Peeked bytes stay in the socket only under a complete request (and not too
            // many): a connection that waits for more must not stay readable, one that ends
            // must not be reset.
            if !matches!(step, Some(Step::Complete(_))) || self.peeked > MAX_LEFT_PEEKED {
                if let Err(e) = self.drain_peeked(scratch) {
                    return Step::Close(End::Io(e));
                }
            }
            if let Some(step) = step {
                return step;
            }
        }
    }

    /// Take the peeked bytes (module comment) off the socket, reading them into `buf` again;
    /// nothing to do when none are left there.
    pub fn drain_peeked(&mut self, buf: &mut [u8]) -> io::Result<()> {
        while self.peeked > 0 {
            let want = self.peeked.min(buf.len());
            match recv(
                self.stream.as_fd().as_raw_fd(),
                &mut buf[..want],
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => self.peeked = 0,
                Ok(n) => self.peeked -= n, // at most `want`, which is at most `peeked`
                Err(Errno::EINTR) => {}
                Err(e) => {
                    self.peeked = 0;
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// The first bytes of a kept connection's next request restart the clock.
    fn arrived(&mut self, now: Instant) {
        if let Phase::Idle { .. } = self.phase {
            self.phase = Phase::Reading {
                since: now,
                params_done: false,
            };
        }
        self.bytes_seen = true;
    }

    /// End of stream: between records it is a close; inside one, a truncated record.
    fn at_eof(&self) -> End {
        if self.pending.is_empty() {
            End::PeerClosed
        } else {
            End::Protocol(ProtocolError::TruncatedRecord {
                buffered: self.pending.len(),
            })
        }
    }

    /// Feed whole records of `input`; how many bytes were used, and a step if one was reached.
    fn feed_all(&mut self, input: &[u8], replies: &mut Vec<u8>) -> (usize, Option<Step>) {
        let mut used = 0;
        loop {
            let fed = match self.assembler.feed(&input[used..], replies) {
                Ok(fed) => fed,
                Err(AssembleError::Protocol(e)) => {
                    return (used, Some(Step::Close(End::Protocol(e))))
                }
                Err(AssembleError::Limit(l)) => return (used, Some(Step::Close(End::Limit(l)))),
            };
            if fed.consumed == 0 {
                break;
            }
            used += fed.consumed;
            match fed.event {
                None | Some(Event::Started { .. }) => {}
                Some(Event::Complete(request)) => return (used, Some(Step::Complete(request))),
                Some(Event::Finished {
                    keep_conn: false, ..
                }) => return (used, Some(Step::Close(End::Done))),
                Some(Event::Finished { .. }) => {}
            }
        }
        if let Phase::Reading {
            since,
            params_done: false,
        } = self.phase
        {
            if self.assembler.params_complete() {
                self.phase = Phase::Reading {
                    since,
                    params_done: true,
                };
            }
        }
        (used, None)
    }
}

impl Drop for FrontConn {
    /// A connection closed on a path that did not drain (an error, a shutdown) still ends the
    /// client's stream with an end of file, not ECONNRESET.
    fn drop(&mut self) {
        if self.peeked > 0 {
            let mut buf = [0u8; 4096];
            let _ = self.drain_peeked(&mut buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::{encode_request, ClientRequest};
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    fn request(keep_conn: bool, body: &[u8]) -> Vec<u8> {
        let request = ClientRequest {
            params: vec![(b"SCRIPT_NAME".to_vec(), b"/x".to_vec())],
            body: body.to_vec(),
            keep_conn,
        };
        let mut out = Vec::new();
        encode_request(&mut out, 1, &request).unwrap();
        out
    }

    /// A fresh connection over a socket pair; the other end to write into.
    fn pair() -> (FrontConn, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let conn = FrontConn::new(
            Stream::Unix(ours),
            Peer::Unix,
            &Limits::default(),
            None,
            Instant::now(),
        );
        (conn, theirs)
    }

    fn step(conn: &mut FrontConn) -> Step {
        let mut scratch = vec![0u8; 64 * 1024];
        conn.step(&mut scratch, &mut Vec::new(), Instant::now(), true)
    }

    #[test]
    fn partial_input_waits_and_completes_byte_by_byte() {
        let (mut conn, mut client) = pair();
        assert!(matches!(step(&mut conn), Step::Wait));
        assert!(conn.nothing_read());
        let bytes = request(false, b"body");
        for (i, byte) in bytes.iter().enumerate() {
            client.write_all(&[*byte]).unwrap();
            match step(&mut conn) {
                Step::Wait => assert!(i + 1 < bytes.len(), "complete only at the last byte"),
                Step::Complete(r) => {
                    assert_eq!(i + 1, bytes.len());
                    assert_eq!(r.stdin, b"body");
                }
                Step::Close(end) => panic!("closed at byte {i}: {end:?}"),
            }
            assert!(!conn.nothing_read());
        }
    }

    #[test]
    fn params_done_moves_the_deadline_to_the_whole_request() {
        let (mut conn, mut client) = pair();
        let bytes = request(false, b"body");
        // Everything but the STDIN records: BEGIN (16) + PARAMS + empty PARAMS.
        let stdin_at = bytes.len() - 2 * 8 - 8; // "body" padded to 8, then the empty STDIN
        client.write_all(&bytes[..stdin_at]).unwrap();
        assert!(matches!(step(&mut conn), Step::Wait));
        assert!(matches!(
            conn.phase,
            Phase::Reading {
                params_done: true,
                ..
            }
        ));
    }

    #[test]
    fn a_kept_connection_goes_idle_and_keeps_pipelined_bytes() {
        let (mut conn, mut client) = pair();
        let mut bytes = request(true, b"");
        bytes.extend(request(true, b"second"));
        client.write_all(&bytes).unwrap();
        let Step::Complete(first) = step(&mut conn) else {
            panic!("first request")
        };
        conn.recycle(first);
        assert!(conn.is_kept());
        // The second request came in the same read: back from the executor it is not idle.
        conn.returned(Instant::now());
        assert!(matches!(conn.phase, Phase::Reading { .. }));
        let mut scratch = vec![0u8; 1024];
        match conn.step(&mut scratch, &mut Vec::new(), Instant::now(), false) {
            Step::Complete(second) => {
                assert_eq!(second.stdin, b"second");
                conn.recycle(second);
            }
            other => panic!("{other:?}"),
        }
        // Nothing pending now: idle.
        conn.returned(Instant::now());
        assert!(matches!(conn.phase, Phase::Idle { .. }));
    }

    /// Bytes still in `ours`' receive queue, without taking them.
    fn left_in_socket(conn: &FrontConn) -> usize {
        let mut buf = [0u8; 4096];
        match recv(
            conn.stream.as_fd().as_raw_fd(),
            &mut buf,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => 0,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_complete_first_request_stays_in_the_socket_until_drained() {
        let (mut conn, mut client) = pair();
        let bytes = request(false, b"body");
        client.write_all(&bytes).unwrap();
        let Step::Complete(r) = step(&mut conn) else {
            panic!("complete")
        };
        assert_eq!(r.stdin, b"body");
        assert_eq!(left_in_socket(&conn), bytes.len(), "peeked, not taken");
        conn.drain_peeked(&mut [0u8; 16]).unwrap();
        assert_eq!(left_in_socket(&conn), 0);
        conn.drain_peeked(&mut [0u8; 16]).unwrap();
    }

    #[test]
    fn a_large_complete_request_is_taken_at_once() {
        let (mut conn, mut client) = pair();
        let body = vec![b'x'; MAX_LEFT_PEEKED];
        let bytes = request(false, &body);
        client.write_all(&bytes).unwrap();
        let Step::Complete(r) = step(&mut conn) else {
            panic!("complete")
        };
        assert_eq!(r.stdin, body);
        assert_eq!(left_in_socket(&conn), 0);
    }

    #[test]
    fn a_partial_first_read_is_taken_at_once() {
        let (mut conn, mut client) = pair();
        let bytes = request(false, b"body");
        client.write_all(&bytes[..bytes.len() - 3]).unwrap();
        assert!(matches!(step(&mut conn), Step::Wait));
        assert_eq!(
            left_in_socket(&conn),
            0,
            "a waiting connection is not left readable"
        );
        client.write_all(&bytes[bytes.len() - 3..]).unwrap();
        let Step::Complete(r) = step(&mut conn) else {
            panic!("complete")
        };
        assert_eq!(r.stdin, b"body");
        assert_eq!(
            left_in_socket(&conn),
            0,
            "only a fresh connection's first read peeks"
        );
    }

    #[test]
    fn a_kept_connection_s_next_request_is_read_not_peeked() {
        let (mut conn, mut client) = pair();
        client.write_all(&request(true, b"one")).unwrap();
        let Step::Complete(first) = step(&mut conn) else {
            panic!("first")
        };
        conn.drain_peeked(&mut [0u8; 64]).unwrap();
        conn.recycle(first);
        conn.returned(Instant::now());
        client.write_all(&request(true, b"two")).unwrap();
        let Step::Complete(second) = step(&mut conn) else {
            panic!("second")
        };
        assert_eq!(second.stdin, b"two");
        assert_eq!(left_in_socket(&conn), 0);
    }

    #[test]
    fn dropped_with_peeked_bytes_the_client_reads_an_end_of_file() {
        use std::io::Read;
        let (mut conn, mut client) = pair();
        client.write_all(&request(false, b"")).unwrap();
        assert!(matches!(step(&mut conn), Step::Complete(_)));
        drop(conn);
        let mut buf = [0u8; 8];
        assert_eq!(
            client.read(&mut buf).unwrap(),
            0,
            "end of file, not ECONNRESET"
        );
    }

    #[test]
    fn end_of_stream_between_records_is_a_close_inside_one_an_error() {
        let (mut conn, client) = pair();
        drop(client);
        assert!(matches!(step(&mut conn), Step::Close(End::PeerClosed)));

        let (mut conn, mut client) = pair();
        client.write_all(&request(false, b"")[..5]).unwrap();
        drop(client);
        // A short read says the socket is drained: the end is seen at the next readiness.
        assert!(matches!(step(&mut conn), Step::Wait));
        assert!(matches!(
            step(&mut conn),
            Step::Close(End::Protocol(ProtocolError::TruncatedRecord { .. }))
        ));
    }
}
