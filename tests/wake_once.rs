//! A web server waiting for an answer on a unix socket is woken once per request, by the
//! answer. Taking a request's bytes off a unix socket wakes the peer's waiters ("room to write
//! again"); fastpm peeks at a fresh connection's request and takes the bytes off only after the
//! response (`front::conn`), so nginx in epoll (edge-triggered, EPOLLIN | EPOLLOUT, as it
//! watches an upstream) sees no event before the answer — and every client still reads an end
//! of file after it, never a reset, also when the watchdog answered 504 and the worker left.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{raw, Server};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// `max_children = 2` workers of `workers` kind running the built-in `sleep` app on
/// `{dir}/w.sock`, with `request_timeout` when given.
fn sleep_pool(workers: &str, request_timeout: Option<&str>) -> String {
    let timeout = request_timeout.map_or(String::new(), |t| format!("request_timeout = \"{t}\"\n"));
    format!(
        r#"
[global]
status_listen = ""
runtime_dir = "{{dir}}/rt"

[pool.w]
workers = "{workers}"
max_children = 2
{timeout}
[pool.w.listen]
address = "unix:{{dir}}/w.sock"

[pool.w.app]
kind = "sleep"
"#
    )
}

/// Read records up to END_REQUEST; then the stream must end with an end of file (no reset).
fn answer_then_eof(conn: &mut UnixStream) -> String {
    let mut stdout = Vec::new();
    loop {
        let record = raw::read_record(conn).expect("the answer ended before END_REQUEST");
        match record.rtype {
            raw::STDOUT => stdout.extend_from_slice(&record.content),
            raw::END_REQUEST => break,
            _ => {}
        }
    }
    let mut rest = [0u8; 64];
    match conn.read(&mut rest) {
        Ok(0) => {}
        Ok(n) => panic!("{n} bytes after END_REQUEST"),
        Err(e) => panic!(
            "the stream ended with {e} (kind {:?}), not an end of file",
            e.kind()
        ),
    }
    String::from_utf8_lossy(&stdout).into_owned()
}

/// The first epoll event after the request is sent carries the answer (EPOLLIN), not only
/// EPOLLOUT from the request being taken off the socket.
fn first_event_is_the_answer(workers: &str) {
    let server = Server::start(&sleep_pool(workers, None));
    for round in 0..3 {
        let mut conn = raw::connect_unix(&server.path("w.sock"));
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLET;
        epoll.add(&conn, EpollEvent::new(flags, 1)).unwrap();
        let mut events = [EpollEvent::empty(); 1];
        // Adding a writable socket reports EPOLLOUT once.
        assert_eq!(epoll.wait(&mut events, EpollTimeout::ZERO).unwrap(), 1);
        conn.write_all(&raw::request_with_id(1, "/sleep", "ms=300", b"", false))
            .unwrap();
        let sent = Instant::now();
        let n = epoll
            .wait(
                &mut events,
                EpollTimeout::try_from(Duration::from_secs(10)).unwrap(),
            )
            .unwrap();
        let waited = sent.elapsed();
        assert_eq!(n, 1, "round {round}: no event within 10 s");
        assert!(
            events[0].events().contains(EpollFlags::EPOLLIN),
            "round {round}, {workers} workers: woken after {waited:?} by {:?} before the answer",
            events[0].events()
        );
        assert!(
            waited >= Duration::from_millis(250),
            "round {round}: {waited:?}"
        );
        let text = answer_then_eof(&mut conn);
        assert!(text.contains("slept 300 ms"), "{text:?}");
    }
}

#[test]
fn thread_workers_wake_the_client_once_by_the_answer() {
    first_event_is_the_answer("thread");
}

#[test]
fn process_workers_wake_the_client_once_by_the_answer() {
    first_event_is_the_answer("process");
}

#[test]
fn a_request_timeout_504_ends_with_an_end_of_file() {
    let server = Server::start(&sleep_pool("process", Some("1s")));
    let mut conn = raw::connect_unix(&server.path("w.sock"));
    conn.write_all(&raw::request_with_id(1, "/sleep", "ms=5000", b"", false))
        .unwrap();
    let text = answer_then_eof(&mut conn);
    assert!(text.starts_with("Status: 504"), "{text:?}");
}

#[test]
fn a_request_in_pieces_is_answered_and_ends_with_an_end_of_file() {
    // Not all there at the first read: the peeked bytes are taken at once and the request is
    // completed from later reads, byte for byte.
    let server = Server::start(&sleep_pool("process", None));
    let mut conn = raw::connect_unix(&server.path("w.sock"));
    let request = raw::request_with_id(1, "/sleep", "ms=1", b"", false);
    let (head, tail) = request.split_at(request.len() / 2);
    conn.write_all(head).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    conn.write_all(tail).unwrap();
    let text = answer_then_eof(&mut conn);
    assert!(text.contains("slept 1 ms"), "{text:?}");
    // The worker goes on serving: a second connection is answered too.
    let mut again = raw::connect_unix(&server.path("w.sock"));
    again
        .write_all(&raw::request_with_id(1, "/sleep", "ms=1", b"", false))
        .unwrap();
    assert!(answer_then_eof(&mut again).contains("slept 1 ms"));
}
