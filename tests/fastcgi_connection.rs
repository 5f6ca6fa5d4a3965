//! `serve_connection` over real unix sockets: raw bytes in (garbage, truncation, bad versions
//! and ids, huge lengths, endless PARAMS, bodies over the limit, stalls), management records,
//! refusals (unknown role, CANT_MPX_CONN), ABORT_REQUEST, KEEP_CONN — and two independent
//! clients: our own (`round_trip`, `get_values`) and the `fastcgi-client` crate.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::Duration;

use fastpm::fastcgi::{
    connect_with_retry, encode_abort_request, encode_begin_request, encode_params, encode_record,
    encode_request, encode_stream, get_values, parse_end_request, parse_record, parse_unknown_type,
    round_trip, serve_connection, ClientRequest, ConnectionEnd, ConnectionError, Handler,
    LimitExceeded, LimitKind, Limits, ProtocolError, RecordType, Request, ResponseWriter,
    RetryPolicy, FCGI_CANT_MPX_CONN, FCGI_REQUEST_COMPLETE, FCGI_UNKNOWN_ROLE,
};
use fastpm::listen::ListenAddress;

/// Echoes params ("NAME=VALUE\n") and the body; app status = number of params.
struct Echo;

impl Handler for Echo {
    fn handle(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> io::Result<u32> {
        out.stdout(b"Content-Type: text/plain\r\n\r\n")?;
        for (name, value) in request.params.iter() {
            out.stdout(name)?;
            out.stdout(b"=")?;
            out.stdout(value)?;
            out.stdout(b"\n")?;
        }
        out.stdout(b"body:")?;
        out.stdout(&request.stdin)?;
        Ok(request.params.len() as u32)
    }
}

/// Generous so that a test never hangs, short enough to fail fast.
const SERVER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Start `serve_connection` on one end of a socket pair; the other end is returned.
fn spawn_server(
    limits: Limits,
) -> (
    UnixStream,
    thread::JoinHandle<Result<ConnectionEnd, ConnectionError>>,
) {
    let (client, mut server) = UnixStream::pair().unwrap();
    server.set_read_timeout(Some(SERVER_READ_TIMEOUT)).unwrap();
    let handle = thread::spawn(move || serve_connection(&mut server, &limits, &mut Echo));
    (client, handle)
}

/// Send `input` (then half-close when `close_write`), read everything until the server
/// closes, and return the server's result with what it wrote.
fn converse(
    limits: Limits,
    input: Vec<u8>,
    close_write: bool,
) -> (Result<ConnectionEnd, ConnectionError>, Vec<u8>) {
    let (client, server) = spawn_server(limits);
    let mut writer = client.try_clone().unwrap();
    let feeder = thread::spawn(move || {
        // The server may close early (limits, errors): a failed write is expected then.
        let _ = writer.write_all(&input);
        if close_write {
            let _ = writer.shutdown(Shutdown::Write);
        }
    });
    let result = server.join().unwrap();
    let mut output = Vec::new();
    let mut reader = client;
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A server that closes before reading all the input (a limit, an error) resets the
    // connection once its reply has been read: what arrived before the reset is in `output`.
    match reader.read_to_end(&mut output) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("read: {e}"),
    }
    feeder.join().unwrap();
    (result, output)
}

type Rec = (RecordType, u16, Vec<u8>);

fn records(mut bytes: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (r, used) = parse_record(bytes)
            .unwrap()
            .expect("server output ends on a record boundary");
        out.push((
            r.header.record_type,
            r.header.request_id,
            r.content.to_vec(),
        ));
        bytes = &bytes[used..];
    }
    out
}

/// (request id, app status, protocol status) of every END_REQUEST.
fn ends(recs: &[Rec]) -> Vec<(u16, u32, u8)> {
    recs.iter()
        .filter(|r| r.0 == RecordType::EndRequest)
        .map(|r| {
            let end = parse_end_request(&r.2).unwrap();
            (r.1, end.app_status, end.protocol_status)
        })
        .collect()
}

fn stdout_of(recs: &[Rec], id: u16) -> String {
    let bytes: Vec<u8> = recs
        .iter()
        .filter(|r| r.0 == RecordType::Stdout && r.1 == id)
        .flat_map(|r| r.2.iter().copied())
        .collect();
    String::from_utf8(bytes).unwrap()
}

fn request(id: u16, keep: bool, pairs: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let request = ClientRequest {
        params: pairs
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
        body: body.to_vec(),
        keep_conn: keep,
    };
    let mut out = Vec::new();
    encode_request(&mut out, id, &request).unwrap();
    out
}

/// A raw record header, for records our encoders refuse to produce.
fn raw_header(version: u8, record_type: u8, id: u16, len: u16, pad: u8) -> Vec<u8> {
    let mut h = vec![version, record_type];
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[pad, 0]);
    h
}

fn expect_protocol_error(result: Result<ConnectionEnd, ConnectionError>) -> ProtocolError {
    match result {
        Err(ConnectionError::Protocol(e)) => e,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn garbage_closes_the_connection_with_a_protocol_error() {
    let (result, output) = converse(
        Limits::default(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        false,
    );
    assert_eq!(
        expect_protocol_error(result),
        ProtocolError::BadVersion { version: b'G' }
    );
    assert!(output.is_empty());
}

#[test]
fn version_0_is_refused() {
    let mut input = raw_header(0, 1, 1, 8, 0);
    input.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    let (result, _) = converse(Limits::default(), input, false);
    assert_eq!(
        expect_protocol_error(result),
        ProtocolError::BadVersion { version: 0 }
    );
}

#[test]
fn begin_request_with_id_0_is_refused() {
    let mut input = Vec::new();
    encode_begin_request(&mut input, 0, 1, false);
    let (result, output) = converse(Limits::default(), input, false);
    assert_eq!(
        expect_protocol_error(result),
        ProtocolError::BeginWithNullId
    );
    assert!(output.is_empty());
}

#[test]
fn truncated_record_then_eof() {
    let mut input = Vec::new();
    encode_begin_request(&mut input, 1, 1, false);
    input.extend(raw_header(1, 4, 1, 100, 4));
    input.extend_from_slice(&[0u8; 30]);
    let (result, output) = converse(Limits::default(), input, true);
    assert_eq!(
        expect_protocol_error(result),
        ProtocolError::TruncatedRecord { buffered: 38 }
    );
    assert!(output.is_empty());
}

#[test]
fn eof_between_records_mid_request_is_peer_closed() {
    let mut input = Vec::new();
    encode_begin_request(&mut input, 1, 1, false);
    encode_record(&mut input, RecordType::Params, 1, &[1, 1, b'A', b'B']);
    let (result, output) = converse(Limits::default(), input, true);
    assert_eq!(result.unwrap(), ConnectionEnd::PeerClosed);
    assert!(output.is_empty());
}

#[test]
fn half_a_header_then_stall_returns_when_the_peer_closes() {
    let (mut client, server) = spawn_server(Limits::default());
    client.write_all(&[1, 1, 0]).unwrap();
    thread::sleep(Duration::from_millis(150));
    assert!(!server.is_finished(), "the driver waits for the rest");
    drop(client);
    assert_eq!(
        expect_protocol_error(server.join().unwrap()),
        ProtocolError::TruncatedRecord { buffered: 3 }
    );
}

#[test]
fn a_read_timeout_ends_the_connection_with_an_io_error() {
    let (mut client, mut server) = UnixStream::pair().unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let handle =
        thread::spawn(move || serve_connection(&mut server, &Limits::default(), &mut Echo));
    client.write_all(&[1, 1, 0, 1]).unwrap();
    match handle.join().unwrap() {
        Err(ConnectionError::Io(e)) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e:?}"
        ),
        other => panic!("{other:?}"),
    }
}

fn assert_limit_answer(output: &[u8], status: &str, key: &str, max: usize) {
    let recs = records(output);
    let text = stdout_of(&recs, 1);
    assert!(text.starts_with(&format!("Status: {status}\r\n")), "{text}");
    assert!(text.contains("Content-Type: text/plain"), "{text}");
    assert!(text.contains(&format!("{key} = {max} bytes")), "{text}");
    assert_eq!(ends(&recs), vec![(1, 1, FCGI_REQUEST_COMPLETE)]);
}

#[test]
fn declared_lengths_near_2_pow_31_are_refused_at_once() {
    // name length 0x7ffffffe (4 bytes) and value length 0x7fffffff: nothing else follows.
    for pair_head in [
        &[0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff, 0xff][..],
        &[0x01, 0xff, 0xff, 0xff, 0xff][..],
        &[0xff, 0xff, 0xff, 0xff][..],
    ] {
        let mut input = Vec::new();
        encode_begin_request(&mut input, 1, 1, false);
        encode_record(&mut input, RecordType::Params, 1, pair_head);
        // No half-close: the server must answer without waiting for the declared bytes.
        let (result, output) = converse(Limits::default(), input, false);
        match result {
            Err(ConnectionError::LimitExceeded(LimitExceeded {
                kind: LimitKind::Params,
                max,
                attempted,
                ..
            })) => {
                assert_eq!(max, 1 << 20);
                assert!(attempted > 0x7fff_ffff, "{attempted}");
            }
            other => panic!("{pair_head:?}: {other:?}"),
        }
        assert_limit_answer(
            &output,
            "431 Request Header Fields Too Large",
            "max_params",
            1 << 20,
        );
    }
}

#[test]
fn endless_params_get_431_then_close() {
    // Valid pairs (127-byte names and values), 255 per record, sent without end.
    let mut pairs = Vec::new();
    for _ in 0..255 {
        pairs.push(0x7f);
        pairs.push(0x7f);
        pairs.extend_from_slice(&[b'N'; 127]);
        pairs.extend_from_slice(&[b'v'; 127]);
    }
    let mut input = Vec::new();
    encode_begin_request(&mut input, 1, 1, false);
    for _ in 0..40 {
        // 40 × 65,280 bytes ≈ 2.5 MiB, well over the 1 MiB default.
        encode_record(&mut input, RecordType::Params, 1, &pairs);
    }
    let (result, output) = converse(Limits::default(), input, false);
    assert!(
        matches!(
            result,
            Err(ConnectionError::LimitExceeded(LimitExceeded {
                kind: LimitKind::Params,
                ..
            }))
        ),
        "{result:?}"
    );
    assert_limit_answer(
        &output,
        "431 Request Header Fields Too Large",
        "max_params",
        1 << 20,
    );
}

#[test]
fn body_over_the_limit_gets_413_then_close() {
    let limits = Limits {
        max_body_bytes: 1000,
        ..Limits::default()
    };
    // Without CONTENT_LENGTH: refused when the 1001st byte arrives.
    let (result, output) = converse(limits, request(1, true, &[], &[b'x'; 5000]), false);
    assert!(
        matches!(
            result,
            Err(ConnectionError::LimitExceeded(LimitExceeded {
                kind: LimitKind::Body,
                max: 1000,
                attempted: 5000,
                ..
            }))
        ),
        "{result:?}"
    );
    assert_limit_answer(&output, "413 Content Too Large", "max_body", 1000);

    // With a CONTENT_LENGTH over the limit: refused before any body byte is sent.
    let mut input = Vec::new();
    encode_begin_request(&mut input, 1, 1, true);
    let mut p = Vec::new();
    encode_params(&mut p, [(&b"CONTENT_LENGTH"[..], &b"999999999"[..])]).unwrap();
    encode_stream(&mut input, RecordType::Params, 1, &p);
    let (result, output) = converse(limits, input, false);
    assert!(
        matches!(
            result,
            Err(ConnectionError::LimitExceeded(LimitExceeded {
                kind: LimitKind::Body,
                attempted: 999_999_999,
                ..
            }))
        ),
        "{result:?}"
    );
    assert_limit_answer(&output, "413 Content Too Large", "max_body", 1000);
}

#[test]
fn records_of_exactly_65535_bytes() {
    // A PARAMS record of exactly 65535 bytes holding one pair (4-byte value length).
    let value = vec![b'v'; 65535 - 1 - 4 - 1];
    let mut p = Vec::new();
    encode_params(&mut p, [(&b"X"[..], &value[..])]).unwrap();
    assert_eq!(p.len(), 65535);
    let mut input = Vec::new();
    encode_begin_request(&mut input, 1, 1, false);
    encode_stream(&mut input, RecordType::Params, 1, &p);
    encode_stream(&mut input, RecordType::Stdin, 1, &[b's'; 65535]);
    let (result, output) = converse(Limits::default(), input, false);
    assert_eq!(result.unwrap(), ConnectionEnd::Done);
    let recs = records(&output);
    let text = stdout_of(&recs, 1);
    assert!(text.contains(&format!("X={}\n", "v".repeat(65529))));
    assert!(text.ends_with(&format!("body:{}", "s".repeat(65535))));
    assert!(recs.iter().all(|r| r.2.len() <= 65535));
}

#[test]
fn get_values_and_unknown_management_types_keep_the_connection() {
    let limits = Limits {
        max_conns: 7,
        max_reqs: 9,
        ..Limits::default()
    };
    let (mut client, server) = spawn_server(limits);
    let got = get_values(
        &mut client,
        &[
            "FCGI_MAX_CONNS",
            "FCGI_MAX_REQS",
            "FCGI_MPXS_CONNS",
            "NOT_A_NAME",
        ],
    )
    .unwrap();
    let got: Vec<(&str, &str)> = got.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("FCGI_MAX_CONNS", "7"),
            ("FCGI_MAX_REQS", "9"),
            ("FCGI_MPXS_CONNS", "0")
        ]
    );

    // An unknown management record type → UNKNOWN_TYPE; the connection goes on.
    let mut unknown = Vec::new();
    encode_record(&mut unknown, RecordType::Other(42), 0, b"??");
    client.write_all(&unknown).unwrap();
    let mut reply = [0u8; 16];
    client.read_exact(&mut reply).unwrap();
    let recs = records(&reply);
    assert_eq!((recs[0].0, recs[0].1), (RecordType::UnknownType, 0));
    assert_eq!(parse_unknown_type(&recs[0].2).unwrap(), 42);

    let response = round_trip(
        &mut client,
        1,
        &ClientRequest {
            params: vec![(b"A".to_vec(), b"1".to_vec())],
            body: b"hi".to_vec(),
            keep_conn: false,
        },
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(response.stdout).unwrap(),
        "Content-Type: text/plain\r\n\r\nA=1\nbody:hi"
    );
    assert_eq!((response.app_status, response.protocol_status), (1, 0));
    assert_eq!(server.join().unwrap().unwrap(), ConnectionEnd::Done);
}

#[test]
fn unknown_role_is_refused_and_the_connection_goes_on_with_keep_conn() {
    let mut input = Vec::new();
    for (id, role) in [(1u16, 2u16), (2, 3), (3, 77)] {
        encode_begin_request(&mut input, id, role, true);
        encode_stream(&mut input, RecordType::Params, id, &[1, 1, b'R', b'r']);
        encode_stream(&mut input, RecordType::Stdin, id, b"");
    }
    input.extend(request(4, false, &[("OK", "yes")], b""));
    let (result, output) = converse(Limits::default(), input, false);
    assert_eq!(result.unwrap(), ConnectionEnd::Done);
    let recs = records(&output);
    assert_eq!(
        ends(&recs),
        vec![
            (1, 0, FCGI_UNKNOWN_ROLE),
            (2, 0, FCGI_UNKNOWN_ROLE),
            (3, 0, FCGI_UNKNOWN_ROLE),
            (4, 1, FCGI_REQUEST_COMPLETE)
        ]
    );
    assert!(stdout_of(&recs, 4).contains("OK=yes\n"));
}

#[test]
fn unknown_role_without_keep_conn_closes_after_end_request() {
    let mut input = Vec::new();
    encode_begin_request(&mut input, 1, 2, false);
    input.extend(request(2, false, &[], b""));
    let (result, output) = converse(Limits::default(), input, false);
    assert_eq!(result.unwrap(), ConnectionEnd::Done);
    assert_eq!(ends(&records(&output)), vec![(1, 0, FCGI_UNKNOWN_ROLE)]);
}

#[test]
fn second_request_id_gets_cant_mpx_conn_and_the_first_goes_on() {
    let mut input = Vec::new();
    encode_begin_request(&mut input, 1, 1, false);
    encode_record(&mut input, RecordType::Params, 1, &[1, 1, b'A', b'1']);
    input.extend(request(2, false, &[("B", "2")], b"second"));
    encode_stream(&mut input, RecordType::Params, 1, &[]);
    encode_stream(&mut input, RecordType::Stdin, 1, b"first");
    let (result, output) = converse(Limits::default(), input, false);
    assert_eq!(result.unwrap(), ConnectionEnd::Done);
    let recs = records(&output);
    assert_eq!(
        ends(&recs),
        vec![(2, 0, FCGI_CANT_MPX_CONN), (1, 1, FCGI_REQUEST_COMPLETE)]
    );
    assert_eq!(
        stdout_of(&recs, 1),
        "Content-Type: text/plain\r\n\r\nA=1\nbody:first"
    );
    assert_eq!(stdout_of(&recs, 2), "");
}

#[test]
fn abort_request_drops_the_request() {
    let mut input = Vec::new();
    encode_begin_request(&mut input, 1, 1, true);
    encode_record(&mut input, RecordType::Params, 1, &[1, 1, b'A', b'1']);
    encode_abort_request(&mut input, 1);
    input.extend(request(1, false, &[("B", "2")], b""));
    let (result, output) = converse(Limits::default(), input, false);
    assert_eq!(result.unwrap(), ConnectionEnd::Done);
    let recs = records(&output);
    assert_eq!(
        ends(&recs),
        vec![(1, 0, FCGI_REQUEST_COMPLETE), (1, 1, FCGI_REQUEST_COMPLETE)]
    );
    assert_eq!(
        stdout_of(&recs, 1),
        "Content-Type: text/plain\r\n\r\nB=2\nbody:"
    );

    // Without KEEP_CONN the abort ends the connection.
    let mut input = Vec::new();
    encode_begin_request(&mut input, 1, 1, false);
    encode_abort_request(&mut input, 1);
    input.extend(request(2, false, &[], b""));
    let (result, output) = converse(Limits::default(), input, false);
    assert_eq!(result.unwrap(), ConnectionEnd::Done);
    assert_eq!(ends(&records(&output)), vec![(1, 0, FCGI_REQUEST_COMPLETE)]);
}

#[test]
fn keep_conn_serves_requests_until_the_peer_closes() {
    let (mut client, server) = spawn_server(Limits::default());
    for i in 0..3u8 {
        let response = round_trip(
            &mut client,
            1,
            &ClientRequest {
                params: vec![(b"N".to_vec(), vec![b'0' + i])],
                body: vec![i; 10],
                keep_conn: true,
            },
        )
        .unwrap();
        let text = String::from_utf8_lossy(&response.stdout).into_owned();
        assert!(text.contains(&format!("N={i}\n")), "{text}");
    }
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(server.join().unwrap().unwrap(), ConnectionEnd::PeerClosed);

    // Without KEEP_CONN the server answers the first request and closes.
    let mut input = request(1, false, &[("FIRST", "1")], b"");
    input.extend(request(1, false, &[("SECOND", "1")], b""));
    let (result, output) = converse(Limits::default(), input, false);
    assert_eq!(result.unwrap(), ConnectionEnd::Done);
    let recs = records(&output);
    assert_eq!(ends(&recs).len(), 1);
    assert!(stdout_of(&recs, 1).contains("FIRST=1"));
}

#[test]
fn our_client_connects_with_retry_to_a_listening_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        serve_connection(&mut conn, &Limits::default(), &mut Echo)
    });
    let (mut stream, attempts) =
        connect_with_retry(&ListenAddress::Unix(path), &RetryPolicy::default()).unwrap();
    assert_eq!(attempts, 1);
    let body = vec![b'b'; 300_000];
    let response = round_trip(
        &mut stream,
        9,
        &ClientRequest {
            params: vec![(b"K".to_vec(), vec![b'v'; 128])],
            body: body.clone(),
            keep_conn: false,
        },
    )
    .unwrap();
    let text = String::from_utf8(response.stdout).unwrap();
    assert!(text.contains(&format!("K={}\n", "v".repeat(128))));
    assert!(text.ends_with(&format!("body:{}", "b".repeat(300_000))));
    assert_eq!(server.join().unwrap().unwrap(), ConnectionEnd::Done);
}

/// The `fastcgi-client` crate (tokio) as an independent client against our server.
#[test]
fn fastcgi_client_crate_talks_to_serve_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fcgi.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // One short connection, then one keep-alive connection with three requests.
    let server = thread::spawn(move || {
        let mut ends = Vec::new();
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(SERVER_READ_TIMEOUT)).unwrap();
            ends.push(serve_connection(&mut conn, &Limits::default(), &mut Echo).unwrap());
        }
        ends
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use fastcgi_client::{Client, Params, Request as FcgiRequest};

        let params = Params::default()
            .request_method("POST")
            .script_filename("/srv/www/index.php")
            .script_name("/index.php")
            .request_uri("/index.php")
            .content_length(70_000)
            .custom_long();
        let body = vec![b'p'; 70_000];
        let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        let output = Client::new(stream)
            .execute_once(FcgiRequest::new(params, &body[..]))
            .await
            .unwrap();
        let stdout = String::from_utf8(output.stdout.unwrap()).unwrap();
        assert!(stdout.contains("REQUEST_METHOD=POST\n"), "{stdout}");
        assert!(stdout.contains("SCRIPT_FILENAME=/srv/www/index.php\n"));
        assert!(stdout.contains(&format!("HTTP_X_LONG={}\n", "l".repeat(200))));
        assert!(stdout.ends_with(&format!("body:{}", "p".repeat(70_000))));
        assert!(output.stderr.is_none());

        let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut client = Client::new_keep_alive(stream);
        for i in 0..3 {
            let params = Params::default().request_uri(format!("/{i}"));
            let output = client
                .execute(FcgiRequest::new(params, tokio::io::empty()))
                .await
                .unwrap();
            let stdout = String::from_utf8(output.stdout.unwrap()).unwrap();
            assert!(stdout.contains(&format!("REQUEST_URI=/{i}\n")), "{stdout}");
        }
    });
    drop(runtime); // closes the keep-alive connection
    assert_eq!(
        server.join().unwrap(),
        vec![ConnectionEnd::Done, ConnectionEnd::PeerClosed]
    );
}

/// Adds a 200-byte header value (4-byte length) to the crate's params.
trait CustomLong {
    fn custom_long(self) -> Self;
}

impl CustomLong for fastcgi_client::Params<'_> {
    fn custom_long(mut self) -> Self {
        self.insert("HTTP_X_LONG".into(), "l".repeat(200).into());
        self
    }
}

/// libfcgi's `cgi-fcgi` (Debian libfcgi-bin) as a second independent client: its environment
/// becomes the params, its stdin the body.
#[test]
fn cgi_fcgi_talks_to_serve_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cgi-fcgi.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(SERVER_READ_TIMEOUT)).unwrap();
        serve_connection(&mut conn, &Limits::default(), &mut Echo)
    });
    let mut child = std::process::Command::new("cgi-fcgi")
        .args(["-bind", "-connect"])
        .arg(&path)
        .env_clear()
        .env("REQUEST_METHOD", "POST")
        .env("SCRIPT_FILENAME", "/srv/www/x.php")
        .env("CONTENT_LENGTH", "5")
        .env("HTTP_X_LONG", "L".repeat(128))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cgi-fcgi (Debian package libfcgi-bin) must be installed");
    child.stdin.take().unwrap().write_all(b"hello").unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    // cgi-fcgi exits with END_REQUEST's app status: Echo returns the number of params.
    assert_eq!(output.status.code(), Some(4), "{stdout}");
    assert!(stdout.contains("REQUEST_METHOD=POST\n"), "{stdout}");
    assert!(
        stdout.contains("SCRIPT_FILENAME=/srv/www/x.php\n"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("HTTP_X_LONG={}\n", "L".repeat(128))));
    assert!(stdout.ends_with("body:hello"), "{stdout}");
    assert_eq!(server.join().unwrap().unwrap(), ConnectionEnd::Done);
}
