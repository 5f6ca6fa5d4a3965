//! A tiny FastCGI record writer/reader of the tests' own, independent of fastpm's protocol code,
//! so the tests can also send what no well-behaved client sends (garbage, bad lengths, stalls).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const BEGIN_REQUEST: u8 = 1;
pub const ABORT_REQUEST: u8 = 2;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

/// One record, padded to a multiple of 8 like nginx does.
pub fn record(rtype: u8, id: u16, content: &[u8]) -> Vec<u8> {
    assert!(content.len() <= 65535);
    let pad = (8 - content.len() % 8) % 8;
    let mut r = vec![1, rtype, (id >> 8) as u8, id as u8];
    r.extend_from_slice(&(content.len() as u16).to_be_bytes());
    r.push(pad as u8);
    r.push(0);
    r.extend_from_slice(content);
    r.extend(std::iter::repeat_n(0, pad));
    r
}

fn len_bytes(n: usize, out: &mut Vec<u8>) {
    if n < 128 {
        out.push(n as u8);
    } else {
        out.extend_from_slice(&((n as u32) | 0x8000_0000).to_be_bytes());
    }
}

/// One name-value pair.
pub fn pair(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    len_bytes(name.len(), &mut out);
    len_bytes(value.len(), &mut out);
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    out
}

pub fn begin(id: u16, role: u16, keep_conn: bool) -> Vec<u8> {
    let mut body = role.to_be_bytes().to_vec();
    body.push(keep_conn as u8);
    body.extend_from_slice(&[0; 5]);
    record(BEGIN_REQUEST, id, &body)
}

/// The params nginx's fastcgi_params would send for `script?query`.
pub fn cgi_params(script: &str, query: &str, method: &str, body_len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    let uri = if query.is_empty() {
        script.to_string()
    } else {
        format!("{script}?{query}")
    };
    let cl = if body_len > 0 {
        body_len.to_string()
    } else {
        String::new()
    };
    for (k, v) in [
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", method),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", cl.as_str()),
        ("SCRIPT_NAME", script),
        ("SCRIPT_FILENAME", script),
        ("REQUEST_URI", uri.as_str()),
        ("DOCUMENT_URI", script),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
    ] {
        p.extend(pair(k.as_bytes(), v.as_bytes()));
    }
    p
}

/// A whole request with id 1: BEGIN, PARAMS, empty PARAMS, STDIN, empty STDIN.
pub fn request(script: &str, query: &str, body: &[u8], keep_conn: bool) -> Vec<u8> {
    request_with_id(1, script, query, body, keep_conn)
}

pub fn request_with_id(
    id: u16,
    script: &str,
    query: &str,
    body: &[u8],
    keep_conn: bool,
) -> Vec<u8> {
    let method = if body.is_empty() { "GET" } else { "POST" };
    let mut out = begin(id, 1, keep_conn);
    out.extend(record(
        PARAMS,
        id,
        &cgi_params(script, query, method, body.len()),
    ));
    out.extend(record(PARAMS, id, b""));
    for chunk in body.chunks(32768) {
        out.extend(record(STDIN, id, chunk));
    }
    out.extend(record(STDIN, id, b""));
    out
}

/// Anything we can talk FastCGI over.
pub trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// Connect to `unix:PATH`-style paths or `IP:PORT`.
pub fn connect(addr: &str) -> Box<dyn Conn> {
    if let Some(path) = addr.strip_prefix("unix:") {
        let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Box::new(s)
    } else {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Box::new(s)
    }
}

pub fn connect_unix(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// One record as read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub rtype: u8,
    pub id: u16,
    pub content: Vec<u8>,
}

/// Read one record; `None` on a clean EOF before its first byte.
pub fn read_record(r: &mut dyn Read) -> Option<Record> {
    let mut h = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return None,
            Ok(0) => panic!("EOF inside a record header"),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && got == 0 => return None,
            Err(e) => panic!("read: {e}"),
        }
    }
    assert_eq!(h[0], 1, "version");
    let len = u16::from_be_bytes([h[4], h[5]]) as usize;
    let mut content = vec![0; len + h[6] as usize];
    r.read_exact(&mut content).expect("record body");
    content.truncate(len);
    Some(Record {
        rtype: h[1],
        id: u16::from_be_bytes([h[2], h[3]]),
        content,
    })
}

/// A response as read back.
#[derive(Debug, Default, Clone)]
pub struct Response {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub app_status: u32,
    pub protocol_status: u8,
    pub id: u16,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// The body after the CGI headers.
    pub fn body(&self) -> String {
        let t = self.text();
        match t.split_once("\r\n\r\n") {
            Some((_, b)) => b.to_string(),
            None => t,
        }
    }
}

/// Read records until END_REQUEST; `None` if the connection closed first.
pub fn read_response(r: &mut dyn Read) -> Option<Response> {
    let mut resp = Response::default();
    loop {
        let rec = read_record(r)?;
        match rec.rtype {
            STDOUT => resp.stdout.extend(rec.content),
            STDERR => resp.stderr.extend(rec.content),
            END_REQUEST => {
                resp.app_status = u32::from_be_bytes(rec.content[0..4].try_into().unwrap());
                resp.protocol_status = rec.content[4];
                resp.id = rec.id;
                return Some(resp);
            }
            other => panic!("unexpected record type {other} in a response"),
        }
    }
}

/// Send one GET and read its response.
pub fn get(addr: &str, script: &str, query: &str) -> Response {
    let mut c = connect(addr);
    c.write_all(&request(script, query, b"", false)).unwrap();
    read_response(&mut *c).expect("a response")
}

/// One GET for `script_name` with the SCRIPT_FILENAME a web server would have computed (or
/// any other: no web server would be this trusting), over the unix socket `socket`.
pub fn get_script(socket: &Path, script_name: &str, script_filename: &str) -> Response {
    let mut conn = send_params(
        socket,
        &[
            ("REQUEST_METHOD", "GET"),
            ("QUERY_STRING", ""),
            ("SCRIPT_NAME", script_name),
            ("SCRIPT_FILENAME", script_filename),
            ("REQUEST_URI", script_name),
        ],
    );
    read_response(&mut conn).expect("a response")
}

/// A request with exactly `params` and no body, sent over a new connection to the unix socket
/// `socket`: the connection, to read the answer from.
pub fn send_params(socket: &Path, params: &[(&str, &str)]) -> UnixStream {
    let mut encoded = Vec::new();
    for (k, v) in params {
        encoded.extend(pair(k.as_bytes(), v.as_bytes()));
    }
    let mut req = begin(1, 1, false);
    req.extend(record(PARAMS, 1, &encoded));
    req.extend(record(PARAMS, 1, b""));
    req.extend(record(STDIN, 1, b""));
    let mut conn = connect_unix(socket);
    conn.write_all(&req).unwrap();
    conn
}

/// The pool's status as JSON through its FastCGI `status_path`.
pub fn status_json(addr: &str) -> serde_json::Value {
    let r = get(addr, "/status", "json");
    serde_json::from_str(&r.body()).unwrap_or_else(|e| panic!("status JSON: {e}: {}", r.text()))
}
