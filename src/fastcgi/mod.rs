//! The FastCGI 1.0 protocol (DESIGN.md §4): records, name-value pairs, request assembly and
//! response encoding as pure parsers (nom, no I/O); the blocking connection driver; the
//! client.
//!
//! One concern per file:
//! - `record`: headers, record types, fixed bodies, parse one record, encode records.
//! - `params`: name-value pairs (1- and 4-byte lengths), [`Params`], the PARAMS collector.
//! - `assemble`: bytes in → events out, one connection's request state machine.
//! - `response`: [`ResponseWriter`], END_REQUEST, GET_VALUES_RESULT, 431/413 answers.
//! - `connection`: [`serve_connection`] over any `Read + Write`.
//! - `client`, `client_reader`, `connect`: round trips, GET_VALUES, the response reader,
//!   non-blocking connect with retries.
//! - `limits`, `error`: [`Limits`], [`ProtocolError`], [`LimitExceeded`].

pub mod assemble;
pub mod client;
pub mod client_reader;
pub mod connect;
pub mod connection;
pub mod error;
pub mod limits;
pub mod params;
pub mod record;
pub mod response;

pub use assemble::{AssembleError, Assembler, Event, Fed, Request};
pub use client::{
    connect_with_retry, encode_request, get_values, is_retryable, parse_response, round_trip,
    ClientError, ClientRequest, ClientResponse, ClientStream, RetryPolicy,
};
pub use client_reader::ResponseReader;
pub use connection::{
    respond, serve_connection, serve_connection_with, ConnectionBuffers, ConnectionEnd,
    ConnectionError, Handler,
};
pub use error::{LimitExceeded, LimitKind, ProtocolError};
pub use limits::Limits;
pub use params::{
    encode_pair, encode_params, pair_lengths, parse_pair, parse_params, PairTooLong, Params,
    ParamsBuilder,
};
pub use record::{
    encode_abort_request, encode_begin_request, encode_end_request, encode_record, encode_stream,
    encode_unknown_type, parse_begin_request, parse_end_request, parse_record, parse_unknown_type,
    BeginRequestBody, EndRequestBody, ProtocolStatus, Record, RecordHeader, RecordType, Role,
    FCGI_CANT_MPX_CONN, FCGI_KEEP_CONN, FCGI_OVERLOADED, FCGI_REQUEST_COMPLETE, FCGI_UNKNOWN_ROLE,
    FCGI_VERSION_1, HEADER_LEN, MAX_CONTENT_LEN, MAX_RECORD_LEN, NULL_REQUEST_ID,
};
pub use response::{
    encode_get_values_result, encode_limit_response, encode_whole_response, limit_response_body,
    ResponseWriter, ABORTED_APP_STATUS, FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS,
    LIMIT_APP_STATUS,
};
