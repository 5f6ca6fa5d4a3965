//! The blocking connection driver: reads one FastCGI connection with one reusable buffer,
//! feeds the [`Assembler`], runs the [`Handler`] for each complete request, and writes each
//! response (STDOUT records + END_REQUEST) in as few `write()` calls as possible — one for a
//! small response. It never panics; anything unreadable ends this connection with a
//! [`ConnectionError`] the caller logs in one line.

use std::io::{self, Read, Write};

use super::assemble::{AssembleError, Assembler, Event, Request};
use super::error::{LimitExceeded, ProtocolError};
use super::limits::Limits;
use super::params::Params;
use super::record::MAX_RECORD_LEN;
use super::response::ResponseWriter;
use crate::hold::grip::GripFilter;
use crate::hold::wire::Ask;

/// What runs a request. Implemented by the worker (apps, status, ping).
pub trait Handler {
    /// Called once per complete request (params and all of stdin read). The driver then writes
    /// END_REQUEST with the returned app status (protocol status REQUEST_COMPLETE unless the
    /// handler set another on `out`). An `Err` means the connection cannot go on: the driver
    /// sends nothing more and returns it (as [`ConnectionError::Io`] when a write to the
    /// connection failed, else [`ConnectionError::Handler`]).
    fn handle(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> io::Result<u32>;

    /// Called when a new request's BEGIN_REQUEST arrives — lets the worker mark itself
    /// "Reading headers". Default: no-op.
    fn begin(&mut self) {}

    /// Called before the driver waits on a kept connection (FCGI_KEEP_CONN) whose last request
    /// was answered and of whose next request nothing has arrived: the connection is idle, and
    /// ending it now loses nothing. Default: no-op.
    fn between_requests(&mut self) {}
}

/// How a connection ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// The peer closed the connection between records (also when a request had begun but was
    /// not complete: the web server gave up on it).
    PeerClosed,
    /// A request without FCGI_KEEP_CONN was answered: the connection is done.
    Done,
}

/// Why a connection was ended early. Each is one log line for the caller; only this
/// connection is affected.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Reading or writing the socket failed (including read timeouts set by the worker,
    /// which show up as `WouldBlock`/`TimedOut`, and a client that went away mid-response).
    #[error("connection I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The peer sent something that is not FastCGI 1.0, or broke its rules.
    #[error("FastCGI protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// A request exceeded a limit; it was answered with 431/413, then the connection closed.
    #[error("{0}")]
    LimitExceeded(#[from] LimitExceeded),
    /// The handler failed for a reason of its own.
    #[error("request handler failed: {0}")]
    Handler(io::Error),
}

/// First size of the read buffer: a typical nginx request (a few hundred bytes of params)
/// arrives in one read.
const INITIAL_READ_BUF: usize = 16 * 1024;
/// The read buffer grows up to this, which holds the largest possible record (65,798 bytes)
/// with room to spare.
const MAX_READ_BUF: usize = 128 * 1024;
/// Don't issue a read with less free space than this; compact or grow first.
const MIN_READ: usize = 4096;

/// Buffers a worker keeps across connections so that serving one allocates nothing in the
/// common case.
#[derive(Debug, Default)]
pub struct ConnectionBuffers {
    read: Vec<u8>,
    out: Vec<u8>,
    spare: Option<(Params, Vec<u8>)>,
}

impl ConnectionBuffers {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Serve one connection until the peer closes, keep-conn ends, or an error.
pub fn serve_connection<S: Read + Write>(
    stream: &mut S,
    limits: &Limits,
    handler: &mut impl Handler,
) -> Result<ConnectionEnd, ConnectionError> {
    serve_connection_with(stream, limits, handler, &mut ConnectionBuffers::new())
}

/// [`serve_connection`], reusing `buffers` from earlier connections.
pub fn serve_connection_with<S: Read + Write>(
    stream: &mut S,
    limits: &Limits,
    handler: &mut impl Handler,
    buffers: &mut ConnectionBuffers,
) -> Result<ConnectionEnd, ConnectionError> {
    let mut assembler = Assembler::new(limits);
    if let Some((params, stdin)) = buffers.spare.take() {
        assembler.recycle_parts(params, stdin);
    }
    if buffers.read.len() < INITIAL_READ_BUF {
        buffers.read.resize(INITIAL_READ_BUF, 0);
    }
    buffers.out.clear();
    let result = drive(stream, handler, &mut assembler, buffers);
    buffers.spare = assembler.into_spare();
    buffers.out.clear();
    result
}

/// Write and clear `out` (replies waiting to go out).
fn send<S: Write>(stream: &mut S, out: &mut Vec<u8>) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let result = stream.write_all(out).and_then(|()| stream.flush());
    out.clear();
    result
}

fn drive<S: Read + Write>(
    stream: &mut S,
    handler: &mut impl Handler,
    assembler: &mut Assembler,
    buffers: &mut ConnectionBuffers,
) -> Result<ConnectionEnd, ConnectionError> {
    let ConnectionBuffers { read: buf, out, .. } = buffers;
    let (mut start, mut end) = (0usize, 0usize);
    // A keep-conn request was answered and nothing of the next one has been read yet.
    let mut idle = false;
    loop {
        // Everything whole in the buffer first.
        loop {
            let fed = match assembler.feed(&buf[start..end], out) {
                Ok(fed) => fed,
                Err(AssembleError::Protocol(e)) => {
                    let _ = send(stream, out); // best effort: replies owed before the garbage
                    return Err(e.into());
                }
                Err(AssembleError::Limit(limit)) => {
                    // The 431/413 answer is in `out`; the limit is the news, not a failed write.
                    let _ = send(stream, out);
                    return Err(limit.into());
                }
            };
            if fed.consumed == 0 {
                break;
            }
            start += fed.consumed;
            match fed.event {
                None => {}
                Some(Event::Started { .. }) => handler.begin(),
                Some(Event::Complete(request)) => {
                    if respond(stream, handler, &request, out, None)?.is_some() {
                        // This driver has no holder to give a request to: end the connection
                        // rather than leave the request unanswered.
                        return Err(ConnectionError::Io(io::Error::other(
                            "a request asked to be held on a connection without a holder",
                        )));
                    }
                    let keep_conn = request.keep_conn;
                    assembler.recycle(request);
                    if !keep_conn {
                        return Ok(ConnectionEnd::Done);
                    }
                    idle = true;
                }
                Some(Event::Finished {
                    keep_conn: false, ..
                }) => {
                    send(stream, out)?;
                    return Ok(ConnectionEnd::Done);
                }
                Some(Event::Finished { .. }) => {}
            }
        }
        // Replies owed (GET_VALUES_RESULT, UNKNOWN_TYPE, refusals) go out before we wait.
        send(stream, out)?;

        if start == end {
            (start, end) = (0, 0);
        } else if buf.len() - end < MIN_READ && start > 0 {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        if buf.len() - end < MIN_READ && buf.len() < MAX_READ_BUF {
            let new_len = (buf.len() * 2).clamp(MAX_RECORD_LEN, MAX_READ_BUF);
            buf.resize(new_len, 0);
        }

        if idle && start == end {
            handler.between_requests();
        }
        match stream.read(&mut buf[end..]) {
            Ok(0) => {
                return if start == end {
                    Ok(ConnectionEnd::PeerClosed)
                } else {
                    Err(ProtocolError::TruncatedRecord {
                        buffered: end - start,
                    }
                    .into())
                };
            }
            Ok(n) => {
                end += n;
                idle = false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Run the handler for `request` and write its response with END_REQUEST (the worker's
/// executors call this for each complete request the front hands over) — or, when the app
/// asked for it to be held (`grip` found `Grip-Hold`, or the `longpoll` app), return what the
/// master's holder needs, having sent nothing of STDOUT. `grip` must be reset before each call.
pub fn respond<S: Write>(
    stream: &mut S,
    handler: &mut impl Handler,
    request: &Request,
    out: &mut Vec<u8>,
    grip: Option<&mut GripFilter>,
) -> Result<Option<Ask>, ConnectionError> {
    let mut writer = ResponseWriter::new(stream, out, request.request_id).with_grip(grip);
    match handler.handle(request, &mut writer) {
        Ok(app_status) => writer.finish(app_status).map_err(ConnectionError::Io),
        Err(e) if writer.write_failed() => Err(ConnectionError::Io(e)),
        Err(e) => {
            out.clear();
            Err(ConnectionError::Handler(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::record::{parse_end_request, parse_record, RecordType};
    use std::io::Cursor;

    /// An in-memory connection: reads from `input` in chunks of `chunk` bytes, records writes.
    struct Pipe {
        input: Cursor<Vec<u8>>,
        chunk: usize,
        written: Vec<u8>,
        writes: usize,
        reads: usize,
    }

    impl Pipe {
        fn new(input: Vec<u8>, chunk: usize) -> Self {
            Pipe {
                input: Cursor::new(input),
                chunk,
                written: Vec::new(),
                writes: 0,
                reads: 0,
            }
        }
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            let n = buf.len().min(self.chunk);
            self.input.read(&mut buf[..n])
        }
    }

    impl Write for Pipe {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            self.written.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Echo {
        begun: usize,
    }

    impl Handler for Echo {
        fn handle(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> io::Result<u32> {
            out.stdout(b"Content-Type: text/plain\r\n\r\n")?;
            for (n, v) in request.params.iter() {
                out.stdout(n)?;
                out.stdout(b"=")?;
                out.stdout(v)?;
                out.stdout(b"\n")?;
            }
            out.stdout(&request.stdin)?;
            Ok(request.stdin.len() as u32)
        }
        fn begin(&mut self) {
            self.begun += 1;
        }
    }

    fn request(id: u16, keep: bool, body: &[u8]) -> Vec<u8> {
        let request = crate::fastcgi::ClientRequest {
            params: vec![(b"A".to_vec(), b"1".to_vec())],
            body: body.to_vec(),
            keep_conn: keep,
        };
        let mut out = Vec::new();
        crate::fastcgi::encode_request(&mut out, id, &request).unwrap();
        out
    }

    fn end_statuses(mut bytes: &[u8]) -> Vec<(u16, u32)> {
        let mut out = Vec::new();
        while let Some((r, used)) = parse_record(bytes).unwrap() {
            if r.header.record_type == RecordType::EndRequest {
                out.push((
                    r.header.request_id,
                    parse_end_request(r.content).unwrap().app_status,
                ));
            }
            bytes = &bytes[used..];
        }
        out
    }

    #[test]
    fn one_read_one_write_for_a_small_request() {
        let mut pipe = Pipe::new(request(1, false, b""), usize::MAX);
        let mut h = Echo { begun: 0 };
        let end = serve_connection(&mut pipe, &Limits::default(), &mut h).unwrap();
        assert_eq!(end, ConnectionEnd::Done);
        assert_eq!((pipe.reads, pipe.writes, h.begun), (1, 1, 1));
        assert_eq!(end_statuses(&pipe.written), vec![(1, 0)]);
    }

    #[test]
    fn keep_conn_requests_fed_in_odd_chunks() {
        for chunk in [1, 3, 7, 8, 9, 100, 4096] {
            let body = vec![b'b'; 70_000];
            let mut input = request(1, true, &body);
            input.extend(request(2, true, b"xyz"));
            input.extend(request(3, false, b""));
            input.extend(request(4, false, b"never read"));
            let mut pipe = Pipe {
                input: Cursor::new(input),
                chunk,
                written: Vec::new(),
                writes: 0,
                reads: 0,
            };
            let mut h = Echo { begun: 0 };
            let mut buffers = ConnectionBuffers::new();
            let end =
                serve_connection_with(&mut pipe, &Limits::default(), &mut h, &mut buffers).unwrap();
            assert_eq!(end, ConnectionEnd::Done, "chunk {chunk}");
            assert_eq!(
                end_statuses(&pipe.written),
                vec![(1, 70_000), (2, 3), (3, 0)],
                "chunk {chunk}"
            );
            assert!(buffers.read.len() <= MAX_READ_BUF);
        }
    }

    /// Counts `between_requests`: only when a keep-conn request was answered and nothing of
    /// the next one is buffered.
    struct Idle {
        calls: usize,
    }

    impl Handler for Idle {
        fn handle(&mut self, _: &Request, out: &mut ResponseWriter<'_>) -> io::Result<u32> {
            out.stdout(b"Content-Type: text/plain\r\n\r\nok")?;
            Ok(0)
        }
        fn between_requests(&mut self) {
            self.calls += 1;
        }
    }

    #[test]
    fn between_requests_only_when_a_kept_connection_is_idle() {
        let first = request(1, true, b"");
        let mut input = first.clone();
        input.extend(request(1, false, b""));
        // Delivered one request per read: after the first (keep-conn) the buffer is empty.
        let mut pipe = Pipe::new(input.clone(), first.len());
        let mut h = Idle { calls: 0 };
        let end = serve_connection(&mut pipe, &Limits::default(), &mut h).unwrap();
        assert_eq!((end, h.calls), (ConnectionEnd::Done, 1));
        // Both requests in one read: the next one is already there, the connection never idles.
        let mut pipe = Pipe::new(input, 1 << 20);
        let mut h = Idle { calls: 0 };
        let end = serve_connection(&mut pipe, &Limits::default(), &mut h).unwrap();
        assert_eq!((end, h.calls), (ConnectionEnd::Done, 0));
        // Without keep-conn there is no waiting between requests at all.
        let mut pipe = Pipe::new(request(1, false, b"body"), 3);
        let mut h = Idle { calls: 0 };
        serve_connection(&mut pipe, &Limits::default(), &mut h).unwrap();
        assert_eq!(h.calls, 0);
    }

    #[test]
    fn eof_mid_record_is_a_protocol_error_and_between_records_is_peer_closed() {
        let full = request(1, true, b"");
        for cut in 0..full.len() {
            let mut pipe = Pipe::new(full[..cut].to_vec(), 5);
            let result = serve_connection(&mut pipe, &Limits::default(), &mut Echo { begun: 0 });
            let at_boundary = [0, 16, 32, 40, 48].contains(&cut);
            match result {
                Ok(ConnectionEnd::PeerClosed) => assert!(at_boundary, "cut {cut}"),
                Err(ConnectionError::Protocol(ProtocolError::TruncatedRecord { buffered })) => {
                    assert!(!at_boundary, "cut {cut}");
                    assert!(buffered > 0);
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn handler_errors_are_told_apart_from_write_errors() {
        struct Failing;
        impl Handler for Failing {
            fn handle(&mut self, _: &Request, _: &mut ResponseWriter<'_>) -> io::Result<u32> {
                Err(io::Error::other("app broke"))
            }
        }
        let mut pipe = Pipe::new(request(1, false, b""), usize::MAX);
        let err = serve_connection(&mut pipe, &Limits::default(), &mut Failing).unwrap_err();
        assert!(matches!(err, ConnectionError::Handler(_)), "{err:?}");
        assert!(pipe.written.is_empty());
    }
}
