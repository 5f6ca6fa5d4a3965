//! Kept connections (FCGI_KEEP_CONN, nginx's `fastcgi_keep_conn on`) obey the master: an idle
//! one is given up when the pool stops (TERM), reloads (HUP) or its worker is due for
//! recycling (`max_requests`), instead of holding the worker until the 10 s read timeout; and
//! while idle it counts as an idle worker, not an active one.

mod common;

use std::time::{Duration, Instant};

use common::{raw, Server};
use nix::sys::signal::Signal;

fn config(workers: &str, extra: &str, status_port: u16) -> String {
    format!(
        r#"
[global]
status_listen = "127.0.0.1:{status_port}"
runtime_dir = "{{dir}}/rt"

[pool.k]
workers = "{workers}"
max_children = 2
{extra}

[pool.k.listen]
address = "unix:{{dir}}/k.sock"

[pool.k.app]
kind = "hello"
"#
    )
}

/// A kept connection with one request answered on it, left idle.
fn idle_kept(server: &Server) -> Box<dyn raw::Conn> {
    let mut conn = raw::connect(&format!("unix:{}", server.path("k.sock").display()));
    ask(&mut *conn);
    conn
}

/// One keep-conn request on `conn`; its body.
fn ask(conn: &mut dyn raw::Conn) -> String {
    conn.write_all(&raw::request("/", "", b"", true)).unwrap();
    raw::read_response(conn).expect("a response").body()
}

/// Waits until the peer closes `conn` (EOF); how long that took.
fn closed_within(conn: &mut dyn raw::Conn, limit: Duration) -> Duration {
    let started = Instant::now();
    assert!(
        raw::read_record(conn).is_none(),
        "a record arrived on an idle connection"
    );
    let took = started.elapsed();
    assert!(
        took < limit,
        "the idle kept connection was closed only after {took:?}"
    );
    took
}

#[test]
fn term_closes_idle_kept_connections_at_once() {
    for workers in ["process", "thread"] {
        let mut server = Server::start(&config(workers, "", 0));
        let mut conns: Vec<_> = (0..2).map(|_| idle_kept(&server)).collect();
        let started = Instant::now();
        let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(8));
        assert!(
            status.success(),
            "{workers}: {status}; log:\n{}",
            server.log()
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{workers}: TERM took {:?} with idle kept connections",
            started.elapsed()
        );
        for conn in &mut conns {
            closed_within(&mut **conn, Duration::from_secs(1));
        }
    }
}

#[test]
fn max_requests_recycles_a_worker_on_a_kept_connection() {
    let server = Server::start(&config("process", "max_requests = 3", 0));
    let mut conn = raw::connect(&format!("unix:{}", server.path("k.sock").display()));
    for _ in 0..3 {
        assert!(ask(&mut *conn).contains("Hello"));
    }
    // The third request reached max_requests: the connection ends instead of waiting for a
    // fourth on the same worker.
    closed_within(&mut *conn, Duration::from_secs(1));
    let mut fresh = raw::connect(&format!("unix:{}", server.path("k.sock").display()));
    assert!(ask(&mut *fresh).contains("Hello"));
}

#[test]
fn hup_retires_workers_held_by_idle_kept_connections() {
    let server = Server::start(&config("process", "", 0));
    let deadline = Instant::now() + Duration::from_secs(10);
    let old = loop {
        let pids = common::child_pids(server.pid());
        if pids.len() == 2 {
            break pids;
        }
        assert!(Instant::now() < deadline, "workers did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut conns: Vec<_> = (0..2).map(|_| idle_kept(&server)).collect();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), Signal::SIGHUP).unwrap();
    for conn in &mut conns {
        closed_within(&mut **conn, Duration::from_secs(2));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = common::child_pids(server.pid());
        if now.len() == 2 && now.iter().all(|p| !old.contains(p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old workers {old:?} still there after HUP: {now:?}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_idle_kept_connection_counts_as_idle() {
    let server = Server::start(&config("process", "", 0));
    let port = server.status_port();
    let _conn = idle_kept(&server);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = common::master_status(port);
        let pool = &status["pools"][0];
        if pool["idle processes"] == 2 && pool["active processes"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an idle kept connection counted as active: {pool}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
