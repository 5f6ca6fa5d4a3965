//! The bench's own FastCGI bytes, written by hand so the load generator and the floor server
//! depend on nothing in the crate under test: the request a client sends (shaped like nginx's,
//! see `/work/shared/fixtures/fastcgi/nginx-get-query-cookie.bin`), an incremental record reader
//! (partial input is a normal state), the body check, and the floor server's canned answer.

/// FastCGI protocol version 1, the only one there is.
const VERSION: u8 = 1;
pub const BEGIN_REQUEST: u8 = 1;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
/// Every record starts with this many header bytes.
pub const HEADER_LEN: usize = 8;
/// nginx always uses request id 1 on a fresh connection; so do we.
const REQUEST_ID: u16 = 1;
/// FCGI_RESPONDER.
const ROLE_RESPONDER: u16 = 1;
/// A PARAMS record holds at most this much content; our requests are far smaller.
const MAX_CONTENT: usize = u16::MAX as usize;

/// One record found at the front of a buffer.
pub struct Record<'a> {
    pub kind: u8,
    pub content: &'a [u8],
}

/// Why a byte stream is not FastCGI: the connection is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadVersion(pub u8);

/// Appends one record with nginx's padding (content padded to a multiple of 8 bytes).
fn push_record(out: &mut Vec<u8>, kind: u8, content: &[u8]) {
    assert!(content.len() <= MAX_CONTENT, "bench record too long");
    let padding = (8 - content.len() % 8) % 8;
    let [id_hi, id_lo] = REQUEST_ID.to_be_bytes();
    let [len_hi, len_lo] = (content.len() as u16).to_be_bytes();
    out.extend_from_slice(&[
        VERSION,
        kind,
        id_hi,
        id_lo,
        len_hi,
        len_lo,
        padding as u8,
        0,
    ]);
    out.extend_from_slice(content);
    out.resize(out.len() + padding, 0);
}

/// FastCGI name-value length: one byte below 128, else four bytes with the top bit set.
fn push_length(out: &mut Vec<u8>, len: usize) {
    if len < 128 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
    }
}

/// The whole request as one buffer, sent with one write: BEGIN_REQUEST (responder, flags 0, so
/// the server closes after answering), one PARAMS record, the empty PARAMS, the empty STDIN.
pub fn encode_request(params: &[(&str, String)]) -> Vec<u8> {
    let mut pairs = Vec::new();
    for (name, value) in params {
        push_length(&mut pairs, name.len());
        push_length(&mut pairs, value.len());
        pairs.extend_from_slice(name.as_bytes());
        pairs.extend_from_slice(value.as_bytes());
    }
    let mut out = Vec::with_capacity(pairs.len() + 48);
    let [role_hi, role_lo] = ROLE_RESPONDER.to_be_bytes();
    push_record(
        &mut out,
        BEGIN_REQUEST,
        &[role_hi, role_lo, 0, 0, 0, 0, 0, 0],
    );
    push_record(&mut out, PARAMS, &pairs);
    push_record(&mut out, PARAMS, &[]);
    push_record(&mut out, STDIN, &[]);
    out
}

/// The parameters nginx 1.22 sends for `GET <path>` with `include fastcgi_params`, in its order,
/// so every server parses the same realistic amount of input.
pub fn nginx_get_params(path: &str, document_root: &str) -> Vec<(&'static str, String)> {
    let filename = format!("{document_root}{path}");
    vec![
        ("QUERY_STRING", String::new()),
        ("REQUEST_METHOD", "GET".into()),
        ("CONTENT_TYPE", String::new()),
        ("CONTENT_LENGTH", String::new()),
        ("SCRIPT_NAME", path.into()),
        ("REQUEST_URI", path.into()),
        ("DOCUMENT_URI", path.into()),
        ("DOCUMENT_ROOT", document_root.into()),
        ("SERVER_PROTOCOL", "HTTP/1.1".into()),
        ("REQUEST_SCHEME", "http".into()),
        ("GATEWAY_INTERFACE", "CGI/1.1".into()),
        ("SERVER_SOFTWARE", "nginx/1.22.1".into()),
        ("REMOTE_ADDR", "127.0.0.1".into()),
        ("REMOTE_PORT", "40118".into()),
        ("REMOTE_USER", String::new()),
        ("SERVER_ADDR", "127.0.0.1".into()),
        ("SERVER_PORT", "8090".into()),
        ("SERVER_NAME", String::new()),
        ("REDIRECT_STATUS", "200".into()),
        ("HTTP_HOST", "127.0.0.1".into()),
        ("SCRIPT_FILENAME", filename),
        ("HTTP_USER_AGENT", "fastpm-bench".into()),
        ("HTTP_ACCEPT", "*/*".into()),
    ]
}

/// The record at the front of `buf` and its total length (header + content + padding), or
/// `None` while the record is still incomplete.
pub fn parse_record(buf: &[u8]) -> Result<Option<(Record<'_>, usize)>, BadVersion> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(BadVersion(buf[0]));
    }
    let content_len = u16::from_be_bytes([buf[4], buf[5]]) as usize;
    let total = HEADER_LEN + content_len + buf[6] as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let content = &buf[HEADER_LEN..HEADER_LEN + content_len];
    Ok(Some((
        Record {
            kind: buf[1],
            content,
        },
        total,
    )))
}

/// What a scenario's response body must be for the request to count as a success.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// Exactly these bytes (the ping response).
    Exact(&'static [u8]),
    /// Starts with these bytes (an app whose body may carry more than the greeting).
    Prefix(&'static [u8]),
}

impl Expect {
    /// Whether the CGI response in `stdout` (headers, blank line, body) has the expected body.
    pub fn matches(&self, stdout: &[u8]) -> bool {
        let Some(body) = body_of(stdout) else {
            return false;
        };
        match self {
            Expect::Exact(want) => body == *want,
            Expect::Prefix(want) => body.starts_with(want),
        }
    }
}

/// The body after the CGI header block (`\r\n\r\n`, or a bare `\n\n` as some scripts write).
pub fn body_of(stdout: &[u8]) -> Option<&[u8]> {
    if let Some(at) = stdout.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(&stdout[at + 4..]);
    }
    stdout
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| &stdout[at + 2..])
}

/// The floor server's answer: one STDOUT record with a minimal CGI response, then END_REQUEST
/// (app status 0, FCGI_REQUEST_COMPLETE) — the shape php-fpm sends, without an empty STDOUT.
pub fn canned_response(body: &[u8]) -> Vec<u8> {
    let mut stdout = b"Content-Type: text/plain\r\n\r\n".to_vec();
    stdout.extend_from_slice(body);
    let mut out = Vec::new();
    push_record(&mut out, STDOUT, &stdout);
    push_record(&mut out, END_REQUEST, &[0; 8]);
    out
}
