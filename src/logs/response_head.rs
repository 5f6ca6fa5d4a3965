//! The start of a response as the application wrote it (its CGI header block), kept for the
//! access log: the status (`%s`) and output headers (`%{Name}o`).
//!
//! Whatever the app is — php-cgi relayed, a CGI script, a built-in — its answer passes through
//! the worker's `ResponseWriter` as STDOUT bytes, so that is where the head is seen, with one
//! call per write. It is copied into a fixed array (no allocation per request) until the blank
//! line that ends the headers, or until [`HEAD_CAPTURE`] bytes; a header beyond that is "not
//! known" (`-`), the status still is when the `Status:` line came first (as CGI apps write it).

/// Bytes of the header block kept.
pub const HEAD_CAPTURE: usize = 1024;

/// The first bytes of a response's STDOUT stream.
#[derive(Clone)]
pub struct ResponseHead {
    bytes: [u8; HEAD_CAPTURE],
    len: usize,
    /// The blank line was seen (or the array is full): later writes are body.
    done: bool,
}

impl Default for ResponseHead {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ResponseHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseHead")
            .field("head", &String::from_utf8_lossy(self.head()))
            .finish()
    }
}

impl ResponseHead {
    pub const fn new() -> Self {
        Self {
            bytes: [0; HEAD_CAPTURE],
            len: 0,
            done: false,
        }
    }

    /// See `stdout`, a piece of the STDOUT stream in order.
    pub fn observe(&mut self, stdout: &[u8]) {
        if self.done || stdout.is_empty() {
            return;
        }
        let take = stdout.len().min(HEAD_CAPTURE - self.len);
        // Search from a little before the new bytes: the blank line may straddle two writes.
        let from = self.len.saturating_sub(3);
        self.bytes[self.len..self.len + take].copy_from_slice(&stdout[..take]);
        self.len += take;
        if let Some(end) = header_end(&self.bytes[from..self.len]) {
            self.len = from + end;
            self.done = true;
        } else if self.len == HEAD_CAPTURE {
            self.done = true;
        }
    }

    /// The header lines captured (without the blank line).
    fn head(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Whether the app wrote anything at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The HTTP status the web server will send, by the CGI rules (RFC 3875 §6.3): the
    /// `Status:` header's code, else 302 with a `Location:` header, else 200. `None` when the
    /// app wrote nothing (the request was abandoned, or the app failed before answering).
    pub fn status(&self) -> Option<u16> {
        if self.is_empty() {
            return None;
        }
        if let Some(value) = self.header("Status") {
            let digits: Vec<u8> = value
                .iter()
                .copied()
                .take_while(u8::is_ascii_digit)
                .collect();
            if let Some(code) = std::str::from_utf8(&digits)
                .ok()
                .and_then(|d| d.parse::<u16>().ok())
                .filter(|c| (100..1000).contains(c))
            {
                return Some(code);
            }
        }
        if self.header("Location").is_some() {
            return Some(302);
        }
        Some(200)
    }

    /// The value of the first header `name` (case-insensitive), leading spaces trimmed.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.head()
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .find_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                let (n, rest) = line.split_at(colon);
                n.eq_ignore_ascii_case(name.as_bytes()).then(|| {
                    let value = &rest[1..];
                    let start = value.iter().position(|&b| b != b' ' && b != b'\t');
                    start.map_or(&value[value.len()..], |s| &value[s..])
                })
            })
    }
}

/// Where the header block ends (the offset of its blank line's first newline), if it does.
fn header_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(pieces: &[&[u8]]) -> ResponseHead {
        let mut head = ResponseHead::new();
        for p in pieces {
            head.observe(p);
        }
        head
    }

    #[test]
    fn status_table() {
        let table: &[(&[&[u8]], Option<u16>)] = &[
            (&[], None),
            (&[b"Content-Type: text/plain\r\n\r\nhello"], Some(200)),
            (
                &[b"Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\n"],
                Some(404),
            ),
            (&[b"status:503\n\nbusy"], Some(503)),
            (&[b"Location: /elsewhere\r\n\r\n"], Some(302)),
            (&[b"Status: 301\r\nLocation: /x\r\n\r\n"], Some(301)),
            // split across writes, even inside the blank line
            (&[b"Stat", b"us: 418 teapot\r", b"\n\r", b"\n"], Some(418)),
            // a Status line in the body is not a header
            (
                &[b"Content-Type: text/plain\r\n\r\nStatus: 500\r\n"],
                Some(200),
            ),
            (&[b"Status: nonsense\r\n\r\n"], Some(200)),
        ];
        for (pieces, want) in table {
            assert_eq!(head_of(pieces).status(), *want, "{pieces:?}");
        }
    }

    #[test]
    fn header_lookup() {
        let head = head_of(&[b"Content-Type:  text/html; charset=utf-8\r\nX-Powered-By: PHP/8.2\r\nX-Empty:\r\n\r\n<html>"]);
        assert_eq!(
            head.header("content-type"),
            Some(&b"text/html; charset=utf-8"[..])
        );
        assert_eq!(head.header("X-Powered-By"), Some(&b"PHP/8.2"[..]));
        assert_eq!(head.header("X-Empty"), Some(&b""[..]));
        assert_eq!(head.header("X-Missing"), None);
        assert_eq!(head.header("html>"), None, "the body is not searched");
    }

    #[test]
    fn a_long_head_is_kept_up_to_the_capture() {
        let mut long = b"Status: 201 Created\r\nX-Big: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 3 * HEAD_CAPTURE));
        long.extend_from_slice(b"\r\nX-Late: yes\r\n\r\n");
        let head = head_of(&[&long]);
        assert_eq!(head.status(), Some(201));
        assert_eq!(head.header("X-Late"), None, "beyond the capture: not known");
    }
}
