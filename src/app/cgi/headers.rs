//! The header block a CGI script prints (RFC 3875 §6): read until the blank line, check every
//! line is `Name: value`, and rewrite it as the FastCGI response's header block. A `Location`
//! without `Status` becomes a 302 (the client redirects); a response needs at least one of
//! `Content-Type`, `Location` or `Status`.

/// What the bytes seen so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderBlock {
    /// No blank line yet: read more.
    Incomplete,
    /// The headers, rewritten with CRLF line ends and the blank line, and where the body starts
    /// in the input.
    Done { head: Vec<u8>, body_start: usize },
    /// Not a CGI response (the message says why); the client gets 502.
    Invalid(String),
}

/// A header name: an RFC 7230 token.
fn is_token(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

/// Parse the header block at the start of `input`; more than `max` bytes without the blank line
/// is `Invalid` (a script that prints no headers must not make fastpm buffer it all).
pub fn parse_header_block(input: &[u8], max: usize) -> HeaderBlock {
    let mut head = Vec::with_capacity(256);
    let (mut status, mut location, mut content_type) = (false, false, false);
    let mut at = 0;
    loop {
        let Some(nl) = input[at..].iter().position(|&b| b == b'\n') else {
            return if input.len() > max {
                HeaderBlock::Invalid(format!("no end of headers in the first {max} bytes"))
            } else {
                HeaderBlock::Incomplete
            };
        };
        let line_end = at + nl;
        if line_end > max {
            return HeaderBlock::Invalid(format!("no end of headers in the first {max} bytes"));
        }
        let line = input[at..line_end]
            .strip_suffix(b"\r")
            .unwrap_or(&input[at..line_end]);
        at = line_end + 1;
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return HeaderBlock::Invalid(format!(
                "header line without a colon: {:?}",
                String::from_utf8_lossy(line)
            ));
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if !is_token(name) {
            return HeaderBlock::Invalid(format!(
                "bad header name: {:?}",
                String::from_utf8_lossy(name)
            ));
        }
        status |= name.eq_ignore_ascii_case(b"status");
        location |= name.eq_ignore_ascii_case(b"location");
        content_type |= name.eq_ignore_ascii_case(b"content-type");
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    if !(status || location || content_type) {
        return HeaderBlock::Invalid("no Content-Type, Location or Status header".into());
    }
    if location && !status {
        head.splice(0..0, b"Status: 302 Found\r\n".iter().copied());
    }
    head.extend_from_slice(b"\r\n");
    HeaderBlock::Done {
        head,
        body_start: at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(head: &str, body_start: usize) -> HeaderBlock {
        HeaderBlock::Done {
            head: head.as_bytes().to_vec(),
            body_start,
        }
    }

    #[test]
    fn header_blocks() {
        let table: Vec<(&str, HeaderBlock)> = vec![
            ("", HeaderBlock::Incomplete),
            ("Content-Type: text/plain\n", HeaderBlock::Incomplete),
            ("Content-Type: text/plain\r\n", HeaderBlock::Incomplete),
            (
                "Content-Type: text/plain\n\nbody",
                done("Content-Type: text/plain\r\n\r\n", 26),
            ),
            (
                "Content-Type:text/plain\r\n\r\nbody",
                done("Content-Type: text/plain\r\n\r\n", 27),
            ),
            (
                "Status: 201 Created\nContent-Type: text/plain\n\n",
                done(
                    "Status: 201 Created\r\nContent-Type: text/plain\r\n\r\n",
                    46,
                ),
            ),
            (
                "Location: /x\n\n",
                done("Status: 302 Found\r\nLocation: /x\r\n\r\n", 14),
            ),
            (
                "Status: 301\nLocation: /x\n\n",
                done("Status: 301\r\nLocation: /x\r\n\r\n", 26),
            ),
            ("Status: 204\n\n", done("Status: 204\r\n\r\n", 13)),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_header_block(input.as_bytes(), 1024),
                want,
                "{input:?}"
            );
        }
        let invalid = [
            "\n\n",
            "X-Only: 1\n\n",
            "hello world\n\n",
            "Bad Name: x\n\n",
            ": empty\n\n",
        ];
        for input in invalid {
            assert!(
                matches!(
                    parse_header_block(input.as_bytes(), 1024),
                    HeaderBlock::Invalid(_)
                ),
                "{input:?}"
            );
        }
        let long = "X: ".to_string() + &"y".repeat(100);
        assert!(matches!(
            parse_header_block(long.as_bytes(), 50),
            HeaderBlock::Invalid(_)
        ));
        assert!(matches!(
            parse_header_block((long + "\n").as_bytes(), 50),
            HeaderBlock::Invalid(_)
        ));
    }
}
