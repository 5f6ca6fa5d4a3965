//! The real captures (tests/fixtures/fastcgi/, copied from ../shared/fixtures/fastcgi/):
//! nginx's requests must assemble into the right `Request`, fed whole, byte by byte, and
//! through `serve_connection`; php-cgi's and php-fpm's responses (no empty STDOUT record
//! before END_REQUEST) must parse with the client's response reader.

use std::io::{self, Cursor, Read, Write};
use std::path::PathBuf;

use fastpm::fastcgi::{
    parse_record, parse_response, serve_connection, Assembler, ConnectionEnd, Event, Handler,
    Limits, RecordType, Request, ResponseWriter, Role,
};

/// The in-repo copy first; the shared directory beside the repo as a fallback.
fn fixture(name: &str) -> Vec<u8> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        root.join("tests/fixtures/fastcgi").join(name),
        root.join("../shared/fixtures/fastcgi").join(name),
    ];
    for path in &candidates {
        if let Ok(bytes) = std::fs::read(path) {
            return bytes;
        }
    }
    panic!("fixture {name} not found in {candidates:?}");
}

const NGINX_FIXTURES: [&str; 4] = [
    "nginx-get-query-cookie.bin",
    "nginx-post-form.bin",
    "nginx-post-100k.bin",
    "nginx-get-300-byte-header.bin",
];

/// Feed `input` in windows growing by `step` bytes; return the one complete request.
fn assemble(input: &[u8], step: usize) -> Request {
    let mut assembler = Assembler::new(&Limits::default());
    let mut replies = Vec::new();
    let (mut start, mut end) = (0, 0);
    let mut started = 0;
    let mut complete = None;
    while end < input.len() {
        end = (end + step).min(input.len());
        loop {
            let fed = assembler.feed(&input[start..end], &mut replies).unwrap();
            if fed.consumed == 0 {
                break;
            }
            start += fed.consumed;
            match fed.event {
                Some(Event::Started { request_id }) => {
                    assert_eq!(request_id, 1);
                    started += 1;
                }
                Some(Event::Complete(r)) => {
                    assert!(complete.is_none(), "one request per capture");
                    complete = Some(r);
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => {}
            }
        }
    }
    assert_eq!(start, input.len(), "every byte used");
    assert_eq!(started, 1);
    assert!(replies.is_empty(), "nothing to reply before the response");
    complete.expect("request complete")
}

#[test]
fn get_with_query_and_cookie() {
    let r = assemble(&fixture("nginx-get-query-cookie.bin"), usize::MAX);
    assert_eq!(
        (r.request_id, r.role, r.keep_conn),
        (1, Role::Responder, false)
    );
    assert_eq!(r.params.get_str("REQUEST_METHOD"), Some("GET"));
    assert_eq!(
        r.params.get_str("SCRIPT_FILENAME"),
        Some("/srv/www/index.php")
    );
    assert_eq!(r.params.get_str("QUERY_STRING"), Some("a=1&b=%C3%A9"));
    assert_eq!(
        r.params.get_str("REQUEST_URI"),
        Some("/index.php?a=1&b=%C3%A9")
    );
    assert_eq!(r.params.get_str("HTTP_COOKIE"), Some("s=1"));
    assert_eq!(r.params.get_str("CONTENT_LENGTH"), Some(""));
    assert_eq!(r.params.len(), 24);
    assert!(r.stdin.is_empty());
}

#[test]
fn post_form() {
    let r = assemble(&fixture("nginx-post-form.bin"), usize::MAX);
    assert_eq!(r.params.get_str("REQUEST_METHOD"), Some("POST"));
    assert_eq!(
        r.params.get_str("SCRIPT_FILENAME"),
        Some("/srv/www/post.php")
    );
    assert_eq!(r.params.get_str("CONTENT_LENGTH"), Some("15"));
    assert_eq!(
        r.params.get_str("CONTENT_TYPE"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.stdin, b"name=fastpm&x=1");
}

#[test]
fn post_100k_upload_in_32k_stdin_records() {
    let bytes = fixture("nginx-post-100k.bin");
    // The capture's shape: STDIN records of 32768 bytes and a remainder, then the empty one.
    let mut rest = &bytes[..];
    let mut stdin_records = Vec::new();
    while !rest.is_empty() {
        let (record, used) = parse_record(rest).unwrap().unwrap();
        assert_eq!(used % 8, 0, "nginx pads every record to 8");
        if record.header.record_type == RecordType::Stdin {
            stdin_records.push(record.content.len());
        }
        rest = &rest[used..];
    }
    assert_eq!(stdin_records, vec![32768, 32768, 32768, 1696, 0]);

    let r = assemble(&bytes, usize::MAX);
    assert_eq!(r.params.get_str("REQUEST_METHOD"), Some("POST"));
    assert_eq!(
        r.params.get_str("SCRIPT_FILENAME"),
        Some("/srv/www/upload.php")
    );
    assert_eq!(r.params.get_str("CONTENT_LENGTH"), Some("100000"));
    assert_eq!(r.stdin.len(), 100_000);
    assert!(r.stdin.iter().all(|&b| b == b'y'));
}

#[test]
fn header_value_of_300_bytes_uses_a_4_byte_length() {
    let bytes = fixture("nginx-get-300-byte-header.bin");
    // name length 11 (1 byte), value length 300 = 0x8000012c (4 bytes), then the name.
    let needle = [&[0x0b, 0x80, 0x00, 0x01, 0x2c][..], b"HTTP_X_LONG"].concat();
    assert!(bytes.windows(needle.len()).any(|w| w == needle));

    let r = assemble(&bytes, usize::MAX);
    let long = r.params.get("HTTP_X_LONG").unwrap();
    assert_eq!(long.len(), 300);
    assert!(long.iter().all(|&b| b == b'h'));
    assert_eq!(
        r.params.get_str("SCRIPT_FILENAME"),
        Some("/srv/www/long.php")
    );
    assert_eq!(r.params.get_str("REQUEST_METHOD"), Some("GET"));
}

#[test]
fn every_capture_assembles_the_same_in_any_chunking() {
    for name in NGINX_FIXTURES {
        let bytes = fixture(name);
        let whole = assemble(&bytes, usize::MAX);
        let steps: &[usize] = if bytes.len() > 10_000 {
            &[997, 8192]
        } else {
            &[1, 3, 8, 13]
        };
        for &step in steps {
            assert_eq!(assemble(&bytes, step), whole, "{name}, step {step}");
        }
    }
}

/// Serves a capture over an in-memory connection.
struct Replay {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Hello;

impl Handler for Hello {
    fn handle(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> io::Result<u32> {
        out.stdout(b"Content-type: text/html; charset=UTF-8\r\n\r\n")?;
        out.stdout(request.params.get("SCRIPT_FILENAME").unwrap_or_default())?;
        Ok(0)
    }
}

#[test]
fn every_capture_is_served_and_the_answer_reads_back() {
    for name in NGINX_FIXTURES {
        let mut conn = Replay {
            input: Cursor::new(fixture(name)),
            output: Vec::new(),
        };
        let end = serve_connection(&mut conn, &Limits::default(), &mut Hello).unwrap();
        assert_eq!(end, ConnectionEnd::Done, "{name}: nginx sent no KEEP_CONN");
        let (response, used) = parse_response(&conn.output, 1).unwrap();
        assert_eq!(used, conn.output.len());
        let text = String::from_utf8(response.stdout).unwrap();
        assert!(text.ends_with(".php"), "{name}: {text}");
        assert_eq!((response.app_status, response.protocol_status), (0, 0));
    }
}

#[test]
fn php_responses_without_an_empty_stdout_record_parse() {
    for name in ["php-cgi-response-hello.bin", "php-fpm-response-hello.bin"] {
        let bytes = fixture(name);
        // The capture's shape: one STDOUT record with data, then END_REQUEST.
        let (first, used) = parse_record(&bytes).unwrap().unwrap();
        assert_eq!(first.header.record_type, RecordType::Stdout);
        let (second, _) = parse_record(&bytes[used..]).unwrap().unwrap();
        assert_eq!(second.header.record_type, RecordType::EndRequest);

        let (response, used) = parse_response(&bytes, 1).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(
            response.stdout,
            b"Content-type: text/html; charset=UTF-8\r\n\r\nHello, world\n"
        );
        assert!(response.stderr.is_empty());
        assert_eq!((response.app_status, response.protocol_status), (0, 0));
    }
}
