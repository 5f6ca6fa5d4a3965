//! One log line as fastpm writes it: request-supplied bytes escaped so a line stays one line,
//! and cut to `log_limit` bytes with a visible marker.
//!
//! Why a bound at all: every line a worker process writes travels through a pipe to the
//! master (see `relay`), and a pipe write is atomic — never interleaved with another
//! process's — only up to `PIPE_BUF` (4096 bytes on Linux). php-fpm bounds its lines the same
//! way (`log_limit`, 1024 by default; its access log at 1024 bytes).

/// php-fpm's default `log_limit`.
pub const DEFAULT_LOG_LIMIT: usize = 1024;
/// The smallest `log_limit` fastpm takes: room for a line's facts before the cut.
pub const MIN_LOG_LIMIT: usize = 64;
/// The largest: a line, its routing tag and its newline stay below `PIPE_BUF` (4096).
pub const MAX_LOG_LIMIT: usize = 4000;

/// What replaces the end of a line that was cut (php-fpm's marker too).
pub const CUT_MARKER: &[u8] = b"...";

/// Append `bytes` with everything that could break a line or a quoted field escaped as `\xHH`:
/// control bytes (newline, carriage return, escape...), DEL, `"` and `\` (nginx's default
/// access-log escaping). Other bytes, UTF-8 included, pass unchanged.
pub fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    push_escaping(out, bytes, |b| is_control(b) || b == b'"' || b == b'\\');
}

/// Append free text (an application's message) with only control bytes and DEL escaped: a
/// line stays one line and cannot steer a terminal; quotes and paths stay readable.
pub fn push_controls_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    push_escaping(out, bytes, is_control);
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn push_escaping(out: &mut Vec<u8>, bytes: &[u8], escape: impl Fn(u8) -> bool) {
    for &b in bytes {
        if escape(b) {
            out.extend_from_slice(format!("\\x{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
}

/// Cut `line` to at most `limit` bytes: the first bytes that fit, on a UTF-8 character
/// boundary, then [`CUT_MARKER`]. True when it was cut.
pub fn cut(line: &mut Vec<u8>, limit: usize) -> bool {
    if line.len() <= limit {
        return false;
    }
    let mut keep = limit.saturating_sub(CUT_MARKER.len());
    // Back off continuation bytes (10xxxxxx) so a character is never split.
    while keep > 0 && keep < line.len() && (line[keep] & 0xC0) == 0x80 {
        keep -= 1;
    }
    line.truncate(keep);
    line.extend_from_slice(CUT_MARKER);
    true
}

/// The lines of an application's stderr output: split at `\n`, a trailing `\r` dropped,
/// empty lines skipped (a record that ends with a newline does not make an empty line).
pub fn stderr_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

/// An application's stderr line ready for the log: control bytes escaped, then cut to `limit`
/// bytes.
pub fn bounded_text(bytes: &[u8], limit: usize) -> String {
    let mut out = Vec::with_capacity(bytes.len().min(limit));
    // Escaping can only grow a line: escape no more than could survive the cut.
    push_controls_escaped(&mut out, &bytes[..bytes.len().min(limit + 1)]);
    cut(&mut out, limit);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_table() {
        let table: &[(&[u8], &[u8])] = &[
            (b"/index.php", b"/index.php"),
            (b"a\nb", b"a\\x0Ab"),
            (b"\r\x1b[31m", b"\\x0D\\x1B[31m"),
            (b"say \"hi\"", b"say \\x22hi\\x22"),
            (b"back\\slash", b"back\\x5Cslash"),
            (b"\x7f", b"\\x7F"),
            ("caf\u{e9}".as_bytes(), "caf\u{e9}".as_bytes()),
            (b"", b""),
        ];
        for (input, want) in table {
            let mut out = Vec::new();
            push_escaped(&mut out, input);
            assert_eq!(out, *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn cut_table() {
        // (line, limit, result, cut?)
        let table: &[(&str, usize, &str, bool)] = &[
            ("short", 10, "short", false),
            ("exactly10!", 10, "exactly10!", false),
            ("eleven char", 10, "eleven ...", true),
            // é is two bytes: the cut backs off rather than split it
            ("aaaaébbbb", 8, "aaaa...", true),
            ("aaaaaébbb", 8, "aaaaa...", true),
            ("aaaaaaé", 8, "aaaaaaé", false),
            ("abc", 2, "...", true),
        ];
        for (line, limit, want, was_cut) in table {
            let mut bytes = line.as_bytes().to_vec();
            assert_eq!(cut(&mut bytes, *limit), *was_cut, "{line}");
            assert_eq!(String::from_utf8(bytes).unwrap(), *want, "{line}");
        }
    }

    #[test]
    fn stderr_lines_table() {
        let table: &[(&[u8], &[&[u8]])] = &[
            (b"one\ntwo\n", &[b"one", b"two"]),
            (b"crlf\r\n", &[b"crlf"]),
            (b"\n\nx", &[b"x"]),
            (b"", &[]),
            (b"no newline", &[b"no newline"]),
        ];
        for (input, want) in table {
            let got: Vec<&[u8]> = stderr_lines(input).collect();
            assert_eq!(&got, want);
        }
    }

    #[test]
    fn a_ten_kilobyte_line_is_cut_to_the_limit() {
        let line = vec![b'x'; 10 * 1024];
        let text = bounded_text(&line, DEFAULT_LOG_LIMIT);
        assert_eq!(text.len(), DEFAULT_LOG_LIMIT);
        assert!(text.ends_with("..."));
        let escaped = bounded_text(&[b'\n'; 10_000], 100);
        assert_eq!(escaped.len(), 100, "escapes count toward the limit");
        let message = bounded_text(b"PHP Warning: in \"C:\\x\"\x1b[0m", 100);
        assert_eq!(
            message, "PHP Warning: in \"C:\\x\"\\x1B[0m",
            "free text keeps quotes"
        );
    }
}
