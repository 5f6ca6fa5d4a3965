//! The client's side of a response: a pure reader that collects one request's STDOUT and
//! STDERR records until its END_REQUEST. An empty STDOUT record before END_REQUEST is not
//! required: php-cgi and php-fpm send END_REQUEST right after their last STDOUT data.

use super::error::ProtocolError;
use super::record::{parse_end_request, parse_record, RecordType};

/// A complete response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientResponse {
    /// The STDOUT stream: CGI headers, blank line, body.
    pub stdout: Vec<u8>,
    /// The STDERR stream (what the app wants logged).
    pub stderr: Vec<u8>,
    /// END_REQUEST's application status.
    pub app_status: u32,
    /// END_REQUEST's protocol status, raw (`FCGI_REQUEST_COMPLETE` = 0, ...): reported, not
    /// judged, so callers can show CANT_MPX_CONN, OVERLOADED or UNKNOWN_ROLE as they are.
    pub protocol_status: u8,
}

/// Collects the response to request `request_id`, record by record.
#[derive(Debug)]
pub struct ResponseReader {
    request_id: u16,
    response: ClientResponse,
    /// END_REQUEST has been read: the response is complete.
    done: bool,
    /// Bytes consumed so far (for the "closed before END_REQUEST" message).
    received: usize,
}

impl ResponseReader {
    pub fn new(request_id: u16) -> Self {
        Self {
            request_id,
            response: ClientResponse::default(),
            done: false,
            received: 0,
        }
    }

    /// Consume as many whole records from `input` as there are, stopping after END_REQUEST.
    /// Returns the bytes consumed; a partial record at the end is left for the next call.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, ProtocolError> {
        let mut at = 0;
        while !self.done {
            let Some((record, used)) = parse_record(&input[at..])? else {
                break;
            };
            let header = record.header;
            if header.request_id != self.request_id {
                return Err(ProtocolError::UnexpectedRecord {
                    record_type: header.record_type.as_u8(),
                    request_id: header.request_id,
                });
            }
            match header.record_type {
                RecordType::Stdout => self.response.stdout.extend_from_slice(record.content),
                RecordType::Stderr => self.response.stderr.extend_from_slice(record.content),
                RecordType::EndRequest => {
                    let end = parse_end_request(record.content)?;
                    self.response.app_status = end.app_status;
                    self.response.protocol_status = end.protocol_status;
                    self.done = true;
                }
                other => {
                    return Err(ProtocolError::UnexpectedRecord {
                        record_type: other.as_u8(),
                        request_id: header.request_id,
                    })
                }
            }
            at += used;
            self.received += used;
        }
        Ok(at)
    }

    /// END_REQUEST has arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The response, if END_REQUEST arrived; otherwise the connection closed too early.
    pub fn finish(self) -> Result<ClientResponse, ProtocolError> {
        if self.done {
            Ok(self.response)
        } else {
            Err(ProtocolError::ClosedBeforeEnd {
                received: self.received,
            })
        }
    }
}

/// Parse a whole captured response to `request_id`; returns it and the bytes it used.
pub fn parse_response(
    bytes: &[u8],
    request_id: u16,
) -> Result<(ClientResponse, usize), ProtocolError> {
    let mut reader = ResponseReader::new(request_id);
    let used = reader.feed(bytes)?;
    reader.finish().map(|r| (r, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::record::{encode_end_request, encode_record, ProtocolStatus};
    use proptest::prelude::*;

    fn response(stdout: &[u8], stderr: &[u8], empty_stdout_record: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if !stdout.is_empty() {
            encode_record(&mut out, RecordType::Stdout, 1, stdout);
        }
        if !stderr.is_empty() {
            encode_record(&mut out, RecordType::Stderr, 1, stderr);
        }
        if empty_stdout_record {
            encode_record(&mut out, RecordType::Stdout, 1, b"");
        }
        encode_end_request(&mut out, 1, 3, ProtocolStatus::RequestComplete);
        out
    }

    #[test]
    fn with_and_without_the_empty_stdout_record() {
        for empty in [true, false] {
            let bytes = response(b"Status: 200\r\n\r\nhi", b"warn", empty);
            let (r, used) = parse_response(&bytes, 1).unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(r.stdout, b"Status: 200\r\n\r\nhi");
            assert_eq!(r.stderr, b"warn");
            assert_eq!((r.app_status, r.protocol_status), (3, 0));
        }
    }

    #[test]
    fn errors_table() {
        let mut other_id = Vec::new();
        encode_record(&mut other_id, RecordType::Stdout, 2, b"x");
        let mut unknown_type = Vec::new();
        crate::fastcgi::record::encode_unknown_type(&mut unknown_type, 99);
        let mut stdin_back = Vec::new();
        encode_record(&mut stdin_back, RecordType::Stdin, 1, b"x");
        let cut = response(b"abc", b"", false);
        let table: Vec<(&str, Vec<u8>, ProtocolError)> = vec![
            (
                "other request id",
                other_id,
                ProtocolError::UnexpectedRecord {
                    record_type: 6,
                    request_id: 2,
                },
            ),
            (
                "unknown type reply",
                unknown_type,
                ProtocolError::UnexpectedRecord {
                    record_type: 11,
                    request_id: 0,
                },
            ),
            (
                "stdin in a response",
                stdin_back,
                ProtocolError::UnexpectedRecord {
                    record_type: 5,
                    request_id: 1,
                },
            ),
            (
                "cut before end",
                cut[..cut.len() - 3].to_vec(),
                ProtocolError::ClosedBeforeEnd { received: 16 },
            ),
            (
                "garbage",
                b"HTTP/1.1 200 OK".to_vec(),
                ProtocolError::BadVersion { version: b'H' },
            ),
        ];
        for (name, bytes, want) in table {
            assert_eq!(parse_response(&bytes, 1).unwrap_err(), want, "{name}");
        }
    }

    proptest! {
        #[test]
        fn fed_in_pieces_equals_all_at_once(
            len in prop_oneof![0usize..300, 65530usize..65542, 100_000usize..140_000],
            seed in any::<u8>(),
            stderr in proptest::collection::vec(any::<u8>(), 0..100),
            step in 1usize..5000,
        ) {
            let stdout: Vec<u8> = (0..len).map(|i| seed ^ (i as u8).wrapping_mul(31)).collect();
            let bytes = response(&stdout, &stderr, true);
            let mut reader = ResponseReader::new(1);
            let (mut start, mut end) = (0, 0);
            while !reader.is_done() {
                prop_assert!(end < bytes.len());
                end = (end + step).min(bytes.len());
                start += reader.feed(&bytes[start..end]).unwrap();
            }
            let r = reader.finish().unwrap();
            prop_assert_eq!(r.stdout, stdout);
            prop_assert_eq!(r.stderr, stderr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_response(&input, 1);
        }
    }
}
