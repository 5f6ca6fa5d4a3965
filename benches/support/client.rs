//! One FastCGI request over a fresh unix-socket connection, bounded in time: connect, one write,
//! read records until END_REQUEST, check the body. Errors are classified, not allocated, so the
//! hot loop stays cheap and every server pays exactly the same client cost.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::fcgi::{self, Expect};

/// A response larger than this is not one of ours: give the connection up.
const MAX_RESPONSE: usize = 1 << 20;

/// Why a request did not count as a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    /// `connect()` failed (server gone, queue full, socket missing).
    Connect(io::ErrorKind),
    /// Reading or writing failed.
    Io(io::ErrorKind),
    /// The server sent nothing for a whole request timeout (every read is bounded by it).
    Timeout,
    /// The peer closed before END_REQUEST.
    Truncated,
    /// The bytes were not FastCGI, or the response was absurdly long.
    Protocol,
    /// A complete response, but not the expected body.
    WrongBody,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(kind) => write!(f, "connect failed ({kind})"),
            Failure::Io(kind) => write!(f, "i/o error ({kind})"),
            Failure::Timeout => f.write_str("timed out"),
            Failure::Truncated => f.write_str("connection closed before END_REQUEST"),
            Failure::Protocol => f.write_str("not a FastCGI response"),
            Failure::WrongBody => f.write_str("unexpected response body"),
        }
    }
}

/// Buffers one client thread reuses across requests, so a request allocates nothing.
#[derive(Default)]
pub struct Scratch {
    /// Raw bytes read from the socket, records not yet consumed.
    received: Vec<u8>,
    /// Concatenated STDOUT content of the current response.
    pub stdout: Vec<u8>,
}

fn io_failure(err: io::Error) -> Failure {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
        kind => Failure::Io(kind),
    }
}

/// Sends `request` on a new connection to `socket` and reads the whole response into
/// `scratch.stdout`. Succeeds once END_REQUEST arrived; the body is not checked here.
pub fn fetch(
    socket: &Path,
    request: &[u8],
    timeout: Duration,
    scratch: &mut Scratch,
) -> Result<(), Failure> {
    scratch.received.clear();
    scratch.stdout.clear();
    let mut stream = UnixStream::connect(socket).map_err(|e| Failure::Connect(e.kind()))?;
    // Only reads get a timeout: the one small write lands in the new socket's receive buffer
    // even before the server accepts, and a second setsockopt per request would be client
    // overhead charged to every scenario.
    stream.set_read_timeout(Some(timeout)).map_err(io_failure)?;
    stream.write_all(request).map_err(io_failure)?;
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).map_err(io_failure)?;
        if n == 0 {
            return Err(Failure::Truncated);
        }
        if scratch.received.len() + n > MAX_RESPONSE {
            return Err(Failure::Protocol);
        }
        scratch.received.extend_from_slice(&chunk[..n]);
        let mut consumed = 0;
        let mut ended = false;
        while let Some((record, used)) =
            fcgi::parse_record(&scratch.received[consumed..]).map_err(|_| Failure::Protocol)?
        {
            match record.kind {
                fcgi::STDOUT => scratch.stdout.extend_from_slice(record.content),
                fcgi::END_REQUEST => ended = true,
                _ => {}
            }
            consumed += used;
            if ended {
                return Ok(());
            }
        }
        scratch.received.drain(..consumed);
    }
}

/// One complete request: fetch, then check the body against `expect`.
pub fn request(
    socket: &Path,
    request: &[u8],
    expect: Expect,
    timeout: Duration,
    scratch: &mut Scratch,
) -> Result<(), Failure> {
    fetch(socket, request, timeout, scratch)?;
    if expect.matches(&scratch.stdout) {
        Ok(())
    } else {
        Err(Failure::WrongBody)
    }
}
