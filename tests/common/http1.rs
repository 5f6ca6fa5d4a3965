//! A raw HTTP/1.1 client over `TcpStream`, for tests that hold many requests at once through a
//! web server (hundreds of `curl` processes would cost more than what is measured) and that
//! must see the response head exactly as it came on the wire (which headers reached the
//! client). One request per connection (`Connection: close`): send now, read the answer later.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One HTTP response as the client received it.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines in wire order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, chunked transfer coding removed.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connect to 127.0.0.1:`port` and send one request (`Host`, `Connection: close`, and
/// `Content-Length` when there is a body, are added). The answer is read with [`read`]; reads
/// give up after 60 s so a lost answer fails the test instead of hanging it.
pub fn send(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the web server");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).expect("send the request");
    s
}

/// Read the whole answer on a connection from [`send`] (until the server closes it).
pub fn read(s: &mut TcpStream) -> io::Result<HttpResponse> {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP response: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

/// [`send`] then [`read`].
pub fn request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = send(port, method, target, headers, body);
    read(&mut s).unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// A complete response: status line, headers, blank line, body (chunked or not).
fn parse(raw: &[u8]) -> Option<HttpResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or((l, ""));
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}

/// The chunked transfer coding removed; `None` when it is cut short.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}
