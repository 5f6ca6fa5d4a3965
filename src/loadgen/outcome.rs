//! What one request attempt came to, and the pure rules that classify it.

use std::io;

/// One attempt's result, as the JSON summary counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response with HTTP status `0` (from the CGI `Status:` header; 200 without one).
    Answered { status: u16 },
    /// Non-blocking connect answered `EAGAIN`: a unix socket's accept queue was full.
    Eagain,
    /// Nobody listens (`ECONNREFUSED`).
    Refused,
    /// The timeout passed (connect or response): the client closed the connection.
    Timeout,
    /// Another connect error (e.g. `ENOENT` for a missing socket file).
    ConnectError,
    /// The connection broke or closed before END_REQUEST, or the answer was not FastCGI.
    Broken,
}

impl Outcome {
    /// The summary's key: `ok` for 2xx, the status number otherwise, or the failure's name.
    pub fn key(self) -> String {
        match self {
            Self::Answered { status } if (200..300).contains(&status) => "ok".into(),
            Self::Answered { status } => status.to_string(),
            Self::Eagain => "eagain".into(),
            Self::Refused => "econnrefused".into(),
            Self::Timeout => "timeout".into(),
            Self::ConnectError => "connect_error".into(),
            Self::Broken => "broken".into(),
        }
    }

    /// The outcome of a failed connect.
    pub fn of_connect_error(error: &io::Error) -> Outcome {
        match error.raw_os_error() {
            Some(libc::EAGAIN) => Self::Eagain,
            Some(libc::ECONNREFUSED) => Self::Refused,
            Some(libc::ETIMEDOUT) => Self::Timeout,
            _ if error.kind() == io::ErrorKind::TimedOut => Self::Timeout,
            _ => Self::ConnectError,
        }
    }
}

/// The HTTP status of a CGI response: its `Status:` header's number, 200 without one (RFC 3875
/// §6.3.3), 502 when the headers cannot be read (as a web server would answer).
pub fn http_status(stdout: &[u8]) -> u16 {
    let end = find(stdout, b"\r\n\r\n")
        .or_else(|| find(stdout, b"\n\n"))
        .unwrap_or(stdout.len());
    for line in stdout[..end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"status") {
            let value = String::from_utf8_lossy(&line[colon + 1..]);
            let code = value.trim_start().get(..3).and_then(|c| c.parse().ok());
            return code.filter(|c| (100..600).contains(c)).unwrap_or(502);
        }
    }
    200
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_table() {
        let table: &[(&[u8], u16)] = &[
            (b"Content-Type: text/plain\r\n\r\nhi", 200),
            (
                b"Status: 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n",
                503,
            ),
            (b"status:404\n\nnot found", 404),
            (b"Content-Type: x\r\nSTATUS: 301 Moved\r\n\r\n", 301),
            // a "Status:" in the body is not a header
            (b"Content-Type: x\r\n\r\nStatus: 500", 200),
            (b"Status: abc\r\n\r\n", 502),
            (b"Status: 999\r\n\r\n", 502),
            (b"", 200),
        ];
        for (stdout, want) in table {
            assert_eq!(
                http_status(stdout),
                *want,
                "{:?}",
                String::from_utf8_lossy(stdout)
            );
        }
    }

    #[test]
    fn keys_and_connect_errors() {
        let table = [
            (Outcome::Answered { status: 200 }, "ok"),
            (Outcome::Answered { status: 204 }, "ok"),
            (Outcome::Answered { status: 503 }, "503"),
            (Outcome::Eagain, "eagain"),
            (Outcome::Refused, "econnrefused"),
            (Outcome::Timeout, "timeout"),
        ];
        for (o, key) in table {
            assert_eq!(o.key(), key);
        }
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(Outcome::of_connect_error(&e(libc::EAGAIN)), Outcome::Eagain);
        assert_eq!(
            Outcome::of_connect_error(&e(libc::ECONNREFUSED)),
            Outcome::Refused
        );
        assert_eq!(
            Outcome::of_connect_error(&e(libc::ETIMEDOUT)),
            Outcome::Timeout
        );
        assert_eq!(
            Outcome::of_connect_error(&e(libc::ENOENT)),
            Outcome::ConnectError
        );
        let timed_out = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        assert_eq!(Outcome::of_connect_error(&timed_out), Outcome::Timeout);
    }
}
