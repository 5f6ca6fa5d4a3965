//! Held requests (DESIGN.md §8) end to end, over real sockets, with a real fastpm master and
//! its worker processes: a `longpoll` pool's sub/pub, resume, timeouts, a client that leaves,
//! `max_held`, the master's `/publish/` and its refusals, kept connections after a held
//! answer, and held requests across HUP and TERM.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::longpoll::{
    connect, header, held, http_post, lp_request, pool_status, publish, publish_cli, status_line,
    still_held, subscribe, wait_until,
};
use common::raw::read_response;
use common::Server;
use nix::sys::signal::Signal;

fn config(extra_app: &str) -> String {
    config_with("process", extra_app)
}

fn config_with(workers: &str, extra_app: &str) -> String {
    format!(
        r#"
[global]
status_listen = "127.0.0.1:0"
runtime_dir = "{{dir}}/run"
shutdown_timeout = "5s"

[pool.lp]
workers = "{workers}"
max_children = 2
status_path = "/status"
ping_path = "/ping"

[pool.lp.listen]
address = "unix:{{dir}}/lp.sock"

[pool.lp.app]
kind = "longpoll"
{extra_app}
"#
    )
}

#[test]
fn a_publish_answers_every_subscriber_once_and_the_workers_stay_free() {
    let server = Server::start(&config(""));
    let mut subs: Vec<UnixStream> = (0..50)
        .map(|_| subscribe(&server, "room", "", &[]))
        .collect();
    wait_until("50 held", Duration::from_secs(5), || held(&server) == 50);
    // Two workers, fifty held requests: the workers still answer at once.
    let mut ping = connect(&server);
    let t = Instant::now();
    ping.write_all(&common::raw::request("/ping", "", b"", false))
        .unwrap();
    let pong = read_response(&mut ping).expect("ping");
    assert!(pong.body().contains("pong"), "{}", pong.text());
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "ping took {:?}",
        t.elapsed()
    );
    for s in subs.iter_mut() {
        assert!(
            still_held(s, Duration::from_millis(1)),
            "answered before any publish"
        );
    }

    let answer = publish(&server, "room", "hello, room");
    assert_eq!(status_line(&answer), "201 Created", "{}", answer.text());
    assert_eq!(answer.body(), r#"{"id":1,"subscribers":50}"#);
    for s in subs.iter_mut() {
        let r = read_response(s).expect("a held request answered");
        assert_eq!(r.body(), "hello, room");
        assert_eq!(header(&r, "Message-Id").as_deref(), Some("1"));
        assert_eq!(r.protocol_status, 0);
        // Not kept: the holder closes it after the one answer.
        assert!(read_response(s).is_none(), "a second answer");
    }
    let st = pool_status(&server);
    assert_eq!(st["held requests"], 0, "{st}");
    assert_eq!(st["max held requests"], 50, "{st}");
    assert_eq!(st["messages delivered"], 50, "{st}");
    assert_eq!(st["messages published"], 1, "{st}");
    // No subscriber: 202.
    let answer = publish(&server, "room", "nobody");
    assert_eq!(status_line(&answer), "202 Accepted", "{}", answer.text());
    assert_eq!(answer.body(), r#"{"id":2,"subscribers":0}"#);
}

#[test]
fn thread_workers_hand_held_requests_to_the_master_too() {
    // The same link and holder serve a thread pool (its front runs in the master).
    let mut server = Server::start(&config_with("thread", ""));
    let mut subs: Vec<UnixStream> = (0..20).map(|_| subscribe(&server, "t", "", &[])).collect();
    wait_until("20 held", Duration::from_secs(5), || held(&server) == 20);
    let answer = publish(&server, "t", "to threads");
    assert_eq!(answer.body(), r#"{"id":1,"subscribers":20}"#);
    for s in subs.iter_mut() {
        assert_eq!(read_response(s).expect("answered").body(), "to threads");
    }
    // A kept connection comes back to the thread pool's front and serves again. Its first
    // request puts it in the front's epoll set; the hold takes it out of the process and back
    // in under the same descriptor number (the same socket, so the same epoll entry): it must
    // be re-armed, not refused with EEXIST.
    let mut s = connect(&server);
    s.write_all(&common::raw::request_with_id(2, "/ping", "", b"", true))
        .unwrap();
    assert!(read_response(&mut s).expect("ping").body().contains("pong"));
    s.write_all(&lp_request(3, "GET", "/sub/t", "", &[], b"", true))
        .unwrap();
    wait_until("held", Duration::from_secs(5), || held(&server) == 1);
    publish(&server, "t", "kept");
    assert_eq!(read_response(&mut s).expect("held answer").body(), "kept");
    for id in 4..8 {
        s.write_all(&common::raw::request_with_id(id, "/ping", "", b"", true))
            .unwrap();
        assert!(read_response(&mut s).expect("ping").body().contains("pong"));
        s.write_all(&lp_request(id, "GET", "/sub/t", "", &[], b"", true))
            .unwrap();
        wait_until("held", Duration::from_secs(5), || held(&server) == 1);
        publish(&server, "t", "again");
        assert_eq!(read_response(&mut s).expect("held answer").body(), "again");
    }
    assert!(!server.log().contains("cannot watch"), "{}", server.log());
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

#[test]
fn resume_by_last_id_event_id_and_etag_and_say_what_was_lost() {
    let server = Server::start(&config("history = 3"));
    for i in 1..=5 {
        publish(&server, "news", &format!("m{i}"));
    }
    // Retained: 3, 4, 5. After 3 comes 4 at once.
    for (query, headers) in [
        ("last_id=3", vec![]),
        ("", vec![("HTTP_LAST_EVENT_ID", "3")]),
        ("", vec![("HTTP_IF_NONE_MATCH", "\"3\"")]),
    ] {
        let mut s = subscribe(&server, "news", query, &headers);
        let r = read_response(&mut s).expect("answered at once");
        assert_eq!(r.body(), "m4", "{query} {headers:?}");
        assert_eq!(header(&r, "Messages-Lost"), None);
    }
    // After 1: 2 is gone from the history; 3 comes with the gap said.
    let mut s = subscribe(&server, "news", "last_id=1", &[]);
    let r = read_response(&mut s).expect("answered at once");
    assert_eq!(r.body(), "m3");
    assert_eq!(header(&r, "Messages-Lost").as_deref(), Some("1"));
    // After the newest: held until the next.
    let mut s = subscribe(&server, "news", "last_id=5", &[]);
    assert!(still_held(&mut s, Duration::from_millis(300)));
    publish(&server, "news", "m6");
    assert_eq!(read_response(&mut s).expect("m6").body(), "m6");
    // Not a number: 400, nothing held.
    let mut s = subscribe(&server, "news", "last_id=abc", &[]);
    assert_eq!(status_line(&read_response(&mut s).unwrap())[..3], *"400");
}

#[test]
fn timeouts_clients_that_leave_and_max_held() {
    let server = Server::start(&config("hold_timeout = \"1s\"\nmax_held = 3"));
    let t = Instant::now();
    let mut s = subscribe(&server, "quiet", "", &[]);
    let r = read_response(&mut s).expect("timeout answer");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(status_line(&r), "204 No Content", "{}", r.text());
    assert_eq!(pool_status(&server)["held timeouts"], 1);

    // Clients that leave: the subscription is dropped at once and counted.
    let gone: Vec<UnixStream> = (0..3)
        .map(|_| subscribe(&server, "quiet", "", &[]))
        .collect();
    wait_until("3 held", Duration::from_secs(5), || held(&server) == 3);
    // The fourth is over max_held: 503 with Retry-After, at once.
    let mut over = subscribe(&server, "quiet", "", &[]);
    let r = read_response(&mut over).expect("refused at once");
    assert_eq!(status_line(&r)[..3], *"503", "{}", r.text());
    assert!(header(&r, "Retry-After").is_some(), "{}", r.text());
    drop(gone);
    wait_until("subscriptions dropped", Duration::from_millis(500), || {
        held(&server) == 0
    });
    let st = pool_status(&server);
    assert_eq!(st["held clients gone"], 3, "{st}");
    // `channels` is counted once a second.
    wait_until("no channel left", Duration::from_millis(2500), || {
        pool_status(&server)["channels"] == 0
    });
}

#[test]
fn a_kept_connection_serves_again_after_its_held_answer() {
    let server = Server::start(&config(""));
    let mut s = connect(&server);
    s.write_all(&lp_request(7, "GET", "/sub/k", "", &[], b"", true))
        .unwrap();
    wait_until("held", Duration::from_secs(5), || held(&server) == 1);
    publish(&server, "k", "first");
    let r = read_response(&mut s).expect("held answer");
    assert_eq!((r.id, r.body().as_str()), (7, "first"));
    // The same connection, back with a worker: a normal request, then another hold.
    s.write_all(&common::raw::request_with_id(8, "/ping", "", b"", true))
        .unwrap();
    let r = read_response(&mut s).expect("ping on the kept connection");
    assert_eq!(r.id, 8);
    assert!(r.body().contains("pong"));
    s.write_all(&lp_request(9, "GET", "/sub/k", "", &[], b"", true))
        .unwrap();
    wait_until("held again", Duration::from_secs(5), || held(&server) == 1);
    publish(&server, "k", "second");
    let r = read_response(&mut s).expect("second held answer");
    assert_eq!((r.id, r.body().as_str()), (9, "second"));
}

#[test]
fn the_master_publishes_pushpin_json_and_refuses_bad_input_whole() {
    let server = Server::start(&config(""));
    let port = server.status_port();
    let mut sub = subscribe(&server, "c", "", &[]);
    wait_until("held", Duration::from_secs(5), || held(&server) == 1);
    let big = format!(
        r#"{{"items":[{{"channel":"c","formats":{{"http-response":{{"body":"{}"}}}}}}]}}"#,
        "x".repeat((1 << 20) + 1)
    );
    for (bad, why) in [
        (r#"{"items":[{"channel":"c""#.to_string(), "invalid JSON"),
        (r#"{"items":[{"formats":{"http-response":{"body":"x"}}}]}"#.to_string(), "missing channel"),
        (r#"{"items":[{"channel":"c","formats":{"ws-message":{"content":"x"}}}]}"#.to_string(), "unknown format"),
        (big, "body over 1 MiB"),
        // One good item and one bad: nothing is published.
        (r#"{"items":[{"channel":"c","formats":{"http-response":{"body":"ok"}}},{"channel":"","formats":{"http-response":{"body":"x"}}}]}"#.to_string(), "bad second item"),
    ] {
        let (code, body) = http_post(port, "/publish/", bad.as_bytes());
        assert_eq!(code, 400, "{why}: {body}");
        assert_eq!(body.trim().lines().count(), 1, "{why}: one line: {body:?}");
        assert!(still_held(&mut sub, Duration::from_millis(50)), "{why}: published anyway");
    }
    let good = r#"{"items":[{"channel":"c","formats":{"http-response":{"code":200,"headers":{"Content-Type":"text/x-chat"},"body":"from pushpin json"}}}]}"#;
    let (code, body) = http_post(port, "/publish/", good.as_bytes());
    assert_eq!(code, 200, "{body}");
    let r = read_response(&mut sub).expect("answered");
    assert_eq!(r.body(), "from pushpin json");
    assert_eq!(header(&r, "Content-Type").as_deref(), Some("text/x-chat"));

    // `fastpm publish` goes the same way.
    let mut sub = subscribe(&server, "c", "", &[]);
    wait_until("held", Duration::from_secs(5), || held(&server) == 1);
    publish_cli(port, "c", "from the cli");
    assert_eq!(
        read_response(&mut sub).expect("answered").body(),
        "from the cli"
    );
}

#[test]
fn the_masters_publishes_are_counted_on_the_master_and_a_pools_pub_on_the_pool() {
    let server = Server::start(&config(""));
    let port = server.status_port();
    let mut sub = subscribe(&server, "c", "", &[]);
    wait_until("held", Duration::from_secs(5), || held(&server) == 1);
    // One POST, two messages: one reaches the held request, one a channel nobody waits on
    // (published all the same: it is kept for resume).
    let two = serde_json::json!({"items": [
        {"channel": "c", "formats": {"http-response": {"body": "one"}}},
        {"channel": "nobody", "formats": {"http-response": {"body": "two"}}},
    ]});
    let (code, body) = http_post(port, "/publish/", two.to_string().as_bytes());
    assert_eq!(code, 200, "{body}");
    assert_eq!(read_response(&mut sub).expect("answered").body(), "one");
    // `fastpm publish`: the third.
    publish_cli(port, "c", "three");
    // Refused: nothing published, nothing counted.
    let (code, _) = http_post(port, "/publish/", br#"{"items":[{"channel":"c"}]}"#);
    assert_eq!(code, 400);
    // The pool's own `pub` path: the pool's message, not the master's.
    let answer = publish(&server, "c", "four");
    assert_eq!(status_line(&answer), "202 Accepted", "{}", answer.text());

    let status = common::master_status(port);
    assert_eq!(status["messages published"], 3, "{status}");
    assert_eq!(pool_status(&server)["messages published"], 1, "{status}");
    let (code, text) = common::http_get(port, "/status");
    assert_eq!(code, 200, "{text}");
    let master_part = text.split("\n\n").next().unwrap();
    assert!(
        master_part.lines().any(|l| l == "messages published:   3"),
        "{text}"
    );
    let (code, metrics) = common::http_get(port, "/metrics");
    assert_eq!(code, 200, "{metrics}");
    for want in [
        "\nfastpm_master_messages_published_total 3\n",
        "\nfastpm_messages_published_total{pool=\"lp\"} 1\n",
        "\nfastpm_broker_connected{broker=\"memory\"} 1\n",
    ] {
        assert!(metrics.contains(want), "{want}---\n{metrics}");
    }
}

#[test]
fn hup_keeps_held_requests_and_term_answers_them() {
    let mut server = Server::start(&config(""));
    let config_path = server.path("fastpm.toml");
    let mut subs: Vec<UnixStream> = (0..5).map(|_| subscribe(&server, "r", "", &[])).collect();
    wait_until("5 held", Duration::from_secs(5), || held(&server) == 5);
    let workers_before = common::child_pids(server.pid());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), Signal::SIGHUP).unwrap();
    wait_until("reloaded", Duration::from_secs(5), || {
        server.log().contains("reloaded")
    });
    wait_until("old workers replaced", Duration::from_secs(10), || {
        let now = common::child_pids(server.pid());
        !now.is_empty() && now.iter().all(|p| !workers_before.contains(p))
    });
    for s in subs.iter_mut() {
        assert!(
            still_held(s, Duration::from_millis(1)),
            "a held request ended at HUP"
        );
    }
    assert_eq!(held(&server), 5);
    let r = publish(&server, "r", "after reload");
    assert_eq!(r.body(), r#"{"id":1,"subscribers":5}"#);
    for s in subs.iter_mut() {
        assert_eq!(read_response(s).expect("answered").body(), "after reload");
    }
    assert!(Path::new(&config_path).exists());

    // TERM with requests held: each gets its timeout answer, none is cut.
    let mut subs: Vec<UnixStream> = (0..5).map(|_| subscribe(&server, "r", "", &[])).collect();
    wait_until("5 held", Duration::from_secs(5), || held(&server) == 5);
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    for s in subs.iter_mut() {
        let r = read_response(s).expect("answered, not cut, at TERM");
        assert_eq!(status_line(&r), "204 No Content", "{}", r.text());
    }
}

#[test]
fn a_reload_applies_a_new_hold_timeout_and_max_held() {
    let server = Server::start(&config("hold_timeout = \"30s\"\nmax_held = 1"));
    let mut first = subscribe(&server, "r", "", &[]);
    wait_until("held", Duration::from_secs(5), || held(&server) == 1);
    let mut over = subscribe(&server, "r", "", &[]);
    assert_eq!(status_line(&read_response(&mut over).unwrap())[..3], *"503");
    let path = server.path("fastpm.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("hold_timeout = \"30s\"", "hold_timeout = \"1s\"")
        .replace("max_held = 1", "max_held = 5");
    std::fs::write(&path, text).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), Signal::SIGHUP).unwrap();
    wait_until("reloaded", Duration::from_secs(5), || {
        server.log().contains("reloaded")
    });
    // New holds get the new settings; the one already held keeps its own deadline.
    let t = Instant::now();
    let mut second = subscribe(&server, "r", "", &[]);
    let r = read_response(&mut second).expect("timeout answer");
    assert_eq!(status_line(&r), "204 No Content", "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(still_held(&mut first, Duration::from_millis(1)));
}
