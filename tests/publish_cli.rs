//! `fastpm publish` against a tiny real HTTP server in the test that records the request: the
//! EPCP JSON it sends (text, bytes as base64, stdin, a file, a content type), the answer it
//! prints, and its exit codes — 0 on 2xx, 1 on another answer or no answer, 2 on bad usage.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use common::FASTPM;
use serde_json::{json, Value};

/// What the server saw of one request.
struct Seen {
    request_line: String,
    /// Header lines, lowercased names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// Serve one request on a free port: record it, answer `status` with `answer`, close.
fn one_shot(status: &'static str, answer: &'static str) -> (String, JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/publish/",
        listener.local_addr().unwrap().port()
    );
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "client closed before the end of its headers");
            raw.extend_from_slice(&buf[..n]);
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
        };
        let head = String::from_utf8(raw[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap().to_string();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .expect("a Content-Length");
        let mut body = raw[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "client closed inside its body");
            body.extend_from_slice(&buf[..n]);
        }
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        )
        .unwrap();
        Seen {
            request_line,
            headers,
            body,
        }
    });
    (url, server)
}

/// Run `fastpm publish ARGS` with `stdin`.
fn publish(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(FASTPM)
        .arg("publish")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The EPCP JSON of one message.
fn epcp(channel: &str, content_type: &str, body: (&str, Value)) -> Value {
    let mut response = json!({"code": 200, "headers": {"Content-Type": content_type}});
    response[body.0] = body.1;
    json!({"items": [{"channel": channel, "formats": {"http-response": response}}]})
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_message_is_posted_as_epcp_json_and_the_answer_printed() {
    let (url, server) = one_shot("200 OK", "Published\n");
    let out = publish(&["chat", "hello there", "--url", &url], b"");
    let seen = server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Published\n");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(seen.request_line, "POST /publish/ HTTP/1.1");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert!(seen.header("host").unwrap().starts_with("127.0.0.1:"));
    assert_eq!(
        seen.json(),
        epcp(
            "chat",
            "text/plain; charset=utf-8",
            ("body", json!("hello there"))
        )
    );
}

#[test]
fn bytes_from_a_file_go_base64_and_stdin_is_read_for_dash() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("msg.bin");
    let bytes = [0x89, b'P', b'N', b'G', 0xff, 0x00];
    std::fs::write(&file, bytes).unwrap();
    let (url, server) = one_shot("200 OK", "ok\n");
    let out = publish(
        &[
            "img",
            "--body",
            file.to_str().unwrap(),
            "--url",
            &url,
            "--content-type",
            "image/png",
        ],
        b"",
    );
    let seen = server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    assert_eq!(
        seen.json(),
        epcp("img", "image/png", ("body-bin", json!(encoded)))
    );

    // Bytes without --content-type: application/octet-stream.
    let (url, server) = one_shot("200 OK", "ok\n");
    let out = publish(
        &["img", "--body", file.to_str().unwrap(), "--url", &url],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let seen = server.join().unwrap();
    assert_eq!(
        seen.json()["items"][0]["formats"]["http-response"]["headers"]["Content-Type"],
        "application/octet-stream"
    );

    for args in [vec!["room-1", "-"], vec!["room-1", "--body", "-"]] {
        let (url, server) = one_shot("200 OK", "ok\n");
        let mut args = args.clone();
        args.extend(["--url", &url]);
        let out = publish(&args, "line one\nline two\n".as_bytes());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            server.join().unwrap().json(),
            epcp(
                "room-1",
                "text/plain; charset=utf-8",
                ("body", json!("line one\nline two\n"))
            ),
            "{args:?}"
        );
    }
}

#[test]
fn another_answer_is_printed_and_exits_1() {
    let (url, server) = one_shot("400 Bad Request", "unknown format \"ws-message\"\n");
    let out = publish(&["chat", "hi", "--url", &url], b"");
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "unknown format \"ws-message\"\n");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("fastpm: ") && stderr.contains("400 Bad Request"),
        "{stderr}"
    );
}

#[test]
fn no_server_exits_1_with_one_line() {
    // A port that was free a moment ago: nothing listens on it.
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}/publish/");
    let out = publish(&["chat", "hi", "--url", &url], b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("fastpm: cannot publish to {url}: cannot connect")),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Connection refused").count(),
        1,
        "the cause once: {stderr}"
    );
}

#[test]
fn bad_usage_exits_2_without_sending() {
    // Nothing listens at the default URL's port in this test: usage is refused first.
    let cases: [(&[&str], &str); 6] = [
        (&["chat"], "what to publish?"),
        (&["a b", "m"], "channel \"a b\""),
        (&["a;b", "m"], "channel \"a;b\""),
        (&["chat", "m", "--body", "/dev/null"], "cannot be used with"),
        (
            &["chat", "m", "--url", "https://x/publish/"],
            "only http://",
        ),
        (&["chat", "m", "--content-type", "a\nb"], "--content-type"),
    ];
    for (args, want) in cases {
        let out = publish(args, b"");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr:?} lacks {want:?}");
    }
    let help = publish(&["--help"], b"");
    assert!(text(&help.stdout).contains("http://127.0.0.1:9180/publish/"));
}
