//! GRIP (Pushpin's hold instructions) read from a relayed app's CGI output (DESIGN §8): a
//! streaming filter between the app's STDOUT and the client that either passes the response
//! through (every `Grip-*` line removed) or captures it as the answer for a hold's timeout.
//!
//! The filter buffers only the header block (up to [`MAX_HEADER_BLOCK`]); once the blank line
//! is seen it decides, and a body that is not held goes straight to `emit` without a copy. A
//! response with no `Grip-` line costs one scan for the blank line, one case-insensitive look at
//! each line start, and the filter's own buffer (kept across requests by [`GripFilter::reset`]).
//!
//! Headers read (names case-insensitive, Pushpin's syntax):
//! - `Grip-Hold: response` — hold; `stream` or any other value is [`GripError::Unsupported`].
//! - `Grip-Channel: NAME[; prev-id=ID][, NAME…]` — may repeat; every name must pass
//!   [`valid_channel`]; other parameters are ignored.
//! - `Grip-Timeout: SECONDS` — 1..=[`MAX_TIMEOUT`], default [`DEFAULT_TIMEOUT`]; repeated: the
//!   last one counts.
//!
//! Every other `Grip-*` line (`Grip-Keep-Alive`, `Grip-Set-Meta`, …) is removed and ignored, so
//! no `Grip-` header ever reaches a client.

use std::io;
use std::time::Duration;

use thiserror::Error;

use super::message::valid_channel;

/// A header block longer than this without a blank line is not a CGI header block we can act
/// on: the output passes through unchanged (the relay's own CGI parser judges it).
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Largest response (headers + body, `Grip-*` removed) kept for a held request's timeout. It
/// lives in the master for the whole hold, so it is bounded per request.
pub const MAX_HELD_RESPONSE: usize = 64 * 1024;

/// Pushpin's default when `Grip-Timeout` is absent.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(55);

/// Largest `Grip-Timeout` accepted, one hour. Every proxy in front (nginx's
/// `fastcgi_read_timeout`, a load balancer's idle timeout) cuts a hold long before that, so a
/// larger value is a typo (`55000`) that would keep a dead client's hold for half a day.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// One channel a held request waits on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GripChannel {
    pub name: String,
    /// The id the client has already seen (`prev-id`): a retained message after it answers at
    /// once. A non-numeric `prev-id` is treated as absent: our ids are integers per channel, so
    /// another system's id (a Pushpin or app-made string) names no message of ours.
    pub prev_id: Option<u64>,
}

/// What a `Grip-Hold: response` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// In header order, without duplicates (the first mention of a name keeps its `prev-id`).
    pub channels: Vec<GripChannel>,
    pub timeout: Duration,
}

/// What the app answered, once it has finished, when it asked to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub hold: Hold,
    /// The app's response as CGI bytes (header lines, blank line, body) with every `Grip-*`
    /// line removed: the answer when the hold times out.
    pub response: Vec<u8>,
}

/// Why a response that asked to hold cannot be held. The caller answers 502 and logs the
/// one-line Display, which names the header at fault.
#[derive(Debug, Error)]
pub enum GripError {
    #[error("Grip-Hold: {0:?} is not supported (only \"response\")")]
    Unsupported(String),
    #[error("Grip-Hold without a Grip-Channel")]
    NoChannel,
    #[error("Grip-Channel: invalid channel name {0:?}")]
    BadChannel(String),
    #[error("Grip-Timeout: {0:?} is not a whole number of seconds in 1..=3600")]
    BadTimeout(String),
    #[error("Grip-Hold: the app's response is over {MAX_HELD_RESPONSE} bytes")]
    TooLarge,
    #[error("writing the response: {0}")]
    Emit(#[from] io::Error),
}

/// Where the filter is in the app's output.
#[derive(Debug, Default)]
enum State {
    /// Reading the header block into `buf`.
    #[default]
    Header,
    /// Decided not to hold (or the header block was too long): everything else passes.
    Pass,
    /// Holding: everything else is captured, nothing emitted.
    Holding { hold: Hold, response: Vec<u8> },
    /// Asked to hold but cannot; the rest is dropped and `finish` says why.
    Failed(GripError),
}

/// The streaming filter; a worker keeps one and calls [`reset`](Self::reset) between requests
/// ([`finish`](Self::finish) resets it too), so its buffer is allocated once.
#[derive(Debug, Default)]
pub struct GripFilter {
    state: State,
    /// The header block read so far (only while `State::Header`; also where the `Grip-*` lines
    /// are removed in place when not holding).
    buf: Vec<u8>,
    /// Where the header line being read starts in `buf`.
    line_start: usize,
    /// Whether a complete header line started with `grip-`: only then is the block parsed.
    saw_grip: bool,
}

impl GripFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ready for the next response; keeps the buffer's allocation.
    pub fn reset(&mut self) {
        self.state = State::Header;
        self.buf.clear();
        self.line_start = 0;
        self.saw_grip = false;
    }

    /// Feed app stdout; bytes that are to reach the client are passed to `emit` (possibly later,
    /// once the header block is complete). Errors from `emit` are returned.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        emit: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        match &mut self.state {
            State::Header => self.feed_header(bytes, emit),
            State::Pass => emit_some(bytes, emit),
            State::Holding { .. } | State::Failed(_) => {
                self.capture(bytes);
                Ok(())
            }
        }
    }

    /// The app is done. Flushes anything buffered through `emit`, or returns the held response.
    /// The filter is reset afterwards, ready for the next request.
    pub fn finish(
        &mut self,
        emit: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<Option<Held>, GripError> {
        let state = std::mem::take(&mut self.state);
        let result = match state {
            // No blank line at all: not a header block we understood; unchanged.
            State::Header => emit_some(&self.buf, emit)
                .map(|()| None)
                .map_err(GripError::from),
            State::Pass => Ok(None),
            State::Holding { hold, response } => Ok(Some(Held { hold, response })),
            State::Failed(e) => Err(e),
        };
        self.reset();
        result
    }

    /// Header state: append whole lines to `buf` until the blank line, then decide.
    fn feed_header(
        &mut self,
        mut rest: &[u8],
        emit: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        loop {
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                if self.buf.len() + rest.len() > MAX_HEADER_BLOCK {
                    return self.overflow(rest, emit);
                }
                self.buf.extend_from_slice(rest);
                return Ok(());
            };
            let (line, after) = rest.split_at(nl + 1);
            if self.buf.len() + line.len() > MAX_HEADER_BLOCK {
                return self.overflow(rest, emit);
            }
            self.buf.extend_from_slice(line);
            rest = after;
            let line = &self.buf[self.line_start..];
            if line == b"\n" || line == b"\r\n" {
                self.decide(emit)?;
                return self.feed(rest, emit);
            }
            self.saw_grip |= is_grip_line(line);
            self.line_start = self.buf.len();
        }
    }

    /// The header block did not end within [`MAX_HEADER_BLOCK`]: pass everything unchanged.
    fn overflow(
        &mut self,
        rest: &[u8],
        emit: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.state = State::Pass;
        emit_some(&self.buf, emit)?;
        emit_some(rest, emit)
    }

    /// The header block (in `buf`, blank line included) is complete: pass, strip or hold.
    fn decide(&mut self, emit: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        if !self.saw_grip {
            self.state = State::Pass;
            return emit_some(&self.buf, emit);
        }
        let instructions = read_instructions(&self.buf);
        remove_grip_lines(&mut self.buf);
        self.state = match instructions {
            Ok(None) => State::Pass,
            Ok(Some(hold)) => State::Holding {
                hold,
                response: Vec::new(),
            },
            Err(e) => State::Failed(e),
        };
        if let State::Pass = self.state {
            return emit_some(&self.buf, emit);
        }
        let head = std::mem::take(&mut self.buf);
        self.capture(&head);
        self.buf = head;
        Ok(())
    }

    /// Holding: keep `bytes` for the timeout answer unless that makes it too large.
    fn capture(&mut self, bytes: &[u8]) {
        if let State::Holding { response, .. } = &mut self.state {
            if response.len() + bytes.len() > MAX_HELD_RESPONSE {
                self.state = State::Failed(GripError::TooLarge);
            } else {
                response.extend_from_slice(bytes);
            }
        }
    }
}

fn emit_some(bytes: &[u8], emit: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    if bytes.is_empty() {
        Ok(())
    } else {
        emit(bytes)
    }
}

/// Whether a header line's name starts with `grip-` (any case).
fn is_grip_line(line: &[u8]) -> bool {
    line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"grip-")
}

/// The header lines of a complete block (each with its line end), blank line excluded.
fn header_lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    block
        .split_inclusive(|&b| b == b'\n')
        .take_while(|line| *line != b"\n" && *line != b"\r\n")
}

/// `Name: value` of one header line, the value trimmed (line end included).
fn split_header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    Some((&line[..colon], line[colon + 1..].trim_ascii()))
}

/// The hold a header block asks for: `None` without `Grip-Hold` (then the other `Grip-*`
/// headers are not judged: they are removed and the response passes).
fn read_instructions(block: &[u8]) -> Result<Option<Hold>, GripError> {
    let grip_headers = || {
        header_lines(block)
            .filter_map(split_header)
            .map(|(name, value)| (name, String::from_utf8_lossy(value)))
    };
    let mut hold_asked = false;
    for (_, value) in grip_headers().filter(|(n, _)| n.eq_ignore_ascii_case(b"grip-hold")) {
        if !value.eq_ignore_ascii_case("response") {
            return Err(GripError::Unsupported(value.into_owned()));
        }
        hold_asked = true;
    }
    if !hold_asked {
        return Ok(None);
    }
    let mut channels: Vec<GripChannel> = Vec::new();
    let mut timeout = DEFAULT_TIMEOUT;
    for (name, value) in grip_headers() {
        if name.eq_ignore_ascii_case(b"grip-channel") {
            for channel in parse_channels(&value)? {
                if !channels.iter().any(|c| c.name == channel.name) {
                    channels.push(channel);
                }
            }
        } else if name.eq_ignore_ascii_case(b"grip-timeout") {
            timeout = parse_timeout(&value)?;
        }
    }
    if channels.is_empty() {
        return Err(GripError::NoChannel);
    }
    Ok(Some(Hold { channels, timeout }))
}

/// One `Grip-Channel` value: `name[; prev-id=ID][; other=…], name…`. Empty items (a trailing
/// comma) are skipped; a name that fails [`valid_channel`] is an error rather than dropped, as
/// a dropped channel is a client that silently never gets its message.
fn parse_channels(value: &str) -> Result<Vec<GripChannel>, GripError> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        if name.is_empty() && item.trim().is_empty() {
            continue;
        }
        if !valid_channel(name) {
            return Err(GripError::BadChannel(name.to_string()));
        }
        let prev_id = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("prev-id"))
            .and_then(|(_, v)| v.trim().trim_matches('"').parse::<u64>().ok());
        out.push(GripChannel {
            name: name.to_string(),
            prev_id,
        });
    }
    Ok(out)
}

fn parse_timeout(value: &str) -> Result<Duration, GripError> {
    match value.parse::<u64>() {
        Ok(s) if s >= 1 && s <= MAX_TIMEOUT.as_secs() => Ok(Duration::from_secs(s)),
        _ => Err(GripError::BadTimeout(value.to_string())),
    }
}

/// Remove every `Grip-*` header line of a complete block in place (line ends of the others and
/// the blank line kept as the app wrote them).
fn remove_grip_lines(block: &mut Vec<u8>) {
    let mut write = 0;
    let mut read = 0;
    let mut in_header = true;
    while read < block.len() {
        let end = block[read..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(block.len(), |i| read + i + 1);
        let line = &block[read..end];
        let blank = line == b"\n" || line == b"\r\n";
        if !(in_header && !blank && is_grip_line(line)) {
            block.copy_within(read..end, write);
            write += end - read;
        }
        in_header &= !blank;
        read = end;
    }
    block.truncate(write);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the filter made of `input` fed in the given pieces: the emitted bytes and the
    /// outcome (an error as its Display).
    fn run(pieces: &[&[u8]]) -> (Vec<u8>, Result<Option<Held>, String>) {
        let mut filter = GripFilter::new();
        run_with(&mut filter, pieces)
    }

    fn run_with(
        filter: &mut GripFilter,
        pieces: &[&[u8]],
    ) -> (Vec<u8>, Result<Option<Held>, String>) {
        let mut out = Vec::new();
        let mut emit = |b: &[u8]| {
            assert!(!b.is_empty(), "empty emit");
            out.extend_from_slice(b);
            Ok(())
        };
        for piece in pieces {
            filter.feed(piece, &mut emit).unwrap();
        }
        let result = filter.finish(&mut emit).map_err(|e| e.to_string());
        (out, result)
    }

    fn whole(input: &[u8]) -> (Vec<u8>, Result<Option<Held>, String>) {
        run(&[input])
    }

    /// Every split: one byte at a time, and in two halves at every position.
    fn assert_split_invariant(input: &[u8]) {
        let expected = whole(input);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes), expected, "byte by byte: {input:?}");
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(run(&[a, b]), expected, "cut at {cut}: {input:?}");
        }
    }

    fn held(channels: &[(&str, Option<u64>)], secs: u64, response: &[u8]) -> Option<Held> {
        Some(Held {
            hold: Hold {
                channels: channels
                    .iter()
                    .map(|&(name, prev_id)| GripChannel {
                        name: name.to_string(),
                        prev_id,
                    })
                    .collect(),
                timeout: Duration::from_secs(secs),
            },
            response: response.to_vec(),
        })
    }

    #[test]
    fn table() {
        type Case<'a> = (&'a [u8], &'a [u8], Result<Option<Held>, String>);
        let cases: Vec<Case> = vec![
            // No Grip-: unchanged.
            (
                b"Content-Type: text/html\r\n\r\nhello",
                b"Content-Type: text/html\r\n\r\nhello",
                Ok(None),
            ),
            // \n-only line ends.
            (b"Status: 404\n\nnope", b"Status: 404\n\nnope", Ok(None)),
            // Empty header block.
            (b"\r\nbody", b"\r\nbody", Ok(None)),
            // No blank line ever: unchanged at finish.
            (b"Grip-Hold: response", b"Grip-Hold: response", Ok(None)),
            (b"just text\nmore", b"just text\nmore", Ok(None)),
            (b"", b"", Ok(None)),
            // Grip-* without Grip-Hold: removed, rest unchanged.
            (
                b"A: 1\r\ngrip-channel: x\r\nGRIP-Keep-Alive: y\r\nB: 2\r\n\r\nGrip-Hold: response\r\n",
                b"A: 1\r\nB: 2\r\n\r\nGrip-Hold: response\r\n",
                Ok(None),
            ),
            // A body that says Grip-Hold is not parsed.
            (
                b"A: 1\n\nGrip-Hold: response\nGrip-Channel: c\n\n",
                b"A: 1\n\nGrip-Hold: response\nGrip-Channel: c\n\n",
                Ok(None),
            ),
            // Held: never emitted; Grip lines gone; default timeout.
            (
                b"Content-Type: text/plain\r\nGrip-Hold: response\r\nGrip-Channel: chat\r\n\r\nempty",
                b"",
                Ok(held(&[("chat", None)], 55, b"Content-Type: text/plain\r\n\r\nempty")),
            ),
            // Case-insensitive names and value, several channels, prev-id, repeats, timeout.
            (
                b"grip-hold:Response\ngrip-channel: a; prev-id=7, b\nGrip-Channel: c;x=1;prev-id=\"9\", a; prev-id=8\nGrip-Timeout: 20\nX: y\n\nbody",
                b"",
                Ok(held(&[("a", Some(7)), ("b", None), ("c", Some(9))], 20, b"X: y\n\nbody")),
            ),
            // Non-numeric prev-id: absent. Trailing comma: skipped. Last timeout counts.
            (
                b"Grip-Hold: response\nGrip-Channel: a; prev-id=abc,\nGrip-Timeout: 5\nGrip-Timeout: 3600\n\n",
                b"",
                Ok(held(&[("a", None)], 3600, b"\n")),
            ),
            // Errors.
            (
                b"Grip-Hold: stream\nGrip-Channel: a\n\n",
                b"",
                Err(r#"Grip-Hold: "stream" is not supported (only "response")"#.into()),
            ),
            (
                b"Grip-Hold: response\n\n",
                b"",
                Err("Grip-Hold without a Grip-Channel".into()),
            ),
            (
                b"Grip-Hold: response\nGrip-Channel: ,\n\n",
                b"",
                Err("Grip-Hold without a Grip-Channel".into()),
            ),
            (
                b"Grip-Hold: response\nGrip-Channel: a b\n\n",
                b"",
                Err(r#"Grip-Channel: invalid channel name "a b""#.into()),
            ),
            (
                b"Grip-Hold: response\nGrip-Channel: ok, ;prev-id=1\n\n",
                b"",
                Err(r#"Grip-Channel: invalid channel name """#.into()),
            ),
            (
                b"Grip-Hold: response\nGrip-Channel: a\nGrip-Timeout: 0\n\n",
                b"",
                Err(r#"Grip-Timeout: "0" is not a whole number of seconds in 1..=3600"#.into()),
            ),
            (
                b"Grip-Hold: response\nGrip-Channel: a\nGrip-Timeout: 3601\n\n",
                b"",
                Err(r#"Grip-Timeout: "3601" is not a whole number of seconds in 1..=3600"#.into()),
            ),
            (
                b"Grip-Hold: response\nGrip-Channel: a\nGrip-Timeout: 1.5\n\n",
                b"",
                Err(r#"Grip-Timeout: "1.5" is not a whole number of seconds in 1..=3600"#.into()),
            ),
            // Without Grip-Hold the other Grip-* headers are not judged, only removed.
            (
                b"Grip-Channel: a b\nGrip-Timeout: 0\nA: 1\n\nx",
                b"A: 1\n\nx",
                Ok(None),
            ),
        ];
        for (input, emitted, result) in cases {
            assert_eq!(whole(input), (emitted.to_vec(), result), "{input:?}");
            assert_split_invariant(input);
        }
    }

    #[test]
    fn header_block_over_the_limit_passes_unchanged() {
        let mut input = b"Grip-Hold: response\nGrip-Channel: a\n".to_vec();
        input.extend_from_slice(format!("X: {}\n\nbody", "x".repeat(MAX_HEADER_BLOCK)).as_bytes());
        assert_eq!(whole(&input), (input.clone(), Ok(None)));
        let (a, b) = input.split_at(MAX_HEADER_BLOCK - 3);
        assert_eq!(run(&[a, b]), (input.clone(), Ok(None)));
        let pieces: Vec<&[u8]> = input.chunks(1000).collect();
        assert_eq!(run(&pieces), (input.clone(), Ok(None)));

        // Exactly at the limit, blank line included: parsed; one byte more: unchanged.
        let head = b"Grip-Channel: a\nX: ";
        for (pad, parsed) in [
            (MAX_HEADER_BLOCK - head.len() - 2, true),
            (MAX_HEADER_BLOCK - head.len() - 1, false),
        ] {
            let mut input = head.to_vec();
            input.extend(std::iter::repeat_n(b'x', pad));
            input.extend_from_slice(b"\n\nbody");
            let expected = if parsed { &input[16..] } else { &input[..] };
            assert_eq!(whole(&input), (expected.to_vec(), Ok(None)), "pad {pad}");
            let pieces: Vec<&[u8]> = input.chunks(999).collect();
            assert_eq!(run(&pieces), (expected.to_vec(), Ok(None)), "pad {pad}");
        }
    }

    #[test]
    fn held_response_over_the_limit_is_an_error() {
        let head = b"Grip-Hold: response\r\nGrip-Channel: a\r\n\r\n";
        let body = vec![b'b'; MAX_HELD_RESPONSE - 2];
        // "\r\n" + body is exactly the limit: held.
        let (out, result) = run(&[head, &body]);
        assert!(out.is_empty());
        assert_eq!(result.unwrap().unwrap().response.len(), MAX_HELD_RESPONSE);
        let (out, result) = run(&[head, &body, b"!"]);
        assert!(out.is_empty());
        assert_eq!(
            result,
            Err("Grip-Hold: the app's response is over 65536 bytes".into())
        );
    }

    #[test]
    fn body_passes_in_the_pieces_it_came_in() {
        let mut filter = GripFilter::new();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut emit = |b: &[u8]| {
            seen.push(b.to_vec());
            Ok(())
        };
        filter.feed(b"A: 1\r\n", &mut emit).unwrap();
        filter.feed(b"\r\nfirst", &mut emit).unwrap();
        filter.feed(b"second", &mut emit).unwrap();
        assert!(filter.finish(&mut emit).unwrap().is_none());
        assert_eq!(
            seen,
            [
                b"A: 1\r\n\r\n".to_vec(),
                b"first".to_vec(),
                b"second".to_vec()
            ]
        );
    }

    #[test]
    fn emit_errors_are_returned() {
        let mut filter = GripFilter::new();
        let mut failing = |_: &[u8]| Err(io::Error::from(io::ErrorKind::BrokenPipe));
        filter.feed(b"A: 1\n", &mut failing).unwrap(); // nothing emitted yet
        let e = filter.feed(b"\nbody", &mut failing).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        let mut filter = GripFilter::new();
        filter.feed(b"no blank line", &mut failing).unwrap();
        assert!(matches!(
            filter.finish(&mut failing),
            Err(GripError::Emit(_))
        ));
    }

    #[test]
    fn reusable_after_finish_and_reset() {
        let mut filter = GripFilter::new();
        let held_input: &[u8] = b"Grip-Hold: response\nGrip-Channel: a\n\nx";
        let plain: &[u8] = b"A: 1\n\nbody";
        assert_eq!(
            run_with(&mut filter, &[held_input]),
            (Vec::new(), Ok(held(&[("a", None)], 55, b"\nx")))
        );
        assert_eq!(run_with(&mut filter, &[plain]), (plain.to_vec(), Ok(None)));
        // Reset in the middle of a header block: nothing of it remains.
        filter.feed(b"Grip-Hold: resp", &mut |_| Ok(())).unwrap();
        filter.reset();
        assert_eq!(run_with(&mut filter, &[plain]), (plain.to_vec(), Ok(None)));
    }

    #[test]
    fn grip_lines_removed_in_place() {
        for (block, kept) in [
            (
                &b"Grip-A: 1\r\nB: 2\r\ngrip-c: 3\r\n\r\n"[..],
                &b"B: 2\r\n\r\n"[..],
            ),
            (b"B: 2\n\n", b"B: 2\n\n"),
            (b"Grip-x\n\nGrip-y\n", b"\nGrip-y\n"),
        ] {
            let mut v = block.to_vec();
            remove_grip_lines(&mut v);
            assert_eq!(v, kept, "{block:?}");
        }
    }
}
