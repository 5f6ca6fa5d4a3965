//! FastCGI 1.0 records: the 8-byte header, the record types, the fixed-size bodies
//! (BEGIN_REQUEST, END_REQUEST, UNKNOWN_TYPE), parsing one record out of a byte buffer, and
//! encoding records (content split into records of at most 65535 bytes, each padded to a
//! multiple of 8).
//!
//! Parsing is pure (nom, streaming): a buffer holding less than one whole record is
//! `Ok(None)`, never an error.

use nom::number::streaming::{be_u16, be_u8};
use nom::IResult;

use super::error::ProtocolError;

/// The only FastCGI version there is.
pub const FCGI_VERSION_1: u8 = 1;
/// Size of a record header on the wire.
pub const HEADER_LEN: usize = 8;
/// Largest content of one record (`contentLength` is 16 bits).
pub const MAX_CONTENT_LEN: usize = 65535;
/// Largest record on the wire: header + content + padding (`paddingLength` is 8 bits).
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_CONTENT_LEN + 255;
/// The request id of management records (GET_VALUES and unknown types).
pub const NULL_REQUEST_ID: u16 = 0;
/// BEGIN_REQUEST flag: keep the connection open after this request.
pub const FCGI_KEEP_CONN: u8 = 1;

/// The record types of FastCGI 1.0, plus the numbers it does not define.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    BeginRequest,
    AbortRequest,
    EndRequest,
    Params,
    Stdin,
    Stdout,
    Stderr,
    Data,
    GetValues,
    GetValuesResult,
    UnknownType,
    /// A type number FastCGI 1.0 does not define; kept so that it can be reported back in
    /// UNKNOWN_TYPE.
    Other(u8),
}

impl RecordType {
    pub fn from_u8(n: u8) -> Self {
        match n {
            1 => Self::BeginRequest,
            2 => Self::AbortRequest,
            3 => Self::EndRequest,
            4 => Self::Params,
            5 => Self::Stdin,
            6 => Self::Stdout,
            7 => Self::Stderr,
            8 => Self::Data,
            9 => Self::GetValues,
            10 => Self::GetValuesResult,
            11 => Self::UnknownType,
            other => Self::Other(other),
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Self::BeginRequest => 1,
            Self::AbortRequest => 2,
            Self::EndRequest => 3,
            Self::Params => 4,
            Self::Stdin => 5,
            Self::Stdout => 6,
            Self::Stderr => 7,
            Self::Data => 8,
            Self::GetValues => 9,
            Self::GetValuesResult => 10,
            Self::UnknownType => 11,
            Self::Other(n) => n,
        }
    }

    /// The spec's name, for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::BeginRequest => "BEGIN_REQUEST",
            Self::AbortRequest => "ABORT_REQUEST",
            Self::EndRequest => "END_REQUEST",
            Self::Params => "PARAMS",
            Self::Stdin => "STDIN",
            Self::Stdout => "STDOUT",
            Self::Stderr => "STDERR",
            Self::Data => "DATA",
            Self::GetValues => "GET_VALUES",
            Self::GetValuesResult => "GET_VALUES_RESULT",
            Self::UnknownType => "UNKNOWN_TYPE",
            Self::Other(_) => "unknown-type",
        }
    }
}

/// The role a BEGIN_REQUEST asks the application to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// 1: the ordinary CGI-like role, the only one fastpm serves.
    Responder,
    /// 2: answered with FCGI_UNKNOWN_ROLE for now.
    Authorizer,
    /// 3: answered with FCGI_UNKNOWN_ROLE for now.
    Filter,
}

impl Role {
    pub fn from_u16(n: u16) -> Option<Self> {
        match n {
            1 => Some(Self::Responder),
            2 => Some(Self::Authorizer),
            3 => Some(Self::Filter),
            _ => None,
        }
    }

    pub fn as_u16(self) -> u16 {
        match self {
            Self::Responder => 1,
            Self::Authorizer => 2,
            Self::Filter => 3,
        }
    }
}

/// END_REQUEST's `protocolStatus`: how the request ended at the protocol level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolStatus {
    /// 0: normal end (also used for aborted and limit-rejected requests).
    RequestComplete,
    /// 1: a second request on a connection that does not multiplex.
    CantMpxConn,
    /// 2: the application is out of a resource (fastpm: shed by the overload policy).
    Overloaded,
    /// 3: the BEGIN_REQUEST asked for a role the application does not play.
    UnknownRole,
}

/// Numeric protocol status values, for code that keeps the raw byte (e.g. `ClientResponse`).
pub const FCGI_REQUEST_COMPLETE: u8 = 0;
pub const FCGI_CANT_MPX_CONN: u8 = 1;
pub const FCGI_OVERLOADED: u8 = 2;
pub const FCGI_UNKNOWN_ROLE: u8 = 3;

impl ProtocolStatus {
    pub fn as_u8(self) -> u8 {
        match self {
            Self::RequestComplete => FCGI_REQUEST_COMPLETE,
            Self::CantMpxConn => FCGI_CANT_MPX_CONN,
            Self::Overloaded => FCGI_OVERLOADED,
            Self::UnknownRole => FCGI_UNKNOWN_ROLE,
        }
    }

    pub fn from_u8(n: u8) -> Option<Self> {
        match n {
            FCGI_REQUEST_COMPLETE => Some(Self::RequestComplete),
            FCGI_CANT_MPX_CONN => Some(Self::CantMpxConn),
            FCGI_OVERLOADED => Some(Self::Overloaded),
            FCGI_UNKNOWN_ROLE => Some(Self::UnknownRole),
            _ => None,
        }
    }
}

/// A record header as it is on the wire (version not yet checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Must be 1; anything else is refused (garbage, or another protocol on the port).
    pub version: u8,
    pub record_type: RecordType,
    /// 0 for management records, else the request the record belongs to.
    pub request_id: u16,
    /// Bytes of content that follow the header.
    pub content_length: u16,
    /// Bytes of padding after the content (ignored; they align records to 8 bytes).
    pub padding_length: u8,
}

impl RecordHeader {
    /// Header + content + padding: how many bytes this record occupies.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + self.content_length as usize + self.padding_length as usize
    }
}

/// One record, borrowing its content from the input buffer (no copy, no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub header: RecordHeader,
    /// The content, without the padding.
    pub content: &'a [u8],
}

/// nom parser of the 8-byte header (streaming: fewer than 8 bytes is `Incomplete`).
pub fn header(input: &[u8]) -> IResult<&[u8], RecordHeader> {
    let (input, version) = be_u8(input)?;
    let (input, record_type) = be_u8(input)?;
    let (input, request_id) = be_u16(input)?;
    let (input, content_length) = be_u16(input)?;
    let (input, padding_length) = be_u8(input)?;
    let (input, _reserved) = be_u8(input)?;
    Ok((
        input,
        RecordHeader {
            version,
            record_type: RecordType::from_u8(record_type),
            request_id,
            content_length,
            padding_length,
        },
    ))
}

/// Parse one record from the start of `input`.
///
/// `Ok(None)`: not all of the record is there yet (read more). `Ok(Some((record, used)))`:
/// `used` bytes (header, content and padding) belong to it. The version is checked as soon as
/// the first byte is there, so garbage is refused without waiting for more of it.
pub fn parse_record(input: &[u8]) -> Result<Option<(Record<'_>, usize)>, ProtocolError> {
    if let Some(&version) = input.first() {
        if version != FCGI_VERSION_1 {
            return Err(ProtocolError::BadVersion { version });
        }
    }
    let Ok((rest, header)) = header(input) else {
        return Ok(None);
    };
    let content_len = header.content_length as usize;
    let used = header.record_len();
    if input.len() < used {
        return Ok(None);
    }
    let content = &rest[..content_len];
    Ok(Some((Record { header, content }, used)))
}

/// The BEGIN_REQUEST body: which role, and whether to keep the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeginRequestBody {
    /// The raw role number: unknown numbers must still be answered (FCGI_UNKNOWN_ROLE).
    pub role: u16,
    /// Bit 0 is FCGI_KEEP_CONN; the others are reserved and ignored.
    pub flags: u8,
}

impl BeginRequestBody {
    pub fn keep_conn(&self) -> bool {
        self.flags & FCGI_KEEP_CONN != 0
    }
}

/// The fixed body size of BEGIN_REQUEST, END_REQUEST and UNKNOWN_TYPE.
pub const FIXED_BODY_LEN: usize = 8;

fn check_fixed_len(record_type: RecordType, content: &[u8]) -> Result<(), ProtocolError> {
    if content.len() == FIXED_BODY_LEN {
        Ok(())
    } else {
        Err(ProtocolError::BadBodyLength {
            record_type: record_type.as_u8(),
            len: content.len(),
            expected: FIXED_BODY_LEN,
        })
    }
}

fn begin_body(input: &[u8]) -> IResult<&[u8], BeginRequestBody> {
    let (input, role) = be_u16(input)?;
    let (input, flags) = be_u8(input)?;
    Ok((input, BeginRequestBody { role, flags }))
}

/// Parse a BEGIN_REQUEST record's content (exactly 8 bytes).
pub fn parse_begin_request(content: &[u8]) -> Result<BeginRequestBody, ProtocolError> {
    check_fixed_len(RecordType::BeginRequest, content)?;
    begin_body(content)
        .map(|(_, body)| body)
        .map_err(|_| ProtocolError::BadBodyLength {
            record_type: RecordType::BeginRequest.as_u8(),
            len: content.len(),
            expected: FIXED_BODY_LEN,
        })
}

/// The END_REQUEST body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndRequestBody {
    /// The application's exit status (like a CGI program's).
    pub app_status: u32,
    /// Raw protocol status: a client reports unknown values instead of failing on them.
    pub protocol_status: u8,
}

fn end_body(input: &[u8]) -> IResult<&[u8], EndRequestBody> {
    let (input, app_status) = nom::number::streaming::be_u32(input)?;
    let (input, protocol_status) = be_u8(input)?;
    Ok((
        input,
        EndRequestBody {
            app_status,
            protocol_status,
        },
    ))
}

/// Parse an END_REQUEST record's content (exactly 8 bytes).
pub fn parse_end_request(content: &[u8]) -> Result<EndRequestBody, ProtocolError> {
    check_fixed_len(RecordType::EndRequest, content)?;
    end_body(content)
        .map(|(_, body)| body)
        .map_err(|_| ProtocolError::BadBodyLength {
            record_type: RecordType::EndRequest.as_u8(),
            len: content.len(),
            expected: FIXED_BODY_LEN,
        })
}

/// Parse an UNKNOWN_TYPE record's content: the type number the peer did not understand.
pub fn parse_unknown_type(content: &[u8]) -> Result<u8, ProtocolError> {
    check_fixed_len(RecordType::UnknownType, content)?;
    Ok(content[0])
}

/// Padding that brings `content_len` to a multiple of 8 (the spec's recommendation; nginx
/// does it too).
pub fn padding_for(content_len: usize) -> u8 {
    ((8 - content_len % 8) % 8) as u8
}

const ZEROS: [u8; 8] = [0; 8];

/// Append one record header + `content` (at most 65535 bytes) + padding.
fn push_one(out: &mut Vec<u8>, record_type: RecordType, request_id: u16, content: &[u8]) {
    debug_assert!(content.len() <= MAX_CONTENT_LEN);
    let len = content.len() as u16;
    let padding = padding_for(content.len());
    let id = request_id.to_be_bytes();
    let len_bytes = len.to_be_bytes();
    out.extend_from_slice(&[
        FCGI_VERSION_1,
        record_type.as_u8(),
        id[0],
        id[1],
        len_bytes[0],
        len_bytes[1],
        padding,
        0,
    ]);
    out.extend_from_slice(content);
    out.extend_from_slice(&ZEROS[..padding as usize]);
}

/// Append `content` as records of `record_type`: one record when it fits in 65535 bytes, else
/// as many full records as needed. Empty content gives one empty record — which, for a
/// stream type (PARAMS, STDIN, STDOUT, STDERR, DATA), is the end-of-stream marker.
pub fn encode_record(out: &mut Vec<u8>, record_type: RecordType, request_id: u16, content: &[u8]) {
    if content.is_empty() {
        push_one(out, record_type, request_id, content);
        return;
    }
    out.reserve(content.len() + (content.len() / MAX_CONTENT_LEN + 1) * (HEADER_LEN + 8));
    for chunk in content.chunks(MAX_CONTENT_LEN) {
        push_one(out, record_type, request_id, chunk);
    }
}

/// Append a whole stream: `content` as records (none when it is empty) followed by the empty
/// record that ends the stream.
pub fn encode_stream(out: &mut Vec<u8>, record_type: RecordType, request_id: u16, content: &[u8]) {
    if !content.is_empty() {
        encode_record(out, record_type, request_id, content);
    }
    push_one(out, record_type, request_id, &[]);
}

/// Append a BEGIN_REQUEST record. `role` is raw so that tests can send unknown roles.
pub fn encode_begin_request(out: &mut Vec<u8>, request_id: u16, role: u16, keep_conn: bool) {
    let r = role.to_be_bytes();
    let flags = if keep_conn { FCGI_KEEP_CONN } else { 0 };
    push_one(
        out,
        RecordType::BeginRequest,
        request_id,
        &[r[0], r[1], flags, 0, 0, 0, 0, 0],
    );
}

/// Append an ABORT_REQUEST record.
pub fn encode_abort_request(out: &mut Vec<u8>, request_id: u16) {
    push_one(out, RecordType::AbortRequest, request_id, &[]);
}

/// Append an END_REQUEST record.
pub fn encode_end_request(
    out: &mut Vec<u8>,
    request_id: u16,
    app_status: u32,
    protocol_status: ProtocolStatus,
) {
    let a = app_status.to_be_bytes();
    push_one(
        out,
        RecordType::EndRequest,
        request_id,
        &[a[0], a[1], a[2], a[3], protocol_status.as_u8(), 0, 0, 0],
    );
}

/// Append an UNKNOWN_TYPE management record naming the type that was not understood.
pub fn encode_unknown_type(out: &mut Vec<u8>, unknown: u8) {
    push_one(
        out,
        RecordType::UnknownType,
        NULL_REQUEST_ID,
        &[unknown, 0, 0, 0, 0, 0, 0, 0],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw(version: u8, t: u8, id: u16, len: u16, pad: u8) -> Vec<u8> {
        let mut v = vec![version, t];
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
        v.push(pad);
        v.push(0);
        v.extend(std::iter::repeat_n(b'x', len as usize));
        v.extend(std::iter::repeat_n(0, pad as usize));
        v
    }

    #[test]
    fn every_type_number_round_trips() {
        for n in 0..=255u8 {
            assert_eq!(RecordType::from_u8(n).as_u8(), n);
        }
        let known: Vec<u8> = (1..=11).collect();
        for n in known {
            assert!(!matches!(RecordType::from_u8(n), RecordType::Other(_)));
        }
        assert_eq!(RecordType::from_u8(0), RecordType::Other(0));
        assert_eq!(RecordType::from_u8(12), RecordType::Other(12));
    }

    #[test]
    fn parse_record_table() {
        // (input, expected: Err, None (need more), or Some(content_len, used))
        type Want = Result<Option<(usize, usize)>, ProtocolError>;
        let full_65535 = raw(1, 5, 1, 65535, 1);
        let table: Vec<(&str, Vec<u8>, Want)> = vec![
            ("empty input", vec![], Ok(None)),
            ("one byte", vec![1], Ok(None)),
            ("seven bytes", raw(1, 5, 1, 0, 0)[..7].to_vec(), Ok(None)),
            ("empty record", raw(1, 5, 1, 0, 0), Ok(Some((0, 8)))),
            ("content 3 pad 5", raw(1, 4, 1, 3, 5), Ok(Some((3, 16)))),
            (
                "padding missing",
                raw(1, 4, 1, 3, 5)[..15].to_vec(),
                Ok(None),
            ),
            (
                "65535 content",
                full_65535.clone(),
                Ok(Some((65535, 65544))),
            ),
            (
                "65535 minus one byte",
                full_65535[..full_65535.len() - 1].to_vec(),
                Ok(None),
            ),
            (
                "version 0",
                raw(0, 1, 1, 8, 0),
                Err(ProtocolError::BadVersion { version: 0 }),
            ),
            (
                "version 2",
                raw(2, 1, 1, 8, 0),
                Err(ProtocolError::BadVersion { version: 2 }),
            ),
            (
                "http request",
                b"GET / HTTP/1.1\r\n".to_vec(),
                Err(ProtocolError::BadVersion { version: b'G' }),
            ),
            (
                "garbage first byte only",
                vec![0xff],
                Err(ProtocolError::BadVersion { version: 0xff }),
            ),
            ("max padding", raw(1, 6, 7, 1, 255), Ok(Some((1, 264)))),
        ];
        for (name, input, want) in table {
            let got = parse_record(&input).map(|o| o.map(|(r, used)| (r.content.len(), used)));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn trailing_bytes_belong_to_the_next_record() {
        let mut input = raw(1, 4, 3, 2, 6);
        input.extend_from_slice(&[1, 5]);
        let (record, used) = parse_record(&input).unwrap().unwrap();
        assert_eq!(used, 16);
        assert_eq!(record.header.request_id, 3);
        assert_eq!(record.header.record_type, RecordType::Params);
        assert_eq!(record.content, b"xx");
    }

    #[test]
    fn encode_pads_to_eight_and_splits_above_65535() {
        let table: &[(usize, &[(usize, usize)])] = &[
            // content length → [(record content, padding)]
            (0, &[(0, 0)]),
            (1, &[(1, 7)]),
            (8, &[(8, 0)]),
            (127, &[(127, 1)]),
            (128, &[(128, 0)]),
            (65535, &[(65535, 1)]),
            (65536, &[(65535, 1), (1, 7)]),
            (65535 * 2 + 3, &[(65535, 1), (65535, 1), (3, 5)]),
        ];
        for (len, want) in table {
            let content: Vec<u8> = (0..*len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            encode_record(&mut out, RecordType::Stdout, 9, &content);
            let mut rest = &out[..];
            let mut got = Vec::new();
            let mut joined = Vec::new();
            while !rest.is_empty() {
                let (r, used) = parse_record(rest).unwrap().unwrap();
                assert_eq!(r.header.request_id, 9);
                assert_eq!(r.header.record_type, RecordType::Stdout);
                assert_eq!(used % 8, 0, "records are padded to 8");
                got.push((r.content.len(), r.header.padding_length as usize));
                joined.extend_from_slice(r.content);
                rest = &rest[used..];
            }
            assert_eq!(&got[..], *want, "content length {len}");
            assert_eq!(joined, content);
        }
    }

    #[test]
    fn fixed_bodies_round_trip_and_reject_wrong_sizes() {
        let mut out = Vec::new();
        encode_begin_request(&mut out, 1, 1, true);
        let (r, _) = parse_record(&out).unwrap().unwrap();
        assert_eq!(
            parse_begin_request(r.content).unwrap(),
            BeginRequestBody { role: 1, flags: 1 }
        );

        out.clear();
        encode_end_request(&mut out, 2, 0xdead_beef, ProtocolStatus::UnknownRole);
        let (r, _) = parse_record(&out).unwrap().unwrap();
        assert_eq!(r.header.request_id, 2);
        assert_eq!(
            parse_end_request(r.content).unwrap(),
            EndRequestBody {
                app_status: 0xdead_beef,
                protocol_status: FCGI_UNKNOWN_ROLE
            }
        );

        out.clear();
        encode_unknown_type(&mut out, 42);
        let (r, _) = parse_record(&out).unwrap().unwrap();
        assert_eq!(r.header.request_id, 0);
        assert_eq!(parse_unknown_type(r.content).unwrap(), 42);

        for bad in [&[][..], &[0, 1, 0][..], &[0; 9][..]] {
            assert!(matches!(
                parse_begin_request(bad),
                Err(ProtocolError::BadBodyLength { .. })
            ));
            assert!(parse_end_request(bad).is_err());
            assert!(parse_unknown_type(bad).is_err());
        }
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips(
            t in 1u8..=255,
            id in any::<u16>(),
            len in prop_oneof![0usize..300, 65530usize..65542, 130_000usize..140_000],
            seed in any::<u8>(),
        ) {
            // Built from a seed: generating 100k bytes one by one makes proptest crawl.
            let content: Vec<u8> = (0..len).map(|i| seed ^ (i as u8).wrapping_mul(31)).collect();
            let mut out = Vec::new();
            encode_record(&mut out, RecordType::from_u8(t), id, &content);
            let mut rest = &out[..];
            let mut joined = Vec::new();
            while !rest.is_empty() {
                let (r, used) = parse_record(rest).unwrap().unwrap();
                prop_assert_eq!(r.header.record_type.as_u8(), t);
                prop_assert_eq!(r.header.request_id, id);
                joined.extend_from_slice(r.content);
                rest = &rest[used..];
            }
            prop_assert_eq!(joined, content);
        }

        #[test]
        fn every_prefix_is_incomplete_not_an_error(
            content in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut out = Vec::new();
            encode_record(&mut out, RecordType::Params, 1, &content);
            for cut in 0..out.len() {
                prop_assert_eq!(parse_record(&out[..cut]).unwrap(), None);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = parse_record(&input);
            let _ = parse_begin_request(&input);
            let _ = parse_end_request(&input);
            let _ = parse_unknown_type(&input);
        }
    }
}
