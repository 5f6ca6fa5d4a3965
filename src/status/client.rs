//! `fastpm status` and `fastpm publish`: a tiny blocking HTTP/1.1 client for the master's
//! status listener (`http://` only) — GET for the status, POST for `/publish/`; `--watch` on a
//! terminal is [`super::watch`], built on it.
//!
//! Why not an HTTP client crate: one request to a local listener with `Connection: close`
//! needs a status line, a few headers and a body; a dependency would be larger than this file.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Where `fastpm status` looks without `--url` (the embedded config's `status_listen`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:9180/status";

/// Connect, read and write timeout: the listener is local and never waits on a worker, so a
/// slow answer means something is wrong.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Answers larger than this are refused (a status page is a few KiB; `?full` of thousands of
/// workers stays far below).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Why a status fetch failed. Each message carries its I/O cause in its own text (the cause
/// is not also a `source`, so a printed error chain says it once).
#[derive(Debug, thiserror::Error)]
pub enum StatusClientError {
    #[error("invalid status URL {url:?}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("cannot resolve {authority}: {cause}")]
    Resolve { authority: String, cause: io::Error },
    #[error("cannot connect to {authority}: {cause}")]
    Connect { authority: String, cause: io::Error },
    #[error("{url}: {cause}")]
    Io { url: String, cause: io::Error },
    #[error("{url}: malformed HTTP response: {reason}")]
    Malformed { url: String, reason: String },
    #[error("{url}: response larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    /// The server answered, but not with 2xx; `status_line` is what it said
    /// (e.g. `HTTP/1.1 404 Not Found`).
    #[error("{url}: {status_line}")]
    Status {
        url: String,
        status: u16,
        status_line: String,
        body: String,
    },
    #[error("cannot write the status: {0}")]
    Output(io::Error),
}

/// A parsed `http://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host as written (IPv6 without brackets), for resolving.
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written, for the `Host` header and messages.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path_and_query: String,
}

/// Split `http://HOST[:PORT][/PATH][?QUERY]`.
pub fn parse_url(url: &str) -> Result<Target, StatusClientError> {
    let bad = |reason| StatusClientError::BadUrl {
        url: url.to_string(),
        reason,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs are supported"))?;
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains('@') {
        return Err(bad("user info is not supported"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("junk after ']'"))?,
                ),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None => 80,
        Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
    };
    let path_and_query = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    Ok(Target {
        host: host.to_string(),
        port,
        authority: authority.to_string(),
        path_and_query,
    })
}

/// Add the `json` flag to a status URL (`fastpm status --json`).
pub fn with_json(url: &str) -> String {
    let has_json = url
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|p| p == "json" || p.starts_with("json=")));
    match (has_json, url.contains('?')) {
        (true, _) => url.to_string(),
        (false, true) => format!("{url}&json"),
        (false, false) => format!("{url}?json"),
    }
}

/// GET `url` and return the body of a 2xx answer.
pub fn fetch(url: &str) -> Result<String, StatusClientError> {
    let response = exchange(url, None, TIMEOUT)?;
    into_success(url, response)
}

/// A 2xx answer's body, or [`StatusClientError::Status`] carrying the answer.
pub fn into_success(url: &str, response: Response) -> Result<String, StatusClientError> {
    if !(200..300).contains(&response.status) {
        return Err(StatusClientError::Status {
            url: url.to_string(),
            status: response.status,
            status_line: response.status_line,
            body: response.body,
        });
    }
    Ok(response.body)
}

/// POST `body` (of type `content_type`) to `url`; the answer whatever its status.
/// `timeout` bounds the connect and each read and write.
pub fn post(
    url: &str,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, StatusClientError> {
    exchange(url, Some((content_type, body)), timeout)
}

/// One request with `Connection: close`: GET, or POST when `body` (content type, bytes) is
/// given; the whole answer, whatever its status.
fn exchange(
    url: &str,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> Result<Response, StatusClientError> {
    let target = parse_url(url)?;
    let io_err = |cause| StatusClientError::Io {
        url: url.to_string(),
        cause,
    };
    let mut stream = connect(&target, timeout)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut request = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fastpm\r\nAccept: */*\r\nConnection: close\r\n",
        if body.is_some() { "POST" } else { "GET" },
        target.path_and_query,
        target.authority
    )
    .into_bytes();
    if let Some((content_type, bytes)) = body {
        request.extend_from_slice(
            format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                bytes.len()
            )
            .as_bytes(),
        );
    }
    request.extend_from_slice(b"\r\n");
    if let Some((_, bytes)) = body {
        request.extend_from_slice(bytes);
    }
    stream.write_all(&request).map_err(io_err)?;
    let raw = read_capped(&mut stream, url)?;
    parse_response(&raw).map_err(|reason| StatusClientError::Malformed {
        url: url.to_string(),
        reason,
    })
}

fn connect(target: &Target, timeout: Duration) -> Result<TcpStream, StatusClientError> {
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|cause| StatusClientError::Resolve {
            authority: target.authority.clone(),
            cause,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = err,
        }
    }
    Err(StatusClientError::Connect {
        authority: target.authority.clone(),
        cause: last,
    })
}

/// Read to EOF (we asked for `Connection: close`), refusing more than the cap.
fn read_capped(stream: &mut TcpStream, url: &str) -> Result<Vec<u8>, StatusClientError> {
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|cause| StatusClientError::Io {
            url: url.to_string(),
            cause,
        })?;
    if raw.len() > MAX_RESPONSE_BYTES {
        return Err(StatusClientError::TooLarge {
            url: url.to_string(),
            limit: MAX_RESPONSE_BYTES,
        });
    }
    Ok(raw)
}

/// A parsed HTTP/1.x response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub status_line: String,
    pub body: String,
}

/// Parse a complete response (headers, then a body framed by `Content-Length`, chunked, or
/// the end of the stream).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let header_end = find(raw, b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..header_end]).map_err(|_| "headers are not UTF-8")?;
    let rest = &raw[header_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..1000).contains(code))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(len) = content_length {
        rest.get(..len)
            .ok_or_else(|| format!("body truncated: {} of {len} bytes", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        status_line,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n").ok_or("chunk size line truncated")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = raw.get(..size).ok_or("chunk truncated")?;
        body.extend_from_slice(chunk);
        raw = raw.get(size + 2..).ok_or("chunk truncated")?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let ok = [
            ("http://127.0.0.1:9180/status", "127.0.0.1", 9180, "/status"),
            (
                "http://localhost/status?json&full",
                "localhost",
                80,
                "/status?json&full",
            ),
            ("http://[::1]:9180/metrics", "::1", 9180, "/metrics"),
            ("http://[::1]", "::1", 80, "/"),
            ("http://host:1?json", "host", 1, "/?json"),
        ];
        for (url, host, port, path) in ok {
            let t = parse_url(url).unwrap();
            assert_eq!(
                (t.host.as_str(), t.port, t.path_and_query.as_str()),
                (host, port, path)
            );
        }
        for bad in [
            "https://x/",
            "x:80",
            "http://",
            "http://:80/",
            "http://h:99999/",
            "http://[::1/",
            "http://u@h/",
        ] {
            assert!(
                matches!(parse_url(bad), Err(StatusClientError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn adds_json_flag_once() {
        let table = [
            ("http://h/status", "http://h/status?json"),
            ("http://h/status?full", "http://h/status?full&json"),
            ("http://h/status?json", "http://h/status?json"),
            ("http://h/status?full&json=1", "http://h/status?full&json=1"),
        ];
        for (url, want) in table {
            assert_eq!(with_json(url), want);
        }
    }

    #[test]
    fn parses_responses() {
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello, extra").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "hello"));
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!(
            (r.status, r.status_line.as_str(), r.body.as_str()),
            (404, "HTTP/1.1 404 Not Found", "nope")
        );
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, "abcde");
        for bad in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"SSH-2.0\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
