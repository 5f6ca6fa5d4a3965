//! A client of a `kind = "longpoll"` pool (DESIGN.md §8) over raw FastCGI, and of the master's
//! `POST /publish/`: what the held-request tests send and how they read the answers. The pool
//! is named `lp` and listens on `{dir}/lp.sock` of its [`Server`].

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::http1::HttpResponse;
use super::raw::{begin, pair, read_response, record, Response, PARAMS, STDIN};
use super::{master_status, Server};

/// A request to the longpoll pool: `method path?query`, extra HTTP headers as params, a body.
pub fn lp_request(
    id: u16,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_conn: bool,
) -> Vec<u8> {
    let mut p = Vec::new();
    let len = body.len().to_string();
    for (k, v) in [
        ("REQUEST_METHOD", method),
        ("SCRIPT_NAME", path),
        ("DOCUMENT_URI", path),
        ("REQUEST_URI", path),
        ("QUERY_STRING", query),
        ("CONTENT_LENGTH", len.as_str()),
        (
            "CONTENT_TYPE",
            if body.is_empty() { "" } else { "text/plain" },
        ),
    ]
    .into_iter()
    .chain(headers.iter().copied())
    {
        p.extend(pair(k.as_bytes(), v.as_bytes()));
    }
    let mut out = begin(id, 1, keep_conn);
    out.extend(record(PARAMS, id, &p));
    out.extend(record(PARAMS, id, b""));
    if !body.is_empty() {
        out.extend(record(STDIN, id, body));
    }
    out.extend(record(STDIN, id, b""));
    out
}

/// A connection to pool `lp` (reads time out after 20 s, so a lost answer fails the test).
pub fn connect(server: &Server) -> UnixStream {
    let s = UnixStream::connect(server.path("lp.sock")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Subscribe (the request is sent; the answer is read later).
pub fn subscribe(
    server: &Server,
    channel: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> UnixStream {
    let mut s = connect(server);
    s.write_all(&lp_request(
        1,
        "GET",
        &format!("/sub/{channel}"),
        query,
        headers,
        b"",
        false,
    ))
    .unwrap();
    s
}

/// `POST /pub/CHANNEL` with `body`, and its answer.
pub fn publish(server: &Server, channel: &str, body: &str) -> Response {
    let mut s = connect(server);
    s.write_all(&lp_request(
        1,
        "POST",
        &format!("/pub/{channel}"),
        "",
        &[],
        body.as_bytes(),
        false,
    ))
    .unwrap();
    read_response(&mut s).expect("publish answered")
}

/// The CGI `Status:` of an answer (`200 OK` when it has none).
pub fn status_line(r: &Response) -> String {
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix("Status: ").map(str::to_string))
        .unwrap_or_else(|| "200 OK".into())
}

/// A CGI header of an answer, by case-insensitive name.
pub fn header(r: &Response, name: &str) -> Option<String> {
    let text = r.text();
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// Pool `name`'s JSON status as the master serves it.
pub fn pool_named(server: &Server, name: &str) -> serde_json::Value {
    let all = master_status(server.status_port());
    let pools = all["pools"].as_array().cloned().unwrap_or_default();
    pools
        .into_iter()
        .find(|p| p["pool"] == name)
        .unwrap_or_else(|| panic!("no pool {name} in {all}"))
}

/// The `lp` pool's JSON status (the pool of the long-polling tests).
pub fn pool_status(server: &Server) -> serde_json::Value {
    pool_named(server, "lp")
}

/// `fastpm publish CHANNEL MESSAGE` to the master's `/publish/` on `port`; it must succeed.
/// Its stdout (the master's JSON answer).
pub fn publish_cli(port: u16, channel: &str, message: &str) -> String {
    let url = format!("http://127.0.0.1:{port}/publish/");
    let out = std::process::Command::new(super::FASTPM)
        .args(["publish", "--url", &url, channel, message])
        .output()
        .expect("run fastpm publish");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fastpm publish: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Polls `ok` every 10 ms; fails naming `what` when it does not hold within `within`.
pub fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pool's `held requests`.
pub fn held(server: &Server) -> u64 {
    pool_status(server)["held requests"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// Whether nothing has been answered on `s` within `wait` (the request is still held, its
/// connection open).
pub fn still_held(s: &mut UnixStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 1];
    let r = s.read(&mut b);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// POST JSON to the master's HTTP listener.
pub fn post_json(port: u16, path: &str, body: &[u8]) -> HttpResponse {
    super::http1::request(
        port,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body,
    )
}

/// POST JSON to the master's HTTP listener; (status, body).
pub fn http_post(port: u16, path: &str, body: &[u8]) -> (u16, String) {
    let answer = post_json(port, path, body);
    (answer.status, answer.text())
}

/// Pushpin's EPCP JSON publishing `body` as an `http-response` on `channel`.
pub fn epcp(channel: &str, body: &str) -> String {
    serde_json::json!({
        "items": [{"channel": channel, "formats": {"http-response": {"body": body}}}]
    })
    .to_string()
}
