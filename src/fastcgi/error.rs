//! The typed errors of the FastCGI parsers: what makes a byte stream unreadable
//! ([`ProtocolError`]) and which configured limit a request broke ([`LimitExceeded`]).
//!
//! Both are values, never panics: the connection driver turns them into one log line and a
//! closed connection, and every other connection goes on.

use std::fmt;

/// Why a FastCGI byte stream cannot be read any further. Every variant means "close this
/// connection": after it, record boundaries can no longer be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// FastCGI 1.0 only knows version 1; anything else is garbage or another protocol
    /// (an HTTP request sent to the FastCGI port starts with `G` = version 71).
    #[error("unsupported FastCGI version {version} (only version 1 exists)")]
    BadVersion { version: u8 },
    /// Request id 0 is reserved for management records; a request cannot use it.
    #[error("BEGIN_REQUEST with request id 0 (reserved for management records)")]
    BeginWithNullId,
    /// A record type the peer has no business sending to this side, e.g. STDOUT sent to the
    /// application, or STDIN sent to a client.
    #[error("unexpected {} record for request id {request_id}", type_name(*record_type))]
    UnexpectedRecord { record_type: u8, request_id: u16 },
    /// A fixed-size body (BEGIN_REQUEST, END_REQUEST, UNKNOWN_TYPE: 8 bytes) of another size.
    #[error("{} record body is {len} bytes, expected {expected}", type_name(*record_type))]
    BadBodyLength {
        record_type: u8,
        len: usize,
        expected: usize,
    },
    /// A second BEGIN_REQUEST for the request that is already running.
    #[error("second BEGIN_REQUEST for active request id {request_id}")]
    DuplicateBegin { request_id: u16 },
    /// Content after the empty record that ended a PARAMS or STDIN stream.
    #[error("{} record after the end of its stream (request id {request_id})", type_name(*record_type))]
    StreamAfterEnd { record_type: u8, request_id: u16 },
    /// The name-value pairs of a PARAMS stream or GET_VALUES record end in the middle of a pair.
    #[error("name-value pairs end in the middle of a pair at byte {offset} of {len}")]
    TruncatedPair { offset: usize, len: usize },
    /// The peer closed the connection in the middle of a record.
    #[error("connection closed in the middle of a record ({buffered} bytes of it received)")]
    TruncatedRecord { buffered: usize },
    /// A response stream ended before its END_REQUEST (client side).
    #[error("connection closed before END_REQUEST ({received} bytes of response received)")]
    ClosedBeforeEnd { received: usize },
}

/// Which configured limit a request exceeded; it decides the HTTP status of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `max_params`: the request's PARAMS stream (its CGI headers) is too large → 431.
    Params,
    /// `max_body`: the request body (STDIN stream) is too large → 413.
    Body,
}

impl LimitKind {
    /// The config key a user would change, named in the error and in the response body.
    pub fn key(self) -> &'static str {
        match self {
            LimitKind::Params => "max_params",
            LimitKind::Body => "max_body",
        }
    }

    /// The CGI `Status:` value the request is answered with.
    pub fn status_line(self) -> &'static str {
        match self {
            LimitKind::Params => "431 Request Header Fields Too Large",
            LimitKind::Body => "413 Content Too Large",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A request broke a configured limit. It has already been answered (431/413 + END_REQUEST);
/// the connection must be closed because the rest of its input is not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request {request_id}: {kind} = {max} exceeded (at least {attempted} bytes), answered {}", kind.status_line())]
pub struct LimitExceeded {
    /// The refused request (its answer carries this id).
    pub request_id: u16,
    /// Which limit, hence which status (431 or 413).
    pub kind: LimitKind,
    /// The configured maximum, in bytes.
    pub max: usize,
    /// How many bytes the request had (or declared) when it was stopped — a lower bound,
    /// because the rest is never read.
    pub attempted: u64,
}

/// A readable name for a record type number, for error messages.
pub fn type_name(record_type: u8) -> String {
    match super::record::RecordType::from_u8(record_type) {
        super::record::RecordType::Other(n) => format!("type-{n}"),
        known => known.name().to_string(),
    }
}
