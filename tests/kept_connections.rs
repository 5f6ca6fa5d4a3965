//! Kept connections (FCGI_KEEP_CONN, nginx's `fastcgi_keep_conn on`) obey the master: an idle
//! one is closed when the pool stops (TERM), and passed on to another worker (through the
//! master) when its worker retires (HUP, `max_requests`) — never holding the old worker, never
//! closed under nginx's feet; while idle it counts as an idle worker, not an active one.

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
fn max_requests_recycles_a_worker_and_passes_its_kept_connection_on() {
    let server = Server::start(&config("process", "max_requests = 3", 0));
    let first = two_workers(&server);
    let mut conn = raw::connect(&format!("unix:{}", server.path("k.sock").display()));
    for _ in 0..3 {
        assert!(ask(&mut *conn).contains("Hello"));
    }
    // The third request reached max_requests: the worker leaves, and the connection — which
    // nginx may be sending its next request on right now — goes to another worker instead of
    // being closed under it.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = common::child_pids(server.pid());
        if now.len() == 2 && first.iter().filter(|p| !now.contains(p)).count() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no worker recycled: {first:?} → {now:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..3 {
        assert!(
            ask(&mut *conn).contains("Hello"),
            "the kept connection was lost"
        );
    }
}

/// The pool's two worker processes, once started.
fn two_workers(server: &Server) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = common::child_pids(server.pid());
        if pids.len() == 2 {
            return pids;
        }
        assert!(Instant::now() < deadline, "workers did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn hup_retires_workers_held_by_idle_kept_connections() {
    let server = Server::start(&config("process", "", 0));
    let old = two_workers(&server);
    let mut conns: Vec<_> = (0..2).map(|_| idle_kept(&server)).collect();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), Signal::SIGHUP).unwrap();
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
    // The idle kept connections were passed on to the new workers, not closed.
    for conn in &mut conns {
        assert!(
            ask(&mut **conn).contains("Hello"),
            "a kept connection was lost at HUP"
        );
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

/// One worker, two kept connections that send their next request as soon as the last is
/// answered (as nginx's cached connections do under load): a request is always queued in
/// fastpm. A new connection must still be served within a few requests' time, not once the
/// kept ones fall silent (it waited up to 5.8 s behind nginx's kept connections).
fn new_connection_is_served_between_kept_ones(workers: &str) {
    let server = Server::start(&format!(
        r#"
[global]
status_listen = ""
runtime_dir = "{{dir}}/rt"

[pool.k]
workers = "{workers}"
max_children = 1

[pool.k.listen]
address = "unix:{{dir}}/k.sock"

[pool.k.app]
kind = "sleep"
"#
    ));
    let addr = format!("unix:{}", server.path("k.sock").display());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut conn = raw::connect(&addr);
                let mut answered = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    conn.write_all(&raw::request("/", "ms=20", b"", true))
                        .unwrap();
                    raw::read_response(&mut *conn).expect("a response");
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut fresh = raw::connect(&addr);
    fresh
        .write_all(&raw::request("/", "ms=20", b"", false))
        .unwrap();
    raw::read_response(&mut *fresh).expect("the new connection's response");
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: Vec<u32> = busy.into_iter().map(|t| t.join().unwrap()).collect();
    // Each turn is a 20 ms request: two kept ones and the new one take about 60 ms.
    assert!(
        took < Duration::from_millis(500),
        "the new connection waited {took:?} behind kept ones ({answered:?} answered)"
    );
    assert!(
        answered.iter().all(|&n| n > 5),
        "kept ones starved: {answered:?}"
    );
}

#[test]
fn thread_workers_serve_new_connections_between_kept_ones() {
    new_connection_is_served_between_kept_ones("thread");
}

#[test]
fn process_workers_serve_new_connections_between_kept_ones() {
    new_connection_is_served_between_kept_ones("process");
}
