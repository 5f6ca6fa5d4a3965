//! The request assembler: a pure state machine that takes the bytes an application receives
//! on one connection, one record at a time, and turns them into events (a request began, a
//! request is complete, a request ended without the handler) plus the replies the protocol
//! requires (GET_VALUES_RESULT, UNKNOWN_TYPE, END_REQUEST for refused requests).
//!
//! No I/O: the blocking driver (`connection.rs`) and any async driver feed it the same way.
//!
//! Decisions where the spec leaves room, all per connection:
//! - One request at a time (FCGI_MPXS_CONNS = 0). A BEGIN_REQUEST for another id while one is
//!   active gets END_REQUEST(FCGI_CANT_MPX_CONN); the active request goes on. A second
//!   BEGIN_REQUEST for the *active* id is a protocol error.
//! - Records for a request id that is not active (a refused one, or one already answered) are
//!   ignored, as the spec says — except types an application never receives (STDOUT, STDERR,
//!   END_REQUEST, GET_VALUES_RESULT, UNKNOWN_TYPE, undefined numbers), which are a protocol
//!   error on a non-zero id.
//! - Request id 0: GET_VALUES is answered, BEGIN_REQUEST is a protocol error, any other type
//!   is an unknown management record → UNKNOWN_TYPE.
//! - Unknown role (AUTHORIZER and FILTER included) → END_REQUEST(FCGI_UNKNOWN_ROLE); the
//!   connection stays open if that BEGIN_REQUEST had FCGI_KEEP_CONN, and closes otherwise
//!   (as after any END_REQUEST).
//! - ABORT_REQUEST for the request being read → END_REQUEST(FCGI_REQUEST_COMPLETE,
//!   app_status 0): the spec's answer; the handler never sees the request.
//! - STDIN records may arrive before the PARAMS stream ends; DATA records (FILTER only) are
//!   ignored. The request is complete when both PARAMS and STDIN have ended.
//! - A CONTENT_LENGTH above `max_body_bytes` is refused (413) when PARAMS ends, before any
//!   of the body is read.

use super::error::{LimitExceeded, LimitKind, ProtocolError};
use super::limits::Limits;
use super::params::{parse_params, Params, ParamsBuilder};
use super::record::{
    encode_end_request, encode_unknown_type, parse_begin_request, parse_record, ProtocolStatus,
    RecordType, Role, NULL_REQUEST_ID,
};
use super::response::{encode_get_values_result, encode_limit_response, ABORTED_APP_STATUS};

/// A complete request: everything the handler needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The id its END_REQUEST and STDOUT records must carry (nginx always uses 1).
    pub request_id: u16,
    /// Always [`Role::Responder`] today (other roles are refused before a request exists).
    pub role: Role,
    /// The web server asked to keep the connection for further requests.
    pub keep_conn: bool,
    /// The CGI environment (SCRIPT_FILENAME, REQUEST_METHOD, HTTP_* headers, ...).
    pub params: Params,
    /// The whole request body (STDIN stream).
    pub stdin: Vec<u8>,
}

/// What a record meant, when it meant more than "keep reading".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An accepted BEGIN_REQUEST: a request is being read (the worker shows "Reading headers").
    Started { request_id: u16 },
    /// The request's PARAMS and STDIN have both ended: run it.
    Complete(Request),
    /// The request was ended without the handler (ABORT_REQUEST, or an unknown role); its
    /// END_REQUEST is already in the replies. When `keep_conn` is false the connection must
    /// close once the replies are sent.
    Finished { request_id: u16, keep_conn: bool },
}

/// The result of feeding one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of input used (header, content, padding); 0 means a whole record is not there yet.
    pub consumed: usize,
    pub event: Option<Event>,
}

/// Why the assembler stopped: either way the connection must close after sending the replies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A limit was exceeded; the 431/413 answer and END_REQUEST are already in the replies.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
}

/// The request being read.
#[derive(Debug)]
struct Active {
    request_id: u16,
    keep_conn: bool,
    params: ParamsBuilder,
    /// The PARAMS stream has ended (and parsed).
    params_done: Option<Params>,
    stdin: Vec<u8>,
    stdin_done: bool,
}

/// One connection's request assembler.
#[derive(Debug)]
pub struct Assembler {
    limits: Limits,
    active: Option<Active>,
    /// Allocations of the last request, reused by the next one on a keep-conn connection.
    spare: Option<(Params, Vec<u8>)>,
}

/// Initial STDIN capacity when CONTENT_LENGTH announces a body; larger bodies grow the buffer
/// as they arrive, so a lying CONTENT_LENGTH cannot make us reserve memory.
const STDIN_RESERVE_MAX: usize = 1024 * 1024;
/// Largest body buffer kept for reuse by the next request.
pub const SPARE_STDIN_MAX: usize = 1024 * 1024;

impl Assembler {
    pub fn new(limits: &Limits) -> Self {
        Self {
            limits: *limits,
            active: None,
            spare: None,
        }
    }

    /// The request id being read, if any.
    pub fn active_request(&self) -> Option<u16> {
        self.active.as_ref().map(|a| a.request_id)
    }

    /// The request being read has all its params (its body may still be coming).
    pub fn params_complete(&self) -> bool {
        self.active
            .as_ref()
            .is_some_and(|a| a.params_done.is_some())
    }

    /// Give a handled request's allocations back for the next request.
    pub fn recycle(&mut self, request: Request) {
        self.recycle_parts(request.params, request.stdin);
    }

    /// [`Assembler::recycle`] from the parts (buffers kept across connections). A body buffer
    /// larger than [`SPARE_STDIN_MAX`] is dropped, so one big upload does not pin its memory.
    pub fn recycle_parts(&mut self, params: Params, stdin: Vec<u8>) {
        let stdin = if stdin.capacity() > SPARE_STDIN_MAX {
            Vec::new()
        } else {
            stdin
        };
        self.spare = Some((params, stdin));
    }

    /// The allocations to keep for the next connection.
    pub fn into_spare(self) -> Option<(Params, Vec<u8>)> {
        self.spare
    }

    /// Consume at most one record from the start of `input`, appending any reply to `replies`.
    pub fn feed(&mut self, input: &[u8], replies: &mut Vec<u8>) -> Result<Fed, AssembleError> {
        let Some((record, consumed)) = parse_record(input)? else {
            return Ok(Fed {
                consumed: 0,
                event: None,
            });
        };
        let id = record.header.request_id;
        let t = record.header.record_type;
        let event = if id == NULL_REQUEST_ID {
            self.management(t, record.content, replies)?;
            None
        } else {
            match t {
                RecordType::BeginRequest => self.begin(id, record.content, replies)?,
                RecordType::AbortRequest => self.abort(id, replies),
                RecordType::Params => self.params(id, record.content, replies)?,
                RecordType::Stdin => self.stdin(id, record.content, replies)?,
                RecordType::Data => None,
                other => {
                    return Err(ProtocolError::UnexpectedRecord {
                        record_type: other.as_u8(),
                        request_id: id,
                    }
                    .into())
                }
            }
        };
        Ok(Fed { consumed, event })
    }

    fn management(
        &mut self,
        t: RecordType,
        content: &[u8],
        replies: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        match t {
            RecordType::BeginRequest => Err(ProtocolError::BeginWithNullId),
            RecordType::GetValues => {
                let asked = parse_params(content)?;
                encode_get_values_result(replies, &asked, &self.limits);
                Ok(())
            }
            other => {
                encode_unknown_type(replies, other.as_u8());
                Ok(())
            }
        }
    }

    fn begin(
        &mut self,
        id: u16,
        content: &[u8],
        replies: &mut Vec<u8>,
    ) -> Result<Option<Event>, ProtocolError> {
        let body = parse_begin_request(content)?;
        if let Some(active) = &self.active {
            if active.request_id == id {
                return Err(ProtocolError::DuplicateBegin { request_id: id });
            }
            encode_end_request(replies, id, 0, ProtocolStatus::CantMpxConn);
            return Ok(None);
        }
        if Role::from_u16(body.role) != Some(Role::Responder) {
            encode_end_request(replies, id, 0, ProtocolStatus::UnknownRole);
            return Ok(Some(Event::Finished {
                request_id: id,
                keep_conn: body.keep_conn(),
            }));
        }
        let (params, stdin) = self.spare.take().unwrap_or_default();
        let mut stdin = stdin;
        stdin.clear();
        self.active = Some(Active {
            request_id: id,
            keep_conn: body.keep_conn(),
            params: ParamsBuilder::reuse(params),
            params_done: None,
            stdin,
            stdin_done: false,
        });
        Ok(Some(Event::Started { request_id: id }))
    }

    fn abort(&mut self, id: u16, replies: &mut Vec<u8>) -> Option<Event> {
        let active = self.active.as_ref().filter(|a| a.request_id == id)?;
        let keep_conn = active.keep_conn;
        self.active = None;
        encode_end_request(
            replies,
            id,
            ABORTED_APP_STATUS,
            ProtocolStatus::RequestComplete,
        );
        Some(Event::Finished {
            request_id: id,
            keep_conn,
        })
    }

    /// The active request if `id` is it; records for other ids are ignored.
    fn active_for(&mut self, id: u16) -> Option<&mut Active> {
        self.active.as_mut().filter(|a| a.request_id == id)
    }

    /// Answer `limit` and make the connection end.
    fn refuse(&mut self, limit: LimitExceeded, replies: &mut Vec<u8>) -> AssembleError {
        self.active = None;
        encode_limit_response(replies, &limit);
        AssembleError::Limit(limit)
    }

    fn params(
        &mut self,
        id: u16,
        content: &[u8],
        replies: &mut Vec<u8>,
    ) -> Result<Option<Event>, AssembleError> {
        let limits = self.limits;
        let Some(active) = self.active_for(id) else {
            return Ok(None);
        };
        if active.params_done.is_some() {
            return Err(ProtocolError::StreamAfterEnd {
                record_type: RecordType::Params.as_u8(),
                request_id: id,
            }
            .into());
        }
        if !content.is_empty() {
            if let Err(over) = active.params.push_content(content, limits.max_params_bytes) {
                let limit = LimitExceeded {
                    request_id: id,
                    kind: LimitKind::Params,
                    max: limits.max_params_bytes,
                    attempted: over.attempted,
                };
                return Err(self.refuse(limit, replies));
            }
            return Ok(None);
        }
        let params = std::mem::take(&mut active.params).finish()?;
        if let Some(declared) = content_length(&params) {
            if declared > limits.max_body_bytes as u64 {
                let limit = LimitExceeded {
                    request_id: id,
                    kind: LimitKind::Body,
                    max: limits.max_body_bytes,
                    attempted: declared,
                };
                return Err(self.refuse(limit, replies));
            }
            let want = (declared as usize).min(STDIN_RESERVE_MAX);
            active
                .stdin
                .reserve(want.saturating_sub(active.stdin.len()));
        }
        active.params_done = Some(params);
        Ok(self.complete_if_done())
    }

    fn stdin(
        &mut self,
        id: u16,
        content: &[u8],
        replies: &mut Vec<u8>,
    ) -> Result<Option<Event>, AssembleError> {
        let limits = self.limits;
        let Some(active) = self.active_for(id) else {
            return Ok(None);
        };
        if active.stdin_done {
            return Err(ProtocolError::StreamAfterEnd {
                record_type: RecordType::Stdin.as_u8(),
                request_id: id,
            }
            .into());
        }
        if content.is_empty() {
            active.stdin_done = true;
            return Ok(self.complete_if_done());
        }
        let new_len = active.stdin.len() as u64 + content.len() as u64;
        if new_len > limits.max_body_bytes as u64 {
            let limit = LimitExceeded {
                request_id: id,
                kind: LimitKind::Body,
                max: limits.max_body_bytes,
                attempted: new_len,
            };
            return Err(self.refuse(limit, replies));
        }
        active.stdin.extend_from_slice(content);
        Ok(None)
    }

    fn complete_if_done(&mut self) -> Option<Event> {
        let active = self.active.as_mut()?;
        if !active.stdin_done || active.params_done.is_none() {
            return None;
        }
        let active = self.active.take()?;
        Some(Event::Complete(Request {
            request_id: active.request_id,
            role: Role::Responder,
            keep_conn: active.keep_conn,
            params: active.params_done.unwrap_or_default(),
            stdin: active.stdin,
        }))
    }
}

/// CONTENT_LENGTH as a number, when it is one (anything else is the app's business).
fn content_length(params: &Params) -> Option<u64> {
    params.get_str("CONTENT_LENGTH")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::params::encode_params;
    use crate::fastcgi::record::{
        encode_abort_request, encode_begin_request, encode_record, encode_stream,
        parse_end_request, parse_unknown_type, FCGI_CANT_MPX_CONN, FCGI_UNKNOWN_ROLE,
    };
    use proptest::prelude::*;

    fn request_bytes(id: u16, keep: bool, pairs: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let request = crate::fastcgi::ClientRequest {
            params: pairs
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            body: body.to_vec(),
            keep_conn: keep,
        };
        let mut out = Vec::new();
        crate::fastcgi::encode_request(&mut out, id, &request).unwrap();
        out
    }

    /// Feed everything; collect events, replies and the first error.
    fn run(limits: &Limits, input: &[u8]) -> (Vec<Event>, Vec<u8>, Option<AssembleError>, usize) {
        let mut a = Assembler::new(limits);
        let mut replies = Vec::new();
        let mut events = Vec::new();
        let mut at = 0;
        loop {
            match a.feed(&input[at..], &mut replies) {
                Ok(Fed { consumed: 0, .. }) => return (events, replies, None, at),
                Ok(fed) => {
                    at += fed.consumed;
                    events.extend(fed.event);
                }
                Err(e) => return (events, replies, Some(e), at),
            }
        }
    }

    fn reply_records(mut bytes: &[u8]) -> Vec<(RecordType, u16, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((r, used)) = parse_record(bytes).unwrap() {
            out.push((
                r.header.record_type,
                r.header.request_id,
                r.content.to_vec(),
            ));
            bytes = &bytes[used..];
        }
        out
    }

    #[test]
    fn a_simple_request_completes() {
        let input = request_bytes(1, false, &[("REQUEST_METHOD", "GET")], b"");
        let (events, replies, err, used) = run(&Limits::default(), &input);
        assert_eq!(err, None);
        assert_eq!(used, input.len());
        assert!(replies.is_empty());
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], Event::Started { request_id: 1 });
        let Event::Complete(req) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(req.params.get_str("REQUEST_METHOD"), Some("GET"));
        assert!(!req.keep_conn);
        assert!(req.stdin.is_empty());
    }

    #[test]
    fn table_of_refusals_and_errors() {
        let small = Limits {
            max_params_bytes: 64,
            max_body_bytes: 10,
            ..Limits::default()
        };
        let mut begin_null = Vec::new();
        encode_begin_request(&mut begin_null, 0, 1, false);

        let mut after_end = Vec::new();
        encode_begin_request(&mut after_end, 1, 1, true);
        encode_stream(&mut after_end, RecordType::Params, 1, &[]);
        encode_record(&mut after_end, RecordType::Params, 1, &[0, 0]);

        let mut dup = Vec::new();
        encode_begin_request(&mut dup, 4, 1, false);
        encode_begin_request(&mut dup, 4, 1, false);

        let mut stdout_in = Vec::new();
        encode_record(&mut stdout_in, RecordType::Stdout, 1, b"x");

        let mut bad_pair = Vec::new();
        encode_begin_request(&mut bad_pair, 1, 1, false);
        encode_stream(&mut bad_pair, RecordType::Params, 1, &[5, 0, b'a']);

        let mut huge_len = Vec::new();
        encode_begin_request(&mut huge_len, 1, 1, false);
        encode_record(
            &mut huge_len,
            RecordType::Params,
            1,
            &[0xff, 0xff, 0xff, 0xff],
        );

        let mut short_begin = Vec::new();
        encode_record(&mut short_begin, RecordType::BeginRequest, 1, &[0, 1]);

        type Check = fn(&AssembleError) -> bool;
        let table: Vec<(&str, Vec<u8>, Check)> = vec![
            ("begin id 0", begin_null, |e| {
                *e == AssembleError::Protocol(ProtocolError::BeginWithNullId)
            }),
            ("params after end", after_end, |e| {
                matches!(
                    e,
                    AssembleError::Protocol(ProtocolError::StreamAfterEnd { .. })
                )
            }),
            ("duplicate begin", dup, |e| {
                *e == AssembleError::Protocol(ProtocolError::DuplicateBegin { request_id: 4 })
            }),
            ("stdout sent to app", stdout_in, |e| {
                matches!(
                    e,
                    AssembleError::Protocol(ProtocolError::UnexpectedRecord { record_type: 6, .. })
                )
            }),
            ("pair cut by stream end", bad_pair, |e| {
                matches!(
                    e,
                    AssembleError::Protocol(ProtocolError::TruncatedPair { .. })
                )
            }),
            (
                "declared length near 2^31",
                huge_len,
                |e| matches!(e, AssembleError::Limit(LimitExceeded { kind: LimitKind::Params, max: 64, attempted, .. }) if *attempted > 0x7fff_0000),
            ),
            ("begin body of 2 bytes", short_begin, |e| {
                matches!(
                    e,
                    AssembleError::Protocol(ProtocolError::BadBodyLength { len: 2, .. })
                )
            }),
            ("version 0", vec![0, 1, 0, 1, 0, 8, 0, 0], |e| {
                *e == AssembleError::Protocol(ProtocolError::BadVersion { version: 0 })
            }),
            (
                "content length over the body limit",
                request_bytes(1, false, &[("CONTENT_LENGTH", "11")], b""),
                |e| {
                    matches!(
                        e,
                        AssembleError::Limit(LimitExceeded {
                            kind: LimitKind::Body,
                            attempted: 11,
                            ..
                        })
                    )
                },
            ),
            (
                "body over the limit",
                request_bytes(1, false, &[], b"12345678901"),
                |e| {
                    matches!(
                        e,
                        AssembleError::Limit(LimitExceeded {
                            kind: LimitKind::Body,
                            attempted: 11,
                            ..
                        })
                    )
                },
            ),
            (
                "params over the limit",
                request_bytes(1, false, &[("X", &"y".repeat(100))], b""),
                |e| {
                    matches!(
                        e,
                        AssembleError::Limit(LimitExceeded {
                            kind: LimitKind::Params,
                            ..
                        })
                    )
                },
            ),
        ];
        for (name, input, check) in table {
            let (_, replies, err, _) = run(&small, &input);
            let err = err.unwrap_or_else(|| panic!("{name}: no error"));
            assert!(check(&err), "{name}: {err:?}");
            if let AssembleError::Limit(l) = &err {
                let recs = reply_records(&replies);
                assert_eq!(recs.last().unwrap().0, RecordType::EndRequest, "{name}");
                assert!(recs.iter().all(|r| r.1 == l.request_id));
            }
        }
    }

    #[test]
    fn body_exactly_at_the_limit_is_accepted() {
        let limits = Limits {
            max_body_bytes: 10,
            ..Limits::default()
        };
        let input = request_bytes(1, false, &[("CONTENT_LENGTH", "10")], b"1234567890");
        let (events, _, err, _) = run(&limits, &input);
        assert_eq!(err, None);
        assert!(matches!(&events[1], Event::Complete(r) if r.stdin == b"1234567890"));
    }

    #[test]
    fn management_records() {
        let mut input = Vec::new();
        let mut names = Vec::new();
        encode_params(
            &mut names,
            [(&b"FCGI_MPXS_CONNS"[..], &b""[..]), (b"X", b"")],
        )
        .unwrap();
        encode_record(&mut input, RecordType::GetValues, 0, &names);
        encode_record(&mut input, RecordType::Other(42), 0, b"whatever");
        encode_record(&mut input, RecordType::Stdin, 0, b"");
        let (events, replies, err, _) = run(&Limits::default(), &input);
        assert_eq!((events, err), (vec![], None));
        let recs = reply_records(&replies);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].0, RecordType::GetValuesResult);
        let got = parse_params(&recs[0].2).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got.get_str("FCGI_MPXS_CONNS"), Some("0"));
        assert_eq!(recs[1].0, RecordType::UnknownType);
        assert_eq!(parse_unknown_type(&recs[1].2).unwrap(), 42);
        assert_eq!(parse_unknown_type(&recs[2].2).unwrap(), 5);
    }

    #[test]
    fn unknown_roles_are_refused_and_their_records_ignored() {
        for (role, keep) in [(2u16, true), (3, false), (0, true), (999, false)] {
            let mut input = Vec::new();
            encode_begin_request(&mut input, 1, role, keep);
            encode_stream(&mut input, RecordType::Params, 1, &[0, 0]);
            encode_stream(&mut input, RecordType::Stdin, 1, b"");
            let (events, replies, err, _) = run(&Limits::default(), &input);
            assert_eq!(err, None);
            assert_eq!(
                events,
                vec![Event::Finished {
                    request_id: 1,
                    keep_conn: keep
                }],
                "role {role}"
            );
            let recs = reply_records(&replies);
            assert_eq!(recs.len(), 1);
            let end = parse_end_request(&recs[0].2).unwrap();
            assert_eq!(end.protocol_status, FCGI_UNKNOWN_ROLE);
        }
    }

    #[test]
    fn second_request_id_gets_cant_mpx_and_the_first_goes_on() {
        let mut input = Vec::new();
        encode_begin_request(&mut input, 1, 1, false);
        encode_begin_request(&mut input, 2, 1, false);
        encode_stream(&mut input, RecordType::Params, 2, &[1, 1, b'B', b'2']);
        encode_stream(&mut input, RecordType::Params, 1, &[1, 1, b'A', b'1']);
        encode_stream(&mut input, RecordType::Stdin, 2, b"two");
        encode_stream(&mut input, RecordType::Stdin, 1, b"one");
        let (events, replies, err, _) = run(&Limits::default(), &input);
        assert_eq!(err, None);
        let recs = reply_records(&replies);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].1, 2);
        assert_eq!(
            parse_end_request(&recs[0].2).unwrap().protocol_status,
            FCGI_CANT_MPX_CONN
        );
        let Some(Event::Complete(req)) = events.last() else {
            panic!("{events:?}")
        };
        assert_eq!(req.request_id, 1);
        assert_eq!(req.params.get_str("A"), Some("1"));
        assert_eq!(req.params.get("B"), None);
        assert_eq!(req.stdin, b"one");
    }

    #[test]
    fn abort_drops_the_active_request() {
        let mut input = Vec::new();
        encode_begin_request(&mut input, 1, 1, true);
        encode_record(&mut input, RecordType::Params, 1, &[1, 1, b'A', b'1']);
        encode_abort_request(&mut input, 1);
        encode_abort_request(&mut input, 1); // no longer active: ignored
        encode_stream(&mut input, RecordType::Stdin, 1, b""); // ignored too
        input.extend(request_bytes(2, false, &[], b"x"));
        let (events, replies, err, _) = run(&Limits::default(), &input);
        assert_eq!(err, None);
        assert_eq!(
            events[1],
            Event::Finished {
                request_id: 1,
                keep_conn: true
            }
        );
        assert!(matches!(&events[3], Event::Complete(r) if r.request_id == 2 && r.stdin == b"x"));
        let recs = reply_records(&replies);
        assert_eq!(recs.len(), 1);
        let end = parse_end_request(&recs[0].2).unwrap();
        assert_eq!((end.app_status, end.protocol_status), (0, 0));
    }

    #[test]
    fn stdin_before_params_end_and_data_ignored() {
        let mut input = Vec::new();
        encode_begin_request(&mut input, 7, 1, false);
        encode_record(&mut input, RecordType::Stdin, 7, b"ab");
        encode_record(&mut input, RecordType::Data, 7, b"ignored");
        encode_record(&mut input, RecordType::Params, 7, &[1, 0, b'K']);
        encode_stream(&mut input, RecordType::Stdin, 7, b"c");
        encode_stream(&mut input, RecordType::Params, 7, &[]);
        let (events, _, err, _) = run(&Limits::default(), &input);
        assert_eq!(err, None);
        assert!(
            matches!(&events[1], Event::Complete(r) if r.stdin == b"abc" && r.params.get_str("K") == Some(""))
        );
    }

    #[test]
    fn recycled_buffers_do_not_leak_old_data() {
        let limits = Limits::default();
        let mut a = Assembler::new(&limits);
        let mut replies = Vec::new();
        let mut feed_all = |a: &mut Assembler, input: &[u8]| -> Request {
            let mut at = 0;
            loop {
                let fed = a.feed(&input[at..], &mut replies).unwrap();
                at += fed.consumed;
                if let Some(Event::Complete(r)) = fed.event {
                    return r;
                }
                assert!(fed.consumed > 0);
            }
        };
        let first = feed_all(&mut a, &request_bytes(1, true, &[("A", "1")], b"body"));
        a.recycle(first);
        let second = feed_all(&mut a, &request_bytes(1, true, &[("B", "2")], b""));
        assert_eq!(second.params.len(), 1);
        assert_eq!(second.params.get("A"), None);
        assert!(second.stdin.is_empty());
    }

    proptest! {
        #[test]
        fn byte_by_byte_equals_all_at_once(
            pairs in proptest::collection::vec(("[A-Z_]{0,130}", "[ -~]{0,140}"), 0..5),
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let input = request_bytes(3, true, &pairs, &body);
            let (want, _, err, _) = run(&Limits::default(), &input);
            prop_assert_eq!(err, None);
            // Feed a growing window, one byte more each time, as a slow socket would.
            let mut a = Assembler::new(&Limits::default());
            let mut replies = Vec::new();
            let mut events = Vec::new();
            let (mut start, mut end) = (0, 0);
            while end < input.len() {
                end += 1;
                loop {
                    let fed = a.feed(&input[start..end], &mut replies).unwrap();
                    if fed.consumed == 0 { break; }
                    start += fed.consumed;
                    events.extend(fed.event);
                }
            }
            prop_assert_eq!(start, input.len());
            prop_assert_eq!(events, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut prefixed = Vec::new();
            encode_begin_request(&mut prefixed, 1, 1, true);
            prefixed.extend_from_slice(&input);
            let _ = run(&Limits { max_params_bytes: 50, max_body_bytes: 50, ..Limits::default() }, &input);
            let _ = run(&Limits::default(), &prefixed);
        }
    }
}
