//! Two fastpm instances sharing one real `redis-server` (DESIGN.md §8, issue 10's third
//! done-when line), end to end: two real masters, each with a `longpoll` pool of 2 worker
//! processes and the same `broker` (`redis://127.0.0.1:PORT/3`, or `unix:PATH` where Redis is
//! killed: nothing else can take a socket path meanwhile), driven over raw FastCGI and the
//! masters' HTTP listeners. A publish on B (its pool's `pub` path, and its master's
//! `POST /publish/`) reaches 500 requests held on A within 500 ms; a client resumes with
//! `last_id` on the other instance and gets what it missed; Redis killed and started again on
//! the same socket: what A holds stays held, status says the broker is disconnected, publishes
//! answer 503 with Retry-After, and after the reconnect a publish answers the requests still
//! held; each master logs each broker state change once, however many reconnect attempts failed
//! in between.

mod common;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::longpoll::{
    epcp, header, held, pool_status, post_json, publish, status_line, still_held, subscribe,
    wait_until,
};
use common::raw::read_response;
use common::redis::{RedisAddr, RedisServer};
use common::{master_status, Launch, Server};

/// The database both instances use over TCP (not 0: the pub/sub channel is named after it).
const DB: u32 = 3;

/// The `[global] broker` value for Redis at `redis`: database [`DB`] over TCP; a unix socket
/// takes no database in the config (0).
fn broker(redis: &RedisAddr) -> String {
    match redis {
        RedisAddr::Tcp(_) => format!("{}/{DB}", redis.url()),
        RedisAddr::Unix(_) => redis.url(),
    }
}

/// Where the log lines of the Redis link come from; at debug, each failed reconnect attempt is
/// logged too, so the test can tell a state change from a retry.
const LOG_FILTER: &str = "info,fastpm::hold::redis=debug";

/// The state-change lines of the broker's log (src/hold/redis.rs).
const SAID_CONNECTED: &str = "broker: connected to redis";
const SAID_LOST: &str = "broker: lost redis";
const SAID_UNREACHABLE: &str = "broker: cannot reach redis";
/// A reconnect attempt that failed again (debug).
const SAID_STILL_DOWN: &str = "broker: redis still down";

/// One fastpm instance: pool `lp` (longpoll, 2 worker processes) on `{dir}/lp.sock`, the
/// broker at `redis`, the master's listener on a port the kernel picks.
fn instance(redis: &RedisAddr) -> Server {
    let config = format!(
        r#"
[global]
status_listen = "127.0.0.1:0"
runtime_dir = "{{dir}}/run"
shutdown_timeout = "5s"
broker = "{broker}"

[pool.lp]
workers = "process"
max_children = 2

[pool.lp.listen]
address = "unix:{{dir}}/lp.sock"

[pool.lp.app]
kind = "longpoll"
"#,
        broker = broker(redis)
    );
    Launch::new(&config).env("RUST_LOG", LOG_FILTER).start()
}

/// The master's `broker connected`, checking it names the broker it was given.
fn broker_connected(server: &Server, redis: &RedisAddr) -> bool {
    let status = master_status(server.status_port());
    assert_eq!(status["broker"], broker(redis), "{status}");
    status["broker connected"]
        .as_bool()
        .unwrap_or_else(|| panic!("no `broker connected` in {status}"))
}

/// How long until both instances' status says `broker connected` is `want`.
fn until_connected(
    instances: [&Server; 2],
    redis: &RedisAddr,
    want: bool,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    wait_until(
        &format!("broker connected = {want} on A and B"),
        within,
        || instances.iter().all(|s| broker_connected(s, redis) == want),
    );
    start.elapsed()
}

/// `count` requests held on `server`'s channel, counted by its status.
fn hold(server: &Server, channel: &str, count: usize) -> Vec<UnixStream> {
    let subs: Vec<UnixStream> = (0..count)
        .map(|_| subscribe(server, channel, "", &[]))
        .collect();
    wait_until(&format!("{count} held"), Duration::from_secs(10), || {
        held(server) == count as u64
    });
    subs
}

/// Reads every held request's answer: `body` with `Message-Id: id`, once (the connection is
/// not kept, so the answer ends it). Returns the time from `start` to the last answer read
/// (an upper bound of when it arrived: they are read one after another).
fn all_answered(subs: Vec<UnixStream>, body: &str, id: u64, start: Instant) -> Duration {
    let count = subs.len();
    let mut subs = subs;
    for (n, s) in subs.iter_mut().enumerate() {
        let r = read_response(s)
            .unwrap_or_else(|| panic!("held request {n} of {count} closed without an answer"));
        assert_eq!(r.body(), body, "held request {n}: {}", r.text());
        assert_eq!(
            header(&r, "Message-Id"),
            Some(id.to_string()),
            "{}",
            r.text()
        );
    }
    let last = start.elapsed();
    for (n, s) in subs.iter_mut().enumerate() {
        assert!(
            read_response(s).is_none(),
            "held request {n} answered twice"
        );
    }
    last
}

/// The lines of `log` that contain `what`.
fn lines_saying(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

#[test]
fn a_publish_on_b_reaches_500_held_on_a_and_a_resume_on_either_gets_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let addr = RedisAddr::free_tcp();
    let _redis = RedisServer::start_at(dir.path(), &addr);
    let a = instance(&addr);
    let b = instance(&addr);
    let up = until_connected([&a, &b], &addr, true, Duration::from_secs(10));
    println!("redis instances: A and B connected to redis {up:?} after both were ready");

    // 1. A publish on B's pool reaches the 500 held on A (and the one held on B itself).
    let on_a = hold(&a, "room", 500);
    let mut on_b = hold(&b, "room", 1);
    let start = Instant::now();
    let answer = publish(&b, "room", "hello from B");
    let replied = start.elapsed();
    assert_eq!(status_line(&answer), "201 Created", "{}", answer.text());
    // Redis counts receivers per instance: A's and B's pub/sub links.
    assert_eq!(answer.body(), r#"{"id":1,"subscribers":2}"#);
    let took = all_answered(on_a, "hello from B", 1, start);
    println!(
        "redis instances: POST /pub/room on B answered in {replied:?}; the 500 held on A all \
         answered {took:?} after the publish"
    );
    assert!(
        took < Duration::from_millis(500),
        "500 answers took {took:?}"
    );
    let mine = read_response(&mut on_b[0]).expect("B's own subscriber answered");
    assert_eq!(mine.body(), "hello from B");
    let st = pool_status(&a);
    assert_eq!(st["messages delivered"], 500, "{st}");
    assert_eq!(st["held requests"], 0, "{st}");
    assert_eq!(pool_status(&b)["messages published"], 1);

    // ... and so does one through B's master (Pushpin's EPCP JSON).
    let on_a = hold(&a, "room", 500);
    let start = Instant::now();
    let answer = post_json(
        b.status_port(),
        "/publish/",
        epcp("room", "via B's master").as_bytes(),
    );
    let replied = start.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let published: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        published["published"][0],
        serde_json::json!({"channel": "room", "id": 2, "subscribers": 2})
    );
    let took = all_answered(on_a, "via B's master", 2, start);
    println!(
        "redis instances: POST /publish/ on B's master answered in {replied:?}; the 500 held on \
         A all answered {took:?} after the publish"
    );
    assert!(
        took < Duration::from_millis(500),
        "500 answers took {took:?}"
    );
    assert_eq!(pool_status(&a)["messages delivered"], 1000);

    // 2. A client held on A gets news/1 from B; news/2 is published (on A) while it is away;
    // it resumes on B with last_id=1 and gets news/2 at once, from Redis's history.
    let mut client = subscribe(&a, "news", "", &[]);
    wait_until("held on A", Duration::from_secs(5), || held(&a) == 1);
    publish(&b, "news", "n1");
    let r = read_response(&mut client).expect("n1");
    assert_eq!(
        (r.body().as_str(), header(&r, "Message-Id")),
        ("n1", Some("1".into()))
    );
    // Nobody is held on news, but with Redis `subscribers` counts the instances whose link
    // received it (src/hold/broker.rs `Published`): 201 all the same.
    let r = publish(&a, "news", "n2");
    assert_eq!(r.body(), r#"{"id":2,"subscribers":2}"#, "{}", r.text());
    for (server, query, headers, name) in [
        (&b, "last_id=1", vec![], "last_id on B"),
        (
            &a,
            "",
            vec![("HTTP_LAST_EVENT_ID", "1")],
            "Last-Event-ID on A",
        ),
    ] {
        let start = Instant::now();
        let mut resumed = subscribe(server, "news", query, &headers);
        let r = read_response(&mut resumed).expect("answered at once from history");
        println!(
            "redis instances: a resume by {name} answered in {:?}",
            start.elapsed()
        );
        assert_eq!(r.body(), "n2", "{name}: {}", r.text());
        assert_eq!(header(&r, "Message-Id").as_deref(), Some("2"), "{name}");
        assert_eq!(header(&r, "Messages-Lost"), None, "{name}");
    }
    // Up to date on B: held there until the next, published on A.
    let mut resumed = subscribe(&b, "news", "last_id=2", &[]);
    assert!(
        still_held(&mut resumed, Duration::from_millis(300)),
        "nothing after 2 yet"
    );
    publish(&a, "news", "n3");
    let r = read_response(&mut resumed).expect("n3 reaches B");
    assert_eq!(
        (r.body().as_str(), header(&r, "Message-Id")),
        ("n3", Some("3".into()))
    );
}

#[test]
fn redis_killed_and_restarted_keeps_requests_held_and_logs_each_change_once() {
    let dir = tempfile::tempdir().unwrap();
    // A unix socket: nothing else can take the address while Redis is away.
    let addr = RedisAddr::unix_in(dir.path());
    let redis = RedisServer::start_at(dir.path(), &addr);
    let a = instance(&addr);
    let b = instance(&addr);
    until_connected([&a, &b], &addr, true, Duration::from_secs(10));
    let mut on_a = hold(&a, "lobby", 200);
    publish(&b, "elsewhere", "before");

    // 3. Redis gone: what A holds stays held, status says so, publishes answer 503.
    redis.kill();
    let noticed = until_connected([&a, &b], &addr, false, Duration::from_secs(3));
    let pub_refused = publish(&b, "lobby", "lost");
    assert_eq!(
        status_line(&pub_refused)[..3],
        *"503",
        "{}",
        pub_refused.text()
    );
    assert!(
        header(&pub_refused, "Retry-After").is_some(),
        "{}",
        pub_refused.text()
    );
    let master_refused = post_json(
        b.status_port(),
        "/publish/",
        epcp("lobby", "lost").as_bytes(),
    );
    assert_eq!(master_refused.status, 503, "{}", master_refused.text());
    assert!(
        master_refused.header("Retry-After").is_some(),
        "{:?}",
        master_refused.headers
    );
    // Long enough for several reconnect attempts (100, 200, 400, 800 ms…) to fail.
    std::thread::sleep(Duration::from_millis(2000));
    assert!(!broker_connected(&a, &addr) && !broker_connected(&b, &addr));
    assert_eq!(held(&a), 200);
    for s in on_a.iter_mut() {
        assert!(
            still_held(s, Duration::from_millis(1)),
            "a held request ended while Redis was away"
        );
    }
    println!(
        "redis instances: Redis killed; A and B said `broker connected: false` within {noticed:?}"
    );

    // Back on the same socket: both reconnect (back-off), and a publish on B answers what A held.
    let redis = RedisServer::start_at(dir.path(), &addr);
    let back = until_connected([&a, &b], &addr, true, Duration::from_secs(10));
    assert_eq!(held(&a), 200);
    let start = Instant::now();
    let answer = publish(&b, "lobby", "back");
    assert_eq!(status_line(&answer), "201 Created", "{}", answer.text());
    // Redis kept nothing (no persistence): ids start again.
    let took = all_answered(on_a, "back", 1, start);
    println!(
        "redis instances: Redis restarted; A and B connected again within {back:?}; a publish \
         on B then answered the 200 still held on A in {took:?}"
    );

    // 4. Each master said each state change once: connected, lost, connected — however many
    // reconnect attempts failed in between (logged at debug only).
    for (name, server) in [("A", &a), ("B", &b)] {
        let log = server.log();
        let counts = [
            lines_saying(&log, SAID_CONNECTED),
            lines_saying(&log, SAID_LOST),
            lines_saying(&log, SAID_UNREACHABLE),
        ];
        let retries = lines_saying(&log, SAID_STILL_DOWN);
        println!("redis instances: {name}'s log: {counts:?} (connected, lost, unreachable); {retries} failed retries");
        assert_eq!(counts, [2, 1, 0], "{name}'s log:\n{log}");
        assert!(
            retries >= 2,
            "{name}: the test should have seen retries fail:\n{log}"
        );
    }
    drop(redis);
}
