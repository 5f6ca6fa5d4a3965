//! Overload policies end to end (DESIGN.md §4 "Overload"): a `deadline` and a `codel` pool
//! under overload shed requests with `Status: 503`, `Retry-After` and protocol status
//! `FCGI_OVERLOADED` (2) without running the app, and count them in `shed requests` and
//! `rejected conn`; a request whose client left before a worker took it is counted in
//! `abandoned requests` and not run.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::raw;
use common::{master_status, Server};

const FCGI_OVERLOADED: u8 = 2;

fn config(status_port: u16, overload: &str) -> String {
    format!(
        r#"
[global]
status_listen = "127.0.0.1:{status_port}"
runtime_dir = "{{dir}}/rt"

[pool.o]
workers = "thread"
max_children = 1

[pool.o.listen]
address = "unix:{{dir}}/o.sock"

[pool.o.app]
kind = "sleep"

[pool.o.overload]
{overload}
"#
    )
}

fn is_shed(r: &raw::Response) -> bool {
    let text = r.text();
    let shed = text.starts_with("Status: 503");
    if shed {
        assert!(text.contains("Retry-After: 1\r\n"), "{text}");
        assert_eq!(r.protocol_status, FCGI_OVERLOADED, "{text}");
    } else {
        assert!(text.contains("slept"), "{text}");
        assert_eq!(r.protocol_status, 0, "{text}");
    }
    shed
}

#[test]
fn deadline_sheds_requests_that_waited_too_long() {
    let server = Server::start(&config(
        0,
        "policy = \"deadline\"\nmax_queue_wait = \"100ms\"",
    ));
    let port = server.status_port();
    let addr = format!("unix:{}", server.path("o.sock").display());
    // Four connections at once to one worker sleeping 300 ms: the first runs at once, the
    // others wait ≥ 300 ms > 100 ms: the second and third are shed (quickly), the fourth has
    // nobody behind it, so it runs rather than leave the worker idle.
    let mut conns: Vec<_> = (0..4)
        .map(|_| {
            let mut c = raw::connect(&addr);
            c.write_all(&raw::request("/sleep", "ms=300", b"", false))
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
            c
        })
        .collect();
    let started = Instant::now();
    let shed: Vec<bool> = conns
        .iter_mut()
        .map(|c| is_shed(&raw::read_response(&mut **c).expect("a response")))
        .collect();
    assert_eq!(shed, [false, true, true, false]);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(900),
        "shed requests did not sleep: {took:?}"
    );
    let pool = &master_status(port)["pools"][0];
    assert_eq!(pool["shed requests"], 2, "{pool}");
    assert_eq!(pool["rejected conn"], 2, "{pool}");
    assert_eq!(pool["abandoned requests"], 0, "{pool}");
}

#[test]
fn codel_sheds_a_standing_queue() {
    let server = Server::start(&config(
        0,
        "policy = \"codel\"\ntarget = \"5ms\"\ninterval = \"100ms\"",
    ));
    let port = server.status_port();
    let addr = format!("unix:{}", server.path("o.sock").display());
    // Six closed-loop clients on one 50 ms worker for 1.5 s: a standing queue of ~250 ms.
    let until = Instant::now() + Duration::from_millis(1500);
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let (mut ok, mut shed) = (0u64, 0u64);
                while Instant::now() < until {
                    let mut c = raw::connect(&addr);
                    c.write_all(&raw::request("/sleep", "ms=50", b"", false))
                        .unwrap();
                    if is_shed(&raw::read_response(&mut *c).expect("a response")) {
                        shed += 1;
                        // A client that got 503 backs off briefly, as Retry-After asks.
                        std::thread::sleep(Duration::from_millis(20));
                    } else {
                        ok += 1;
                    }
                }
                (ok, shed)
            })
        })
        .collect();
    let (ok, shed) = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    let pool = &master_status(port)["pools"][0];
    eprintln!(
        "codel: {ok} ok, {shed} shed; p50 {} ms",
        pool["queue wait p50 ms"]
    );
    assert!(shed > 0, "codel shed nothing: {pool}");
    assert!(ok >= 15, "the worker kept serving: {ok} ok");
    assert_eq!(pool["shed requests"], shed, "{pool}");
    assert_eq!(pool["rejected conn"], shed, "{pool}");
}

#[test]
fn abandoned_request_is_counted_and_not_run() {
    let server = Server::start(&config(0, "policy = \"none\""));
    let port = server.status_port();
    let addr = format!("unix:{}", server.path("o.sock").display());
    let started = Instant::now();
    // Keep the worker busy for 500 ms.
    let mut busy = raw::connect(&addr);
    busy.write_all(&raw::request("/sleep", "ms=500", b"", false))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // A client sends a 3 s request and gives up before the worker takes it.
    let mut quitter = raw::connect(&addr);
    quitter
        .write_all(&raw::request("/sleep", "ms=3000", b"", false))
        .unwrap();
    drop(quitter);
    // The next client must not wait for the quitter's 3 s.
    let mut next = raw::connect(&addr);
    next.write_all(&raw::request("/sleep", "ms=10", b"", false))
        .unwrap();
    assert!(!is_shed(
        &raw::read_response(&mut *busy).expect("busy answered")
    ));
    assert!(!is_shed(
        &raw::read_response(&mut *next).expect("next answered")
    ));
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the abandoned request ran: {took:?}"
    );
    let pool = &master_status(port)["pools"][0];
    assert_eq!(pool["abandoned requests"], 1, "{pool}");
    assert_eq!(pool["shed requests"], 0, "{pool}");
    assert_eq!(pool["accepted conn"], 3, "{pool}");
}
