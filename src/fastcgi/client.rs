//! fastpm's FastCGI client (used by `fastpm request`, `fastpm bench` and the php-cgi
//! upstream): one request/response round trip over any blocking stream, and GET_VALUES.
//! Connecting with retries lives in `connect.rs` and is re-exported here.

use std::io::{self, Read, Write};

use super::client_reader::ResponseReader;
use super::error::ProtocolError;
use super::params::{encode_params, parse_params, PairTooLong};
use super::record::{
    encode_begin_request, encode_record, encode_stream, parse_record, parse_unknown_type,
    RecordType, Role, NULL_REQUEST_ID,
};

pub use super::client_reader::{parse_response, ClientResponse};
pub use super::connect::{connect_with_retry, is_retryable, ClientStream, RetryPolicy};

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed (after retries, for EAGAIN/ECONNREFUSED).
    #[error("cannot connect to {address} ({attempts} attempts): {source}")]
    Connect {
        /// The address as configured (`unix:/run/x.sock`, `127.0.0.1:9000`).
        address: String,
        /// How many connects were tried: > 1 means the server refused or its queue was full.
        attempts: u32,
        #[source]
        source: io::Error,
    },
    /// A `systemd:` address cannot be dialled.
    #[error("cannot connect to {0}: only unix:PATH and IP:PORT addresses can be dialled")]
    Unsupported(String),
    /// Reading or writing the connection failed.
    #[error("FastCGI connection I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The server's answer is not valid FastCGI (or ended early).
    #[error("bad FastCGI response: {0}")]
    Protocol(#[from] ProtocolError),
    /// The server does not know GET_VALUES (it answered UNKNOWN_TYPE).
    #[error("the server does not understand record type {0}")]
    UnknownType(u8),
    /// A parameter cannot be encoded.
    #[error(transparent)]
    Encode(#[from] PairTooLong),
}

/// One request to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRequest {
    /// CGI parameters, sent in this order.
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
    /// The request body (STDIN stream).
    pub body: Vec<u8>,
    /// Ask the server to keep the connection for another request.
    pub keep_conn: bool,
}

/// Append the whole request (BEGIN_REQUEST, PARAMS stream, STDIN stream) to `out`.
pub fn encode_request(
    out: &mut Vec<u8>,
    request_id: u16,
    request: &ClientRequest,
) -> Result<(), PairTooLong> {
    let mut params = Vec::new();
    encode_params(
        &mut params,
        request.params.iter().map(|(n, v)| (&n[..], &v[..])),
    )?;
    out.reserve(64 + params.len() + request.body.len());
    encode_begin_request(out, request_id, Role::Responder.as_u16(), request.keep_conn);
    encode_stream(out, RecordType::Params, request_id, &params);
    encode_stream(out, RecordType::Stdin, request_id, &request.body);
    Ok(())
}

/// Read size of the client.
const READ_CHUNK: usize = 64 * 1024;

/// Read records until `reader` has its END_REQUEST.
fn read_response<S: Read>(stream: &mut S, request_id: u16) -> Result<ClientResponse, ClientError> {
    let mut reader = ResponseReader::new(request_id);
    // Holds at most one partial record between reads.
    let mut buf = Vec::with_capacity(READ_CHUNK);
    while !reader.is_done() {
        let end = buf.len();
        buf.resize(end + READ_CHUNK, 0);
        let n = loop {
            match stream.read(&mut buf[end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(end);
                return Err(e.into());
            }
        };
        buf.truncate(end + n);
        if n == 0 {
            break;
        }
        let used = reader.feed(&buf)?;
        buf.drain(..used);
    }
    Ok(reader.finish()?)
}

/// Send one request and read its response. If the server stops reading and closes early
/// (e.g. a 413 answer while the body is still being sent), the response it managed to send is
/// still returned.
pub fn round_trip<S: Read + Write>(
    stream: &mut S,
    request_id: u16,
    request: &ClientRequest,
) -> Result<ClientResponse, ClientError> {
    let mut out = Vec::new();
    encode_request(&mut out, request_id, request)?;
    let written = stream.write_all(&out).and_then(|()| stream.flush());
    match written {
        Ok(()) => read_response(stream, request_id),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            read_response(stream, request_id).map_err(|_| ClientError::Io(e))
        }
        Err(e) => Err(e.into()),
    }
}

/// Ask the server for `names` (e.g. `FCGI_MAX_CONNS`) with GET_VALUES; returns the pairs it
/// answered, in its order (unknown names are omitted by the server).
pub fn get_values<S: Read + Write>(
    stream: &mut S,
    names: &[&str],
) -> Result<Vec<(String, String)>, ClientError> {
    let mut content = Vec::new();
    encode_params(&mut content, names.iter().map(|n| (n.as_bytes(), &b""[..])))?;
    let mut out = Vec::new();
    encode_record(&mut out, RecordType::GetValues, NULL_REQUEST_ID, &content);
    stream.write_all(&out)?;
    stream.flush()?;

    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        if let Some((record, _)) = parse_record(&buf)? {
            let (t, id) = (record.header.record_type, record.header.request_id);
            return match (t, id) {
                (RecordType::GetValuesResult, NULL_REQUEST_ID) => {
                    let pairs = parse_params(record.content)?;
                    Ok(pairs
                        .iter()
                        .map(|(n, v)| {
                            (
                                String::from_utf8_lossy(n).into_owned(),
                                String::from_utf8_lossy(v).into_owned(),
                            )
                        })
                        .collect())
                }
                (RecordType::UnknownType, NULL_REQUEST_ID) => Err(ClientError::UnknownType(
                    parse_unknown_type(record.content)?,
                )),
                _ => Err(ProtocolError::UnexpectedRecord {
                    record_type: t.as_u8(),
                    request_id: id,
                }
                .into()),
            };
        }
        let n = match stream.read(&mut chunk) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        if n == 0 {
            return Err(ProtocolError::ClosedBeforeEnd {
                received: buf.len(),
            }
            .into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::assemble::{Assembler, Event};
    use crate::fastcgi::limits::Limits;
    use crate::fastcgi::record::{encode_end_request, ProtocolStatus};
    use std::io::Cursor;

    /// A fake server: what the client writes is kept; reads come from a canned answer.
    struct Canned {
        answer: Cursor<Vec<u8>>,
        written: Vec<u8>,
        fail_writes: bool,
    }

    impl Read for Canned {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // Small reads, to exercise reassembly.
            let n = buf.len().min(7);
            self.answer.read(&mut buf[..n])
        }
    }

    impl Write for Canned {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.fail_writes {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.written.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn answer(id: u16) -> Vec<u8> {
        let mut a = Vec::new();
        encode_record(&mut a, RecordType::Stdout, id, b"Status: 200\r\n\r\nok");
        encode_end_request(&mut a, id, 0, ProtocolStatus::RequestComplete);
        a
    }

    #[test]
    fn round_trip_sends_a_request_the_assembler_reads() {
        let mut server = Canned {
            answer: Cursor::new(answer(5)),
            written: Vec::new(),
            fail_writes: false,
        };
        let request = ClientRequest {
            params: vec![(b"SCRIPT_NAME".to_vec(), b"/x".to_vec())],
            body: vec![b'q'; 100_000],
            keep_conn: true,
        };
        let response = round_trip(&mut server, 5, &request).unwrap();
        assert_eq!(response.stdout, b"Status: 200\r\n\r\nok");

        let mut a = Assembler::new(&Limits::default());
        let mut at = 0;
        let mut replies = Vec::new();
        let got = loop {
            let fed = a.feed(&server.written[at..], &mut replies).unwrap();
            assert!(fed.consumed > 0);
            at += fed.consumed;
            if let Some(Event::Complete(r)) = fed.event {
                break r;
            }
        };
        assert_eq!(at, server.written.len());
        assert_eq!(got.request_id, 5);
        assert!(got.keep_conn);
        assert_eq!(got.params.get_str("SCRIPT_NAME"), Some("/x"));
        assert_eq!(got.stdin, request.body);
    }

    #[test]
    fn an_early_answer_survives_a_broken_pipe() {
        let mut server = Canned {
            answer: Cursor::new(answer(1)),
            written: Vec::new(),
            fail_writes: true,
        };
        let r = round_trip(&mut server, 1, &ClientRequest::default()).unwrap();
        assert_eq!(r.protocol_status, 0);
        let mut silent = Canned {
            answer: Cursor::new(Vec::new()),
            written: Vec::new(),
            fail_writes: true,
        };
        let err = round_trip(&mut silent, 1, &ClientRequest::default()).unwrap_err();
        assert!(matches!(err, ClientError::Io(ref e) if e.kind() == io::ErrorKind::BrokenPipe));
    }

    #[test]
    fn get_values_reads_the_result_and_reports_unknown_type() {
        let mut result = Vec::new();
        let mut content = Vec::new();
        encode_params(&mut content, [(&b"FCGI_MAX_CONNS"[..], &b"4"[..])]).unwrap();
        encode_record(&mut result, RecordType::GetValuesResult, 0, &content);
        let mut server = Canned {
            answer: Cursor::new(result),
            written: Vec::new(),
            fail_writes: false,
        };
        let got = get_values(&mut server, &["FCGI_MAX_CONNS", "X"]).unwrap();
        assert_eq!(got, vec![("FCGI_MAX_CONNS".to_string(), "4".to_string())]);

        let mut unknown = Vec::new();
        crate::fastcgi::record::encode_unknown_type(&mut unknown, 9);
        let mut server = Canned {
            answer: Cursor::new(unknown),
            written: Vec::new(),
            fail_writes: false,
        };
        assert!(matches!(
            get_values(&mut server, &["FCGI_MAX_CONNS"]),
            Err(ClientError::UnknownType(9))
        ));
        let mut closed = Canned {
            answer: Cursor::new(Vec::new()),
            written: Vec::new(),
            fail_writes: false,
        };
        assert!(matches!(
            get_values(&mut closed, &["FCGI_MAX_CONNS"]),
            Err(ClientError::Protocol(ProtocolError::ClosedBeforeEnd { .. }))
        ));
    }
}
