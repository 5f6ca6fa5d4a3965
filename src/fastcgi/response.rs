//! What the application sends back: STDOUT/STDERR streams ([`ResponseWriter`], buffered and
//! split into records of at most 65535 bytes), END_REQUEST, GET_VALUES_RESULT, and the
//! CGI responses for requests refused by a limit (431/413).

use std::io::{self, Write};

use super::error::{LimitExceeded, LimitKind};
use super::limits::Limits;
use super::params::{encode_pair, Params};
use super::record::{
    encode_end_request, encode_record, encode_stream, ProtocolStatus, RecordType, MAX_CONTENT_LEN,
    NULL_REQUEST_ID,
};
use crate::hold::grip::GripFilter;
use crate::hold::wire::{Ask, WireChannel, MAX_CHANNELS};

/// app_status of the END_REQUEST that answers ABORT_REQUEST. The spec asks for
/// `{FCGI_REQUEST_COMPLETE, appStatus}` "as soon as possible"; the app never ran, nothing
/// failed, so 0.
pub const ABORTED_APP_STATUS: u32 = 0;
/// app_status of the END_REQUEST after a 431/413 answer: non-zero, as a CGI program that
/// refused its input would exit.
pub const LIMIT_APP_STATUS: u32 = 1;

/// Buffered bytes beyond which a [`ResponseWriter`] writes to the connection while the
/// handler is still producing output (streaming); small responses stay in one write.
pub const FLUSH_THRESHOLD: usize = 128 * 1024;

/// GET_VALUES names we answer. Others are omitted, as the spec says.
pub const FCGI_MAX_CONNS: &str = "FCGI_MAX_CONNS";
pub const FCGI_MAX_REQS: &str = "FCGI_MAX_REQS";
pub const FCGI_MPXS_CONNS: &str = "FCGI_MPXS_CONNS";

/// Writes one request's response as STDOUT/STDERR records into a buffer that goes to the
/// connection in as few `write()` calls as possible: at [`ResponseWriter::finish`] (together
/// with the stream ends and END_REQUEST) or whenever more than [`FLUSH_THRESHOLD`] bytes are
/// waiting.
pub struct ResponseWriter<'a> {
    sink: &'a mut dyn Write,
    buf: &'a mut Vec<u8>,
    request_id: u16,
    /// STDERR is only ended with an empty record when something was sent on it.
    stderr_used: bool,
    /// Normally REQUEST_COMPLETE; the worker sets OVERLOADED when it sheds a request.
    protocol_status: ProtocolStatus,
    /// A write to the connection failed: an error from the handler is then a connection
    /// error (client gone), not an application failure.
    write_failed: bool,
    /// Relayed apps (php, cgi): STDOUT goes through GRIP's filter, which strips `Grip-*`
    /// headers and captures a `Grip-Hold` response instead of sending it (DESIGN §8).
    grip: Option<&'a mut GripFilter>,
    /// The app asked for the request to be held (GRIP, or the `longpoll` app): nothing of
    /// STDOUT is sent and no END_REQUEST; the master's holder answers later.
    hold: Option<Ask>,
    /// The start of STDOUT (status, headers) for the access log (`crate::logs`).
    head: crate::logs::ResponseHead,
    /// The answer was ended before the app returned (PHP's `fastcgi_finish_request()`, see
    /// [`Self::end_early`]): what the app writes after it goes nowhere.
    ended: bool,
    /// What ending early left for [`Self::finish`] to return (a GRIP hold found then).
    early_ask: Option<Ask>,
}

impl<'a> ResponseWriter<'a> {
    /// A writer for request `request_id`, buffering in `buf` (which may already hold replies
    /// to send first) and writing to `sink`.
    pub fn new(sink: &'a mut dyn Write, buf: &'a mut Vec<u8>, request_id: u16) -> Self {
        Self {
            sink,
            buf,
            request_id,
            stderr_used: false,
            protocol_status: ProtocolStatus::RequestComplete,
            write_failed: false,
            grip: None,
            hold: None,
            head: crate::logs::ResponseHead::new(),
            ended: false,
            early_ask: None,
        }
    }

    /// The response's head as the app wrote it (status, headers), for the access log.
    pub fn response_head(&self) -> &crate::logs::ResponseHead {
        &self.head
    }

    /// Send STDOUT through `grip` (a relayed app's response may ask to be held).
    pub fn with_grip(mut self, grip: Option<&'a mut GripFilter>) -> Self {
        self.grip = grip;
        self
    }

    /// The request is to be held: [`Self::finish`] returns `ask` instead of ending the
    /// response. What was written to STDOUT so far is dropped.
    pub fn hold(&mut self, ask: Ask) {
        self.hold = Some(ask);
    }

    pub fn request_id(&self) -> u16 {
        self.request_id
    }

    /// Append to the STDOUT stream (CGI headers, blank line, body). Empty input sends nothing
    /// (an empty record would end the stream).
    pub fn stdout(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.ended {
            return Ok(());
        }
        self.head.observe(bytes);
        match self.grip.take() {
            None => self.stream(RecordType::Stdout, bytes),
            Some(grip) => {
                let result = grip.feed(bytes, &mut |b| self.stream(RecordType::Stdout, b));
                self.grip = Some(grip);
                result
            }
        }
    }

    /// Append to the STDERR stream (the web server logs it).
    pub fn stderr(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.ended {
            return Ok(());
        }
        if !bytes.is_empty() {
            self.stderr_used = true;
        }
        self.stream(RecordType::Stderr, bytes)
    }

    /// The protocol status END_REQUEST will carry (e.g. OVERLOADED for a shed request).
    pub fn set_protocol_status(&mut self, status: ProtocolStatus) {
        self.protocol_status = status;
    }

    /// Whether a write to the connection has failed (the client is gone).
    pub fn write_failed(&self) -> bool {
        self.write_failed
    }

    fn stream(&mut self, record_type: RecordType, bytes: &[u8]) -> io::Result<()> {
        for chunk in bytes.chunks(MAX_CONTENT_LEN) {
            encode_record(self.buf, record_type, self.request_id, chunk);
            if self.buf.len() >= FLUSH_THRESHOLD {
                self.flush_buffer()?;
            }
        }
        Ok(())
    }

    fn flush_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.sink.write_all(self.buf);
        self.buf.clear();
        if result.is_err() {
            self.write_failed = true;
        }
        result
    }

    /// Send what is buffered now (long-polling and streaming apps push partial output).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.ended {
            return Ok(());
        }
        self.flush_buffer()?;
        let result = self.sink.flush();
        if result.is_err() {
            self.write_failed = true;
        }
        result
    }

    /// End the streams, append END_REQUEST with `app_status`, and write everything — or, when
    /// the request is to be held, send only what is buffered (STDERR) and return what the
    /// holder needs.
    pub fn finish(mut self, app_status: u32) -> io::Result<Option<Ask>> {
        if self.ended {
            return Ok(self.early_ask.take());
        }
        self.end(app_status)
    }

    /// End the answer now, while the app goes on (PHP's `fastcgi_finish_request()`): the web
    /// server gets the end of the streams and END_REQUEST with `app_status`; later output is
    /// dropped and [`Self::finish`] sends nothing more. A no-op the second time.
    pub fn end_early(&mut self, app_status: u32) -> io::Result<()> {
        if self.ended {
            return Ok(());
        }
        let ask = self.end(app_status);
        self.ended = true;
        self.early_ask = ask?;
        Ok(())
    }

    fn end(&mut self, app_status: u32) -> io::Result<Option<Ask>> {
        if let Some(grip) = self.grip.take() {
            let request_id = self.request_id;
            match grip.finish(&mut |b| self.stream(RecordType::Stdout, b)) {
                Ok(None) => {}
                Ok(Some(held)) if held.hold.channels.len() > MAX_CHANNELS => {
                    tracing::warn!(
                        request_id,
                        "GRIP: over {MAX_CHANNELS} channels; answered 502"
                    );
                    let text = format!(
                        "Status: 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGRIP: over {MAX_CHANNELS} channels in one hold\n"
                    );
                    self.stream(RecordType::Stdout, text.as_bytes())?;
                }
                Ok(Some(held)) => {
                    self.hold = Some(Ask::Grip {
                        channels: held
                            .hold
                            .channels
                            .into_iter()
                            .map(|c| WireChannel {
                                name: c.name,
                                after: c.prev_id,
                            })
                            .collect(),
                        timeout_ms: u32::try_from(held.hold.timeout.as_millis())
                            .unwrap_or(u32::MAX),
                        response: held.response,
                    })
                }
                Err(e) => {
                    tracing::warn!(request_id, error = %e, "GRIP instructions refused; answered 502");
                    let text = format!(
                        "Status: 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGRIP: {e}\n"
                    );
                    self.stream(RecordType::Stdout, text.as_bytes())?;
                }
            }
        }
        if let Some(ask) = self.hold.take() {
            // Only STDERR can be buffered here (STDOUT went to the filter or was not written).
            self.flush()?;
            return Ok(Some(ask));
        }
        encode_stream(self.buf, RecordType::Stdout, self.request_id, &[]);
        if self.stderr_used {
            encode_stream(self.buf, RecordType::Stderr, self.request_id, &[]);
        }
        encode_end_request(self.buf, self.request_id, app_status, self.protocol_status);
        self.flush()?;
        Ok(None)
    }
}

/// A whole answer to request `request_id` — `cgi` (headers, blank line, body) as STDOUT
/// records, the end of STDOUT, END_REQUEST — appended to `out`: for answers written outside a
/// [`ResponseWriter`] (the master's holder, a worker that could not hand a request over).
pub fn encode_whole_response(out: &mut Vec<u8>, request_id: u16, cgi: &[u8]) {
    for chunk in cgi.chunks(MAX_CONTENT_LEN) {
        encode_record(out, RecordType::Stdout, request_id, chunk);
    }
    encode_stream(out, RecordType::Stdout, request_id, &[]);
    encode_end_request(out, request_id, 0, ProtocolStatus::RequestComplete);
}

/// `write!` into a response writes to STDOUT.
impl Write for ResponseWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.stdout(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        ResponseWriter::flush(self)
    }
}

/// Append the GET_VALUES_RESULT answering a GET_VALUES whose names are `asked`: each known
/// name once, in the order asked; unknown names omitted. MPXS_CONNS is 0: a connection
/// carries one request at a time.
pub fn encode_get_values_result(out: &mut Vec<u8>, asked: &Params, limits: &Limits) {
    let mut content = Vec::with_capacity(64);
    let mut answered: [bool; 3] = [false; 3];
    for (name, _) in asked.iter() {
        let (slot, value) = match name {
            n if n == FCGI_MAX_CONNS.as_bytes() => (0, limits.max_conns),
            n if n == FCGI_MAX_REQS.as_bytes() => (1, limits.max_reqs),
            n if n == FCGI_MPXS_CONNS.as_bytes() => (2, 0),
            _ => continue,
        };
        if answered[slot] {
            continue;
        }
        answered[slot] = true;
        // Known names and decimal u32 values are far below the pair length limit.
        let _ = encode_pair(&mut content, name, value.to_string().as_bytes());
    }
    encode_record(out, RecordType::GetValuesResult, NULL_REQUEST_ID, &content);
}

/// The CGI response (headers + text body) for a request refused by a limit.
pub fn limit_response_body(limit: &LimitExceeded) -> Vec<u8> {
    let what = match limit.kind {
        LimitKind::Params => "FastCGI params (the request's CGI headers)",
        LimitKind::Body => "request body",
    };
    let text = format!(
        "Request refused: its {what} exceed {key} = {max} bytes (at least {attempted} bytes sent or declared).\n",
        key = limit.kind.key(),
        max = limit.max,
        attempted = limit.attempted,
    );
    format!(
        "Status: {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{}",
        limit.kind.status_line(),
        text.len(),
        text
    )
    .into_bytes()
}

/// Append the whole answer to a refused request: STDOUT with [`limit_response_body`], the
/// end of STDOUT, END_REQUEST(REQUEST_COMPLETE, [`LIMIT_APP_STATUS`]).
pub fn encode_limit_response(out: &mut Vec<u8>, limit: &LimitExceeded) {
    encode_stream(
        out,
        RecordType::Stdout,
        limit.request_id,
        &limit_response_body(limit),
    );
    encode_end_request(
        out,
        limit.request_id,
        LIMIT_APP_STATUS,
        ProtocolStatus::RequestComplete,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::params::parse_params;
    use crate::fastcgi::record::{parse_end_request, parse_record, Record};

    fn records(mut bytes: &[u8]) -> Vec<(RecordType, u16, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (Record { header, content }, used) = parse_record(bytes).unwrap().unwrap();
            out.push((header.record_type, header.request_id, content.to_vec()));
            bytes = &bytes[used..];
        }
        out
    }

    /// Counts write calls, to check that small responses go out in one.
    #[derive(Default)]
    struct CountingSink {
        bytes: Vec<u8>,
        writes: usize,
    }

    impl Write for CountingSink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            self.bytes.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// PHP's fastcgi_finish_request(): END_REQUEST goes out at once, what the app writes
    /// after is dropped, and finish() sends nothing more.
    #[test]
    fn ending_early_sends_end_request_once() {
        let mut sink = CountingSink::default();
        let mut buf = Vec::new();
        let mut w = ResponseWriter::new(&mut sink, &mut buf, 3);
        w.stdout(b"Status: 202 Accepted\r\n\r\nqueued").unwrap();
        w.end_early(0).unwrap();
        w.end_early(0).unwrap();
        w.stdout(b"after").unwrap();
        w.stderr(b"late warning").unwrap();
        w.flush().unwrap();
        assert_eq!(w.finish(0).unwrap(), None);
        let recs = records(&sink.bytes);
        let types: Vec<_> = recs.iter().map(|r| (r.0, r.1, r.2.len())).collect();
        assert_eq!(
            types,
            vec![
                (RecordType::Stdout, 3, 30),
                (RecordType::Stdout, 3, 0),
                (RecordType::EndRequest, 3, 8)
            ]
        );
        assert_eq!(sink.writes, 1);
    }

    #[test]
    fn small_response_is_one_write() {
        let mut sink = CountingSink::default();
        let mut buf = Vec::new();
        let mut w = ResponseWriter::new(&mut sink, &mut buf, 1);
        w.stdout(b"Content-Type: text/plain\r\n\r\n").unwrap();
        w.stdout(b"").unwrap();
        w.stdout(b"pong").unwrap();
        w.finish(0).unwrap();
        assert_eq!(sink.writes, 1);
        let recs = records(&sink.bytes);
        let types: Vec<_> = recs.iter().map(|r| (r.0, r.2.len())).collect();
        assert_eq!(
            types,
            vec![
                (RecordType::Stdout, 28),
                (RecordType::Stdout, 4),
                (RecordType::Stdout, 0),
                (RecordType::EndRequest, 8)
            ]
        );
        let end = parse_end_request(&recs[3].2).unwrap();
        assert_eq!((end.app_status, end.protocol_status), (0, 0));
    }

    #[test]
    fn large_output_streams_in_records_of_at_most_65535() {
        let mut sink = CountingSink::default();
        let mut buf = Vec::new();
        let body = vec![b'z'; 1_000_000];
        let mut w = ResponseWriter::new(&mut sink, &mut buf, 3);
        w.stdout(&body).unwrap();
        w.stderr(b"warning").unwrap();
        w.set_protocol_status(ProtocolStatus::Overloaded);
        w.finish(7).unwrap();
        assert!(
            sink.writes > 1 && sink.writes < 20,
            "{} writes",
            sink.writes
        );
        let recs = records(&sink.bytes);
        let mut stdout = Vec::new();
        for r in &recs {
            assert!(r.2.len() <= 65535);
            assert_eq!(r.1, 3);
            if r.0 == RecordType::Stdout {
                stdout.extend_from_slice(&r.2);
            }
        }
        assert_eq!(stdout, body);
        let tail: Vec<_> = recs[recs.len() - 4..]
            .iter()
            .map(|r| (r.0, r.2.len()))
            .collect();
        assert_eq!(
            tail,
            vec![
                (RecordType::Stderr, 7),
                (RecordType::Stdout, 0),
                (RecordType::Stderr, 0),
                (RecordType::EndRequest, 8)
            ]
        );
        let end = parse_end_request(&recs.last().unwrap().2).unwrap();
        assert_eq!((end.app_status, end.protocol_status), (7, 2));
    }

    #[test]
    fn write_failure_is_remembered() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sink = Broken;
        let mut buf = Vec::new();
        let mut w = ResponseWriter::new(&mut sink, &mut buf, 1);
        w.stdout(b"x").unwrap();
        assert!(!w.write_failed());
        assert!(w.flush().is_err());
        assert!(w.write_failed());
    }

    #[test]
    fn get_values_answers_known_names_once() {
        let limits = Limits {
            max_conns: 12,
            max_reqs: 34,
            ..Limits::default()
        };
        type Answer<'a> = &'a [(&'a str, &'a str)];
        let table: &[(&[&str], Answer)] = &[
            (
                &["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"],
                &[
                    ("FCGI_MAX_CONNS", "12"),
                    ("FCGI_MAX_REQS", "34"),
                    ("FCGI_MPXS_CONNS", "0"),
                ],
            ),
            (&["FCGI_MPXS_CONNS", "NOPE"], &[("FCGI_MPXS_CONNS", "0")]),
            (&["NOPE"], &[]),
            (&[], &[]),
            (
                &["FCGI_MAX_REQS", "FCGI_MAX_REQS"],
                &[("FCGI_MAX_REQS", "34")],
            ),
        ];
        for (asked, want) in table {
            let asked: Params = asked.iter().map(|n| (*n, "")).collect();
            let mut out = Vec::new();
            encode_get_values_result(&mut out, &asked, &limits);
            let recs = records(&out);
            assert_eq!(recs.len(), 1);
            assert_eq!((recs[0].0, recs[0].1), (RecordType::GetValuesResult, 0));
            let got = parse_params(&recs[0].2).unwrap();
            let got: Vec<_> = got
                .iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8(n.to_vec()).unwrap(),
                        String::from_utf8(v.to_vec()).unwrap(),
                    )
                })
                .collect();
            let want: Vec<_> = want
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want, "asked {asked:?}");
        }
    }

    #[test]
    fn limit_responses_name_the_limit_and_status() {
        for (kind, status) in [
            (
                LimitKind::Params,
                "Status: 431 Request Header Fields Too Large\r\n",
            ),
            (LimitKind::Body, "Status: 413 Content Too Large\r\n"),
        ] {
            let limit = LimitExceeded {
                request_id: 5,
                kind,
                max: 1000,
                attempted: 1001,
            };
            let mut out = Vec::new();
            encode_limit_response(&mut out, &limit);
            let recs = records(&out);
            assert_eq!(recs.len(), 3);
            let text = String::from_utf8(recs[0].2.clone()).unwrap();
            assert!(text.starts_with(status), "{text}");
            assert!(
                text.contains(&format!("{} = 1000 bytes", kind.key())),
                "{text}"
            );
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("Content-Length: {}", body.len())));
            assert_eq!((recs[1].0, recs[1].2.len()), (RecordType::Stdout, 0));
            let end = parse_end_request(&recs[2].2).unwrap();
            assert_eq!((end.app_status, end.protocol_status), (LIMIT_APP_STATUS, 0));
        }
    }
}
