//! FastCGI name-value pairs (the PARAMS stream and GET_VALUES bodies): lengths of 1 byte
//! (< 128) or 4 bytes (high bit set, 31 bits); encoding, a streaming nom parser, and the
//! [`ParamsBuilder`] that collects a PARAMS stream record by record.
//!
//! A pair may straddle PARAMS records, so the builder appends each record's content to one
//! buffer and parses pairs from it as soon as they are whole. A pair's declared lengths are
//! checked against the limit the moment its length bytes arrive — before any byte of it is
//! stored or waited for — so a declared length near 2^31 is refused at once.

use std::fmt;

use nom::bytes::streaming::take;
use nom::number::streaming::{be_u32, be_u8};
use nom::IResult;

use super::error::ProtocolError;

/// Largest length a name or value can declare (31 bits).
pub const MAX_PAIR_LEN: usize = 0x7fff_ffff;

/// A name or value longer than 2^31 - 1 bytes cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("name-value pair component of {len} bytes is longer than FastCGI's 2^31-1")]
pub struct PairTooLong {
    pub len: usize,
}

fn push_len(out: &mut Vec<u8>, len: usize) -> Result<(), PairTooLong> {
    if len < 128 {
        out.push(len as u8);
    } else if len <= MAX_PAIR_LEN {
        out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
    } else {
        return Err(PairTooLong { len });
    }
    Ok(())
}

/// Append one name-value pair (lengths, then name, then value).
pub fn encode_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> Result<(), PairTooLong> {
    push_len(out, name.len())?;
    push_len(out, value.len())?;
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    Ok(())
}

/// Append name-value pairs: the content of a PARAMS stream or a GET_VALUES(_RESULT) record.
pub fn encode_params<'a, I>(out: &mut Vec<u8>, pairs: I) -> Result<(), PairTooLong>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    for (name, value) in pairs {
        encode_pair(out, name, value)?;
    }
    Ok(())
}

/// One length: 1 byte when the high bit is clear, else 4 bytes with the high bit masked off.
fn length(input: &[u8]) -> IResult<&[u8], usize> {
    let (_, first) = be_u8(input)?;
    if first & 0x80 == 0 {
        Ok((&input[1..], first as usize))
    } else {
        let (rest, n) = be_u32(input)?;
        Ok((rest, (n & 0x7fff_ffff) as usize))
    }
}

/// nom parser of a pair's two lengths (streaming): `(name_len, value_len)`.
pub fn pair_lengths(input: &[u8]) -> IResult<&[u8], (usize, usize)> {
    let (input, name_len) = length(input)?;
    let (input, value_len) = length(input)?;
    Ok((input, (name_len, value_len)))
}

/// nom parser of one whole pair (streaming): `(name, value)` borrowed from the input.
pub fn parse_pair(input: &[u8]) -> IResult<&[u8], (&[u8], &[u8])> {
    let (input, (name_len, value_len)) = pair_lengths(input)?;
    let (input, name) = take(name_len)(input)?;
    let (input, value) = take(value_len)(input)?;
    Ok((input, (name, value)))
}

/// Where one pair lives in [`Params`]' buffer: name at `start..start+name_len`, value right
/// after it (that is how the wire lays them out, so parsing needs no copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    name_len: usize,
    value_len: usize,
}

/// A request's parameters (CGI environment), in the order they were sent. Names may repeat;
/// [`Params::get`] returns the **last** one, as php-cgi does (a later pair overwrites).
#[derive(Clone, Default)]
pub struct Params {
    /// The bytes the pairs point into (the raw PARAMS stream, or names and values
    /// concatenated when built in code).
    buf: Vec<u8>,
    spans: Vec<Span>,
}

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a pair at the end (for building requests in code and tests).
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(name);
        self.buf.extend_from_slice(value);
        self.spans.push(Span {
            start,
            name_len: name.len(),
            value_len: value.len(),
        });
    }

    fn pair(&self, span: &Span) -> (&[u8], &[u8]) {
        let name_end = span.start + span.name_len;
        (
            &self.buf[span.start..name_end],
            &self.buf[name_end..name_end + span.value_len],
        )
    }

    /// The value of the last pair named `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.spans
            .iter()
            .rev()
            .map(|s| self.pair(s))
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// [`Params::get`], when the value is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All pairs in the order they were sent.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|s| self.pair(s))
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Empty it, keeping the allocations (the connection reuses them for the next request).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.spans.clear();
    }
}

impl<N: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(N, V)> for Params {
    fn from_iter<T: IntoIterator<Item = (N, V)>>(iter: T) -> Self {
        let mut params = Params::new();
        for (n, v) in iter {
            params.push(n.as_ref(), v.as_ref());
        }
        params
    }
}

impl PartialEq for Params {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Params {}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(n, v)| (String::from_utf8_lossy(n), String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

/// A PARAMS stream (or any pair list) would exceed its byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    /// Bytes the stream has, or would have by a pair's declared lengths.
    pub attempted: u64,
}

/// Collects a PARAMS stream record by record into [`Params`], refusing it as soon as it is
/// known to exceed `max_bytes`.
#[derive(Debug, Default)]
pub struct ParamsBuilder {
    params: Params,
    /// Offset of the first byte of the buffer not yet parsed into a pair.
    parsed: usize,
}

impl ParamsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start over with `params`' allocations (emptied).
    pub fn reuse(mut params: Params) -> Self {
        params.clear();
        Self { params, parsed: 0 }
    }

    /// Bytes of the stream received so far.
    pub fn stream_len(&self) -> usize {
        self.params.buf.len()
    }

    /// Append one PARAMS record's content and parse every pair that is now whole.
    ///
    /// Errs when the stream would exceed `max_bytes`: either the bytes received, or — as
    /// soon as a pair's length bytes are in — the end that pair declares.
    pub fn push_content(&mut self, content: &[u8], max_bytes: usize) -> Result<(), OverLimit> {
        let new_len = self.params.buf.len() as u64 + content.len() as u64;
        if new_len > max_bytes as u64 {
            return Err(OverLimit { attempted: new_len });
        }
        self.params.buf.extend_from_slice(content);
        self.scan(max_bytes)
    }

    fn scan(&mut self, max_bytes: usize) -> Result<(), OverLimit> {
        loop {
            let rest = &self.params.buf[self.parsed..];
            if rest.is_empty() {
                return Ok(());
            }
            let Ok((after_lengths, (name_len, value_len))) = pair_lengths(rest) else {
                // Length bytes not all here yet; the name's length alone may already be
                // too much (the value's length takes at least one more byte).
                if let Ok((after_name_len, name_len)) = length(rest) {
                    let header_len = (rest.len() - after_name_len.len()) as u64 + 1;
                    let end = self.parsed as u64 + header_len + name_len as u64;
                    if end > max_bytes as u64 {
                        return Err(OverLimit { attempted: end });
                    }
                }
                return Ok(());
            };
            let header_len = rest.len() - after_lengths.len();
            let start = self.parsed + header_len;
            let end = start as u64 + name_len as u64 + value_len as u64;
            if end > max_bytes as u64 {
                return Err(OverLimit { attempted: end });
            }
            if end > self.params.buf.len() as u64 {
                return Ok(()); // wait for the rest of this pair
            }
            self.params.spans.push(Span {
                start,
                name_len,
                value_len,
            });
            self.parsed = end as usize;
        }
    }

    /// The stream ended (empty PARAMS record): every byte must belong to a whole pair.
    pub fn finish(self) -> Result<Params, ProtocolError> {
        if self.parsed != self.params.buf.len() {
            return Err(ProtocolError::TruncatedPair {
                offset: self.parsed,
                len: self.params.buf.len(),
            });
        }
        Ok(self.params)
    }
}

/// Parse a complete list of pairs (a whole PARAMS stream or a GET_VALUES body).
pub fn parse_params(content: &[u8]) -> Result<Params, ProtocolError> {
    let mut builder = ParamsBuilder::new();
    builder
        .push_content(content, content.len())
        .map_err(|_| ProtocolError::TruncatedPair {
            offset: builder_offset(content),
            len: content.len(),
        })?;
    builder.finish()
}

/// Where the first pair that runs past the end of `content` starts (for the error message).
fn builder_offset(content: &[u8]) -> usize {
    let mut rest = content;
    while let Ok((next, _)) = parse_pair(rest) {
        rest = next;
    }
    content.len() - rest.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_params(&mut out, pairs.iter().copied()).unwrap();
        out
    }

    #[test]
    fn length_encoding_boundaries() {
        // (length, encoded length bytes)
        let table: &[(usize, &[u8])] = &[
            (0, &[0]),
            (1, &[1]),
            (127, &[0x7f]),
            (128, &[0x80, 0, 0, 0x80]),
            (255, &[0x80, 0, 0, 0xff]),
            (65535, &[0x80, 0, 0xff, 0xff]),
            (65536, &[0x80, 1, 0, 0]),
            (MAX_PAIR_LEN, &[0xff, 0xff, 0xff, 0xff]),
        ];
        for (len, want) in table {
            let mut out = Vec::new();
            push_len(&mut out, *len).unwrap();
            assert_eq!(&out[..], *want, "length {len}");
            assert_eq!(length(&out).unwrap(), (&[][..], *len));
        }
        assert_eq!(
            push_len(&mut Vec::new(), MAX_PAIR_LEN + 1),
            Err(PairTooLong {
                len: MAX_PAIR_LEN + 1
            })
        );
    }

    #[test]
    fn four_byte_length_may_encode_small_values() {
        // The spec allows the 4-byte form for any length; some clients always use it.
        let input = [0x80, 0, 0, 1, 0x80, 0, 0, 2, b'A', b'b', b'c'];
        let (rest, pair) = parse_pair(&input).unwrap();
        assert!(rest.is_empty());
        assert_eq!(pair, (&b"A"[..], &b"bc"[..]));
    }

    #[test]
    fn pairs_at_the_boundaries_round_trip() {
        for name_len in [0, 1, 126, 127, 128, 129, 255, 256] {
            for value_len in [0, 1, 127, 128, 65535, 65536] {
                let name = vec![b'N'; name_len];
                let value = vec![b'v'; value_len];
                let bytes = encoded(&[(&name, &value), (b"Z", b"z")]);
                let params = parse_params(&bytes).unwrap();
                let got: Vec<_> = params.iter().collect();
                assert_eq!(got, vec![(&name[..], &value[..]), (&b"Z"[..], &b"z"[..])]);
            }
        }
    }

    #[test]
    fn parse_params_table() {
        let table: &[(&str, &[u8], Result<usize, ProtocolError>)] = &[
            ("nothing", &[], Ok(0)),
            ("one empty pair", &[0, 0], Ok(1)),
            ("name and value", &[1, 1, b'a', b'b'], Ok(1)),
            (
                "value cut",
                &[1, 2, b'a', b'b'],
                Err(ProtocolError::TruncatedPair { offset: 0, len: 4 }),
            ),
            (
                "lengths cut",
                &[0, 0, 0x80, 0],
                Err(ProtocolError::TruncatedPair { offset: 2, len: 4 }),
            ),
            (
                "length near 2^31",
                &[0xff, 0xff, 0xff, 0xfe, 0, b'x'],
                Err(ProtocolError::TruncatedPair { offset: 0, len: 6 }),
            ),
        ];
        for (name, input, want) in table {
            assert_eq!(parse_params(input).map(|p| p.len()), *want, "{name}");
        }
    }

    #[test]
    fn get_returns_the_last_duplicate_and_keeps_order() {
        let params: Params = [("A", "1"), ("B", "2"), ("A", "3")].into_iter().collect();
        assert_eq!(params.get("A"), Some(&b"3"[..]));
        assert_eq!(params.get_str("B"), Some("2"));
        assert_eq!(params.get("C"), None);
        let names: Vec<_> = params.iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![&b"A"[..], b"B", b"A"]);
        let non_utf8: Params = [(&b"X"[..], &[0xff][..])].into_iter().collect();
        assert_eq!(non_utf8.get_str("X"), None);
        assert_eq!(non_utf8.get("X"), Some(&[0xff][..]));
    }

    #[test]
    fn builder_refuses_a_huge_declared_length_before_its_bytes_arrive() {
        let mut builder = ParamsBuilder::new();
        // name length 0x7ffffff0 (4-byte form), value length 0: only 5 bytes sent.
        let err = builder
            .push_content(&[0xff, 0xff, 0xff, 0xf0, 0], 1 << 20)
            .unwrap_err();
        assert_eq!(
            err,
            OverLimit {
                attempted: 5 + 0x7fff_fff0
            }
        );
        assert!(builder.params.buf.capacity() < 1024, "nothing was reserved");
    }

    #[test]
    fn builder_refuses_a_huge_name_length_before_the_value_length_arrives() {
        let mut builder = ParamsBuilder::new();
        let err = builder
            .push_content(&[0xff, 0xff, 0xff, 0xff], 1 << 20)
            .unwrap_err();
        assert_eq!(
            err,
            OverLimit {
                attempted: 5 + 0x7fff_ffff
            }
        );
        // A small name length with its value length still missing just waits.
        let mut builder = ParamsBuilder::new();
        builder.push_content(&[0x05], 1 << 20).unwrap();
        builder.push_content(&[0x80, 0x00], 1 << 20).unwrap();
        builder.push_content(&[0x00, 0x01, b'a'], 1 << 20).unwrap();
    }

    #[test]
    fn builder_refuses_a_stream_over_the_limit() {
        let mut builder = ParamsBuilder::new();
        builder.push_content(&[0, 0, 0, 0], 6).unwrap();
        assert_eq!(
            builder.push_content(&[0, 0, 0], 6),
            Err(OverLimit { attempted: 7 })
        );
        // Exactly at the limit is fine.
        let mut builder = ParamsBuilder::new();
        builder.push_content(&[2, 0, b'a', b'b'], 4).unwrap();
        assert_eq!(builder.finish().unwrap().get_str("ab"), Some(""));
    }

    proptest! {
        #[test]
        fn split_at_every_point_round_trips(
            pairs in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..200),
                 proptest::collection::vec(any::<u8>(), 0..300)),
                0..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..5),
        ) {
            let mut bytes = Vec::new();
            encode_params(&mut bytes, pairs.iter().map(|(n, v)| (&n[..], &v[..]))).unwrap();
            // Split the stream into records at arbitrary points.
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            points.push(0);
            points.push(bytes.len());
            points.sort();
            let mut builder = ParamsBuilder::new();
            for w in points.windows(2) {
                builder.push_content(&bytes[w[0]..w[1]], bytes.len()).unwrap();
            }
            let params = builder.finish().unwrap();
            let got: Vec<(Vec<u8>, Vec<u8>)> =
                params.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
            prop_assert_eq!(got, pairs);
        }

        #[test]
        fn byte_by_byte_round_trips(
            pairs in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 120..136),
                 proptest::collection::vec(any::<u8>(), 0..140)),
                1..4),
        ) {
            let mut bytes = Vec::new();
            encode_params(&mut bytes, pairs.iter().map(|(n, v)| (&n[..], &v[..]))).unwrap();
            let mut builder = ParamsBuilder::new();
            for b in &bytes {
                builder.push_content(std::slice::from_ref(b), bytes.len()).unwrap();
            }
            let params = builder.finish().unwrap();
            prop_assert_eq!(params.len(), pairs.len());
            for ((n, v), (gn, gv)) in pairs.iter().zip(params.iter()) {
                prop_assert_eq!(&n[..], gn);
                prop_assert_eq!(&v[..], gv);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_params(&input);
            let mut b = ParamsBuilder::new();
            let _ = b.push_content(&input, 32);
        }
    }
}
