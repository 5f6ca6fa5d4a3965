//! FastCGI conformance through the real binary, in raw bytes: management records, roles,
//! multiplexing refused, abort, keep-conn, name-value length boundaries; and hostile input —
//! garbage, truncated or oversized records, bad lengths, lengths near 2^31, version 0, request
//! id 0, endless PARAMS, half a header then a stall — each of which closes only its own
//! connection: the next request is answered.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::raw::{self, record};
use common::Server;

const ECHO_POOL: &str = r#"
[global]
status_listen = ""
runtime_dir = "{dir}/rt"

[pool.c]
workers = "thread"
max_children = 2

[pool.c.listen]
address = "unix:{dir}/c.sock"

[pool.c.app]
kind = "echo"
"#;

struct Fixture {
    server: Server,
    addr: String,
}

fn start() -> Fixture {
    let server = Server::start(ECHO_POOL);
    let addr = format!("unix:{}", server.path("c.sock").display());
    Fixture { server, addr }
}

impl Fixture {
    fn conn(&self) -> std::os::unix::net::UnixStream {
        raw::connect_unix(&self.server.path("c.sock"))
    }

    /// A normal request still gets its normal answer.
    fn still_serves(&self) {
        let r = raw::get(&self.addr, "/after", "x=1");
        assert_eq!(r.protocol_status, 0);
        assert!(r.body().contains("SCRIPT_NAME=/after"), "{}", r.text());
    }

    /// Send `bytes`, then expect the server to close the connection without a response.
    fn expect_closed(&self, bytes: &[u8]) {
        let mut c = self.conn();
        let _ = c.write_all(bytes);
        let mut rest = Vec::new();
        let n = c.read_to_end(&mut rest).unwrap_or(0);
        assert_eq!(
            n,
            0,
            "expected a close, got {:?}",
            String::from_utf8_lossy(&rest)
        );
        self.still_serves();
    }
}

#[test]
fn hostile_input_closes_only_that_connection() {
    let f = start();
    // Not FastCGI at all.
    f.expect_closed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    // Version 0.
    let mut v0 = raw::begin(1, 1, false);
    v0[0] = 0;
    f.expect_closed(&v0);
    // BEGIN_REQUEST with request id 0.
    f.expect_closed(&raw::begin(0, 1, false));
    // A pair whose name length says ~2^31 bytes.
    let mut huge = raw::begin(1, 1, false);
    let mut pair = 0xFFFF_FFF0u32.to_be_bytes().to_vec();
    pair.push(1);
    pair.extend_from_slice(b"abc");
    huge.extend(record(raw::PARAMS, 1, &pair));
    huge.extend(record(raw::PARAMS, 1, b""));
    let mut c = f.conn();
    c.write_all(&huge).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    // The declared length is over the params cap: refused before any byte of it is taken,
    // answered 431 (then closed), whatever the stream really holds.
    assert!(
        String::from_utf8_lossy(&rest).contains("Status: 431"),
        "a 2^31 name length is refused with 431: {:?}",
        String::from_utf8_lossy(&rest)
    );
    f.still_serves();
    // A pair whose lengths run past the PARAMS stream.
    let mut bad = raw::begin(1, 1, false);
    bad.extend(record(
        raw::PARAMS,
        1,
        &[5, 100, b'H', b'E', b'L', b'L', b'O', b'x'],
    ));
    bad.extend(record(raw::PARAMS, 1, b""));
    let mut c = f.conn();
    c.write_all(&bad).unwrap();
    let _ = c.read_to_end(&mut Vec::new());
    f.still_serves();
    // A truncated record, then EOF.
    let mut c = f.conn();
    let mut trunc = raw::begin(1, 1, false);
    trunc.extend(&record(raw::PARAMS, 1, &[7u8; 64])[..20]);
    c.write_all(&trunc).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let _ = c.read_to_end(&mut Vec::new());
    f.still_serves();
    // Half a header, then a stall: the other worker answers meanwhile.
    let mut stalled = f.conn();
    stalled.write_all(&[1, 1, 0]).unwrap();
    f.still_serves();
    f.still_serves();
    drop(stalled);
    // The log names what was closed, one line per bad connection.
    let log = f.server.log();
    assert!(log.contains("closed connection"), "{log}");
}

#[test]
fn endless_params_are_answered_431_and_closed() {
    let f = start();
    let mut c = f.conn();
    let writer_conn = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut w = writer_conn;
        let _ = w.write_all(&raw::begin(1, 1, false));
        let chunk = record(raw::PARAMS, 1, &vec![b'a'; 65535]);
        // 4 MiB of PARAMS, far over the 1 MiB limit; the server stops reading long before.
        for _ in 0..64 {
            if w.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("431"), "expected a 431 answer, got {text:?}");
    writer.join().unwrap();
    f.still_serves();
}

#[test]
fn get_values_reports_limits_and_no_multiplexing() {
    let f = start();
    let mut c = f.conn();
    let mut names = Vec::new();
    for n in [
        "FCGI_MAX_CONNS",
        "FCGI_MAX_REQS",
        "FCGI_MPXS_CONNS",
        "NOT_A_NAME",
    ] {
        names.extend(raw::pair(n.as_bytes(), b""));
    }
    c.write_all(&record(raw::GET_VALUES, 0, &names)).unwrap();
    let rec = raw::read_record(&mut c).expect("GET_VALUES_RESULT");
    assert_eq!(rec.rtype, raw::GET_VALUES_RESULT);
    assert_eq!(rec.id, 0);
    let body = rec.content;
    let has = |pair: Vec<u8>| body.windows(pair.len()).any(|w| w == pair.as_slice());
    assert!(has(raw::pair(b"FCGI_MAX_CONNS", b"2")), "{body:?}");
    assert!(has(raw::pair(b"FCGI_MAX_REQS", b"2")), "{body:?}");
    assert!(has(raw::pair(b"FCGI_MPXS_CONNS", b"0")), "{body:?}");
    assert!(
        !body.windows(10).any(|w| w == b"NOT_A_NAME"),
        "unknown names are omitted"
    );
    // Unknown management record type → UNKNOWN_TYPE naming it; the connection goes on.
    c.write_all(&record(99, 0, b"")).unwrap();
    let rec = raw::read_record(&mut c).expect("UNKNOWN_TYPE");
    assert_eq!(rec.rtype, raw::UNKNOWN_TYPE);
    assert_eq!(rec.content[0], 99);
    c.write_all(&raw::request("/same-conn", "", b"", false))
        .unwrap();
    let r = raw::read_response(&mut c).expect("response on the same connection");
    assert!(r.body().contains("SCRIPT_NAME=/same-conn"));
}

#[test]
fn unknown_role_and_multiplexing_are_refused_by_the_spec() {
    let f = start();
    // Role 7 does not exist → END_REQUEST(FCGI_UNKNOWN_ROLE = 3).
    let mut c = f.conn();
    c.write_all(&raw::begin(1, 7, true)).unwrap();
    let rec = raw::read_record(&mut c).expect("END_REQUEST");
    assert_eq!(
        (rec.rtype, rec.id, rec.content[4]),
        (raw::END_REQUEST, 1, 3)
    );
    // A second request id while request 1 is open → END_REQUEST(FCGI_CANT_MPX_CONN = 1) for it,
    // and request 1 still completes.
    let mut c = f.conn();
    let mut bytes = raw::begin(1, 1, false);
    bytes.extend(raw::begin(2, 1, false));
    c.write_all(&bytes).unwrap();
    let rec = raw::read_record(&mut c).expect("END_REQUEST for id 2");
    assert_eq!(
        (rec.rtype, rec.id, rec.content[4]),
        (raw::END_REQUEST, 2, 1)
    );
    let mut rest = record(raw::PARAMS, 1, &raw::cgi_params("/one", "", "GET", 0));
    rest.extend(record(raw::PARAMS, 1, b""));
    rest.extend(record(raw::STDIN, 1, b""));
    c.write_all(&rest).unwrap();
    let r = raw::read_response(&mut c).expect("request 1 completes");
    assert_eq!(r.id, 1);
    assert!(r.body().contains("SCRIPT_NAME=/one"));
}

#[test]
fn abort_request_ends_the_request() {
    let f = start();
    let mut c = f.conn();
    let mut bytes = raw::begin(1, 1, true);
    bytes.extend(record(
        raw::PARAMS,
        1,
        &raw::cgi_params("/aborted", "", "GET", 0),
    ));
    bytes.extend(record(raw::ABORT_REQUEST, 1, b""));
    c.write_all(&bytes).unwrap();
    let rec = raw::read_record(&mut c).expect("END_REQUEST after abort");
    assert_eq!((rec.rtype, rec.id), (raw::END_REQUEST, 1));
    f.still_serves();
}

#[test]
fn keep_conn_serves_several_requests_and_without_it_the_server_closes() {
    let f = start();
    let mut c = f.conn();
    for i in 0..3 {
        c.write_all(&raw::request(&format!("/k{i}"), "", b"", true))
            .unwrap();
        let r = raw::read_response(&mut c).expect("keep-conn response");
        assert!(r.body().contains(&format!("SCRIPT_NAME=/k{i}")));
    }
    c.write_all(&raw::request("/last", "", b"", false)).unwrap();
    raw::read_response(&mut c).expect("last response");
    let mut rest = Vec::new();
    assert_eq!(
        c.read_to_end(&mut rest).unwrap(),
        0,
        "closed after a request without KEEP_CONN"
    );
}

#[test]
fn name_value_length_boundaries_and_split_params() {
    let f = start();
    for (name_len, value_len) in [(127, 127), (128, 128), (1, 65535 - 200), (127, 70_000)] {
        let name: Vec<u8> = std::iter::repeat_n(b'N', name_len).collect();
        let value: Vec<u8> = std::iter::repeat_n(b'v', value_len).collect();
        let mut params = raw::cgi_params("/b", "", "GET", 0);
        params.extend(raw::pair(&name, &value));
        let mut bytes = raw::begin(1, 1, false);
        // Split the PARAMS stream into records at an awkward point, not at a pair boundary.
        for chunk in params.chunks(65531) {
            bytes.extend(record(raw::PARAMS, 1, chunk));
        }
        bytes.extend(record(raw::PARAMS, 1, b""));
        bytes.extend(record(raw::STDIN, 1, b""));
        let mut c = f.conn();
        c.write_all(&bytes).unwrap();
        let r = raw::read_response(&mut c).expect("response");
        let mut want = name.clone();
        want.push(b'=');
        want.extend(&value);
        assert!(
            r.stdout.windows(want.len()).any(|w| w == want.as_slice()),
            "pair {name_len}/{value_len} echoed back"
        );
    }
}

#[test]
fn nginx_captures_are_served() {
    let f = start();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fastcgi");
    for (file, expect) in [
        ("nginx-get-query-cookie.bin", "QUERY_STRING=a=1&b=%C3%A9"),
        ("nginx-post-form.bin", "REQUEST_METHOD=POST"),
        ("nginx-get-300-byte-header.bin", "SCRIPT_NAME=/long.php"),
        ("nginx-post-100k.bin", "CONTENT_LENGTH=100000"),
    ] {
        let bytes = std::fs::read(format!("{dir}/{file}")).expect("fixture");
        let mut c = f.conn();
        c.write_all(&bytes).unwrap();
        let r = raw::read_response(&mut c).unwrap_or_else(|| panic!("{file}: no response"));
        assert!(
            r.text().contains(expect),
            "{file}: {}",
            &r.text()[..r.text().len().min(400)]
        );
        if file == "nginx-post-100k.bin" {
            let at = r
                .stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .expect("blank line");
            let after = r.stdout.len() - at - 2;
            assert_eq!(after, 100_000, "the 100 kB body arrives whole");
        }
    }
}
