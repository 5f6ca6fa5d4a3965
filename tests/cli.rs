//! The command line as a user meets it: `check` on good and bad configs (file:line:column and
//! exit 2), `request` against a live server and its retry on a full queue, refusing a socket
//! another server owns, replacing a stale one, and a graceful TERM that lets requests finish.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::Duration;

use common::{raw, Server, FASTPM};

const HELLO: &str = r#"
[global]
status_listen = ""
runtime_dir = "{dir}/rt"

[pool.w]
workers = "thread"
max_children = 2

[pool.w.listen]
address = "unix:{dir}/w.sock"

[pool.w.app]
kind = "sleep"
"#;

fn fastpm(args: &[&str]) -> std::process::Output {
    Command::new(FASTPM)
        .args(args)
        .env_remove("LISTENQ")
        .output()
        .expect("run fastpm")
}

#[test]
fn check_prints_the_effective_embedded_config() {
    let out = fastpm(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("511"), "{text}");
    assert!(text.contains("127.0.0.1:9000"), "{text}");
    let out = fastpm(&["check", "--backlog", "2000"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2000"));
}

#[test]
fn bad_config_names_file_line_column_and_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[pool.www]\nmax_children = 4\nmax_chidlren = 5\n\n[pool.www.app]\nkind = \"hello\"\n",
    )
    .unwrap();
    let out = fastpm(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("fastpm: "), "{err}");
    assert!(err.contains(&format!("{}:3:1", path.display())), "{err}");
    assert!(err.contains("max_chidlren"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    std::fs::write(&path, "[pool.www]\npm = \"dynamc\"\n").unwrap();
    let out = fastpm(&["run", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":2:") && err.contains("pm"), "{err}");
}

#[test]
fn bad_listenq_is_a_usage_error() {
    let out = Command::new(FASTPM)
        .args(["check"])
        .env("LISTENQ", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LISTENQ"));
}

#[test]
fn request_prints_the_response() {
    let server = Server::start(HELLO);
    let sock = server.path("w.sock");
    let out = fastpm(&[
        "request",
        &format!("unix:{}", sock.display()),
        "/sleep?ms=1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("slept 1 ms"));
}

#[test]
fn request_retries_while_the_queue_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("full.sock");
    // Backlog 0: the queue holds one connection; the next connect() gets EAGAIN.
    let listener = UnixListener::bind(&sock).unwrap();
    nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::new(0).unwrap()).unwrap();
    let filler = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let child = Command::new(FASTPM)
        .args(["request", &format!("unix:{}", sock.display()), "/x"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Without retrying, `request` gives up on the first EAGAIN: it must still be trying.
    std::thread::sleep(Duration::from_millis(400));
    let mut child = child;
    assert!(
        child.try_wait().unwrap().is_none(),
        "fastpm request gave up while the queue was full"
    );
    // Serve: first the filler, then fastpm's retried connection.
    let (_first, _) = listener.accept().unwrap();
    drop(filler);
    let (mut conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(8).any(|w| w == [1, 5, 0, 1, 0, 0, 0, 0]) {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let mut reply = raw::record(raw::STDOUT, 1, b"Content-Type: text/plain\r\n\r\nretried");
    reply.extend(raw::record(raw::END_REQUEST, 1, &[0, 0, 0, 0, 0, 0, 0, 0]));
    conn.write_all(&reply).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("retried"));
}

#[test]
fn a_live_socket_is_refused_and_a_stale_one_replaced() {
    let server = Server::start(HELLO);
    let config = server.path("fastpm.toml");
    let out = fastpm(&["run", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("w.sock"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("fastpm: ")).count(),
        1,
        "{err}"
    );
    drop(server);

    // A socket file nobody listens on any more is replaced.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("w.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let config = HELLO.replace("{dir}/w.sock", stale.to_str().unwrap());
    let server = Server::start(&config);
    let r = raw::get(&format!("unix:{}", stale.display()), "/sleep", "ms=1");
    assert!(r.body().contains("slept 1 ms"));
    drop(server);
}

#[test]
fn term_lets_in_flight_and_queued_requests_finish() {
    let mut server = Server::start(HELLO);
    let addr = format!("unix:{}", server.path("w.sock").display());
    // 2 in flight (2 workers) + 2 queued, each 500 ms.
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut c = raw::connect(&addr);
        c.write_all(&raw::request("/sleep", "ms=500", b"", false))
            .unwrap();
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(100));
    let status = server.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    for mut c in conns {
        let r = raw::read_response(&mut *c).expect("every request gets its response");
        assert!(r.body().contains("slept 500 ms"));
    }
}
