//! The master's HTTP status listener end to end: `serve` on 127.0.0.1:0 over a real scoreboard
//! whose workers are all busy, read with fastpm's own `client::fetch` and `fastpm status --watch` (no terminal), then
//! shut down.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use fastpm::scoreboard::Scoreboard;
use fastpm::status::client::{self, StatusClientError};
use fastpm::status::http::{serve, SnapshotSource};
use fastpm::status::{PoolInfo, PoolSnapshot};
use serde_json::Value;

struct BoardSource {
    board: Scoreboard,
    infos: Vec<PoolInfo>,
}

impl SnapshotSource for BoardSource {
    fn snapshots(&self, full: bool) -> Vec<PoolSnapshot> {
        self.infos
            .iter()
            .enumerate()
            .map(|(i, info)| {
                PoolSnapshot::collect(info, self.board.pool(i), self.board.slots(i), full)
            })
            .collect()
    }
}

fn info(name: &str) -> PoolInfo {
    PoolInfo {
        name: name.to_string(),
        process_manager: "static".to_string(),
        listen_address: "127.0.0.1:9000".to_string(),
        listen_backlog: 511,
        somaxconn: Some(4096),
        max_children: 2,
    }
}

/// A running listener: its address, the shutdown switch, and the thread running `serve`.
struct Server {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

fn start() -> Server {
    let board = Scoreboard::create(&[2, 1]).unwrap();
    // Every worker of every pool is busy: the listener must still answer.
    for pool in 0..2 {
        for (i, slot) in board.slots(pool).iter().enumerate() {
            slot.claim(2000 + i as u32);
            slot.begin_request(b"GET", b"/sleep.php", b"/srv/sleep.php");
        }
    }
    board.pool(0).accepted_conn.store(17, Relaxed);
    let source = Arc::new(BoardSource {
        board,
        infos: vec![info("www"), info("api")],
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let thread = std::thread::spawn(move || runtime.block_on(serve(listener, source, stopped)));
    Server { addr, stop, thread }
}

/// One raw request, for what `fetch` does not show (headers, HEAD, other methods).
fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

fn stop(server: Server) {
    server.stop.send(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !server.thread.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not return after shutdown"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    server.thread.join().unwrap().unwrap();
}

#[test]
fn serves_every_path_then_stops() {
    let server = start();
    let base = format!("http://{}", server.addr);

    let v: Value =
        serde_json::from_str(&client::fetch(&format!("{base}/status?json")).unwrap()).unwrap();
    let pools = v["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 2);
    assert_eq!(pools[0]["pool"], "www");
    assert_eq!(pools[0]["accepted conn"], 17);
    assert_eq!(pools[0]["active processes"], 2);
    assert_eq!(pools[0]["idle processes"], 0);
    assert!(pools[0]["listen drops"].is_null());

    let text = client::fetch(&format!("{base}/status/www?full")).unwrap();
    assert!(text.starts_with("pool:                 www\n"), "{text}");
    assert_eq!(text.matches("************************").count(), 2);
    assert!(text.contains("request URI:          /sleep.php\n"));
    assert!(!text.contains("pool:                 api"));

    let one: Value =
        serde_json::from_str(&client::fetch(&format!("{base}/status/api?json&full")).unwrap())
            .unwrap();
    assert_eq!(one["pool"], "api", "one pool: php-fpm's shape, not wrapped");
    assert_eq!(one["processes"].as_array().unwrap().len(), 1);

    match client::fetch(&format!("{base}/status/nope")) {
        Err(StatusClientError::Status {
            status,
            status_line,
            ..
        }) => {
            assert_eq!(status, 404);
            assert_eq!(status_line, "HTTP/1.1 404 Not Found");
        }
        other => panic!("expected 404, got {other:?}"),
    }
    match client::fetch(&format!("{base}/nothing-here")) {
        Err(StatusClientError::Status { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }

    let metrics = client::fetch(&format!("{base}/metrics")).unwrap();
    assert!(metrics.ends_with("# EOF\n"));
    assert!(metrics.contains("phpfpm_accepted_connections{pool=\"www\"} 17\n"));
    assert!(metrics.contains("phpfpm_active_processes{pool=\"api\"} 1\n"));

    // php-fpm's self-refreshing table stays at /status?html; / is the live dashboard.
    let page = client::fetch(&format!("{base}/status?html")).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("http-equiv=\"refresh\""));
    assert!(page.contains("<th>pool</th><td>www</td><td>api</td>"));
    let dashboard = client::fetch(&format!("{base}/")).unwrap();
    assert!(dashboard.starts_with("<!DOCTYPE html>"));
    assert!(
        dashboard.contains("/history?json"),
        "the dashboard draws from /history"
    );
    // This source keeps no history: /history says so (the master's does; tests/dashboard.rs).
    match client::fetch(&format!("{base}/history?json")) {
        Err(StatusClientError::Status { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }

    // Headers, HEAD and other methods.
    let head = raw(
        server.addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"));
    assert!(head
        .to_ascii_lowercase()
        .contains("cache-control: no-cache"));
    let json_head = raw(
        server.addr,
        "HEAD /status?json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(json_head.starts_with("HTTP/1.1 200 OK\r\n"), "{json_head}");
    assert!(json_head
        .to_ascii_lowercase()
        .contains("content-type: application/json\r\n"));
    assert!(
        json_head.ends_with("\r\n\r\n"),
        "HEAD has no body: {json_head:?}"
    );
    let post = raw(
        server.addr,
        "POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(
        post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{post}"
    );
    assert!(post.to_ascii_lowercase().contains("allow: get, head\r\n"));

    // A keep-alive connection left open must not keep `serve` from returning.
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 16];
    idle.read_exact(&mut first).unwrap();

    stop(server);
    // …and graceful shutdown closes it once its answer is complete.
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest)
        .expect("the server closes the idle keep-alive connection");
    assert!(String::from_utf8_lossy(&rest).contains("pool:                 api"));
}

/// `fastpm status --watch` whose stdout is not a terminal (a pipe here) prints the status once,
/// as plain text without escape codes, and exits 0; the live view is for terminals
/// (tests/status_watch.rs drives it in tmux).
#[test]
fn watch_without_a_terminal_prints_once() {
    let server = start();
    let url = format!("http://{}/status", server.addr);
    let out = std::process::Command::new(common::FASTPM)
        .args(["status", "--watch", "--url", &url])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}: {text}", out.status);
    assert!(text.starts_with("pool:                 www\n"), "{text}");
    assert_eq!(
        text.matches("pool:                 www").count(),
        1,
        "{text}"
    );
    assert!(
        !text.contains('\x1b'),
        "no escape codes into a pipe: {text:?}"
    );
    stop(server);
}

#[test]
fn fetch_reports_a_refused_connection() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = client::fetch(&format!("http://127.0.0.1:{port}/status")).unwrap_err();
    assert!(matches!(err, StatusClientError::Connect { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
        "{err}"
    );
}

/// Past `MAX_CONNECTIONS` open connections a new one is closed at once (the master's
/// descriptors are for its pools); once they go, the listener answers again.
#[test]
fn connections_past_the_cap_are_closed_at_once() {
    use fastpm::status::http::MAX_CONNECTIONS;
    let server = start();
    let silent: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // The listener accepts them in its own time: poll until one more is refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut extra = TcpStream::connect(server.addr).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ = extra.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = Vec::new();
        let read = extra.read_to_end(&mut out);
        // Closed without an answer: refused at the cap. (A close with our request unread in
        // the server's buffer arrives as a reset, an empty close as end of file.)
        let closed = match &read {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        if closed && out.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a connection past {MAX_CONNECTIONS} open ones was still answered: {:?}",
            String::from_utf8_lossy(&out)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(silent);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = raw(
            server.addr,
            "GET /status?json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if out.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status did not answer after the silent connections closed: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(server);
}

/// A kept-alive connection that goes quiet after its answer is closed by the listener, like a
/// silent new one (the read deadline covers the wait for the next request too).
#[test]
fn an_idle_kept_connection_is_closed() {
    let server = start();
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let read = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        read.is_ok(),
        "the idle kept connection was still open after {:?}: {read:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(13),
        "{:?}",
        started.elapsed()
    );
    stop(server);
}
