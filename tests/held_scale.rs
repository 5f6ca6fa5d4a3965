//! Held requests at scale — issue 10's done-when line as a test that fails when a figure is
//! missed: 10,000 subscribers held on one channel of a `longpoll` pool with 2 worker processes
//! (unix socket), and
//! (a) the PSS of master + workers grows by ≤ 2 KB per held request between "0 held" and
//!     "10,000 held" (after a warm-up round of 1,000 held and answered, so allocator growth that
//!     is not per request is not counted);
//! (b) the pool's ping p99 ≤ 5 ms over 200 pings spaced while they wait;
//! (c) one publish answers all 10,000 within 250 ms of sending it (1 s in a debug build, see
//!     `MAX_PUBLISH_TO_LAST`): each connection gets exactly one response with the published
//!     body, then is closed.
//! The figures are printed (`--nocapture`) before the verdict, so a miss shows all of them,
//! with the load average: (b) and (c) are wall-clock times on a 2-core box and assume it is not
//! busy with other jobs (under a load of 20 the ping's p99 is hundreds of milliseconds whatever
//! fastpm does). `cargo test --release --test held_scale` measures the build users run.
//! The client side (epoll threads holding the connections) is `benches/held/client.rs`, shared
//! with the experiment (`cargo bench --bench held`).

mod common;
#[path = "../benches/held/client.rs"]
mod held_client;

use std::time::Duration;

use common::Server;
use held_client::{
    check_answers, held_requests, load_average, open_batch, percentile, pings, publish,
    raise_nofile, subscribe_request, tree_pss_kib, wait_for,
};

const HELD: usize = 10_000;
const WARM_UP: usize = 1_000;
const MAX_BYTES_PER_HELD: f64 = 2048.0;
const MAX_PING_P99: Duration = Duration::from_millis(5);
/// Issue 10's line, for the build users run (`--release`). The debug build `scripts/test.sh`
/// runs (fastpm and this test's epoll client both unoptimised) took 243–285 ms on a quiet
/// 2-core box (2026-12-02, five runs, load 1.2–1.6) and 536 ms beside a compile: there the
/// bound only catches a fan-out gone wrong by a multiple (one that answers in turn, or waits
/// for the closes), and the figure itself is the benchmark's (`cargo bench --bench held`).
const MAX_PUBLISH_TO_LAST: Duration = if cfg!(debug_assertions) {
    Duration::from_millis(1000)
} else {
    Duration::from_millis(250)
};

const CONFIG: &str = r#"
[global]
status_listen = "127.0.0.1:0"
runtime_dir = "{dir}/run"

[pool.lp]
workers = "process"
pm = "static"
max_children = 2
ping_path = "/ping"

[pool.lp.listen]
address = "unix:{dir}/lp.sock"

[pool.lp.app]
kind = "longpoll"
hold_timeout = "600s"
"#;

fn held(server: &Server) -> u64 {
    held_requests(server, "lp")
}

#[test]
fn ten_thousand_held_cost_under_2kb_each_ping_stays_fast_one_publish_answers_all() {
    // 10,000 client ends here, a few for pings and status; fastpm raises its own limit.
    let nofile = raise_nofile(0);
    assert!(
        nofile >= HELD as u64 + 500,
        "this test needs {} descriptors; the hard RLIMIT_NOFILE allows {nofile} (raise it: ulimit -Hn)",
        HELD + 500
    );
    let load_before = load_average();
    let server = Server::start(CONFIG);
    let socket = server.path("lp.sock");
    let master = server.pid();

    // Warm-up: 1,000 held and answered, so the allocators' one-off growth is behind us.
    let warm = open_batch(&socket, &subscribe_request("warm"), WARM_UP).unwrap();
    wait_for("1,000 held", Duration::from_secs(30), || {
        held(&server) == WARM_UP as u64
    })
    .unwrap();
    let sent = publish(&socket, "warm", "warm", WARM_UP).unwrap();
    let answers = warm.finish(Duration::from_secs(10)).unwrap();
    check_answers(&answers, "warm", sent).unwrap();
    wait_for("0 held", Duration::from_secs(5), || held(&server) == 0).unwrap();
    let workers = common::child_pids(master);
    assert_eq!(workers.len(), 2, "2 worker processes: {workers:?}");
    std::thread::sleep(Duration::from_millis(200));
    let pss_empty = tree_pss_kib(master).unwrap();

    // 10,000 held on one channel.
    let start = std::time::Instant::now();
    let room = open_batch(&socket, &subscribe_request("room"), HELD).unwrap();
    let connected = start.elapsed();
    wait_for("10,000 held", Duration::from_secs(60), || {
        held(&server) == HELD as u64
    })
    .unwrap();
    let all_held = start.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let pss_held = tree_pss_kib(master).unwrap();
    let per_held = (pss_held as f64 - pss_empty as f64) * 1024.0 / HELD as f64;
    println!(
        "held: {HELD} connected in {connected:.2?}, all held after {all_held:.2?}; \
         PSS master+workers {pss_empty} KiB → {pss_held} KiB: {per_held:.0} bytes per held request"
    );
    assert_eq!(
        common::child_pids(master),
        workers,
        "the workers were replaced"
    );

    // The pool's ping while they wait.
    let times = pings(&socket, 200, Duration::from_millis(10)).unwrap();
    let (p50, p99, max) = (
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        percentile(&times, 100.0),
    );
    println!("ping while {HELD} held: p50 {p50:.2?} p99 {p99:.2?} max {max:.2?} (200 pings)");
    assert_eq!(room.answered(), 0, "answered before any publish");
    assert_eq!(room.ended(), 0, "closed before any publish");
    assert_eq!(held(&server), HELD as u64);

    // One publish answers all of them, once each.
    let sent = publish(&socket, "room", "to everyone in the room", HELD).unwrap();
    let answers = room.finish(Duration::from_secs(30)).unwrap();
    let last = check_answers(&answers, "to everyone in the room", sent).unwrap();
    println!("publish → last of {HELD} answered: {last:.2?}");
    wait_for("0 held", Duration::from_secs(5), || held(&server) == 0).unwrap();
    println!(
        "load average: {load_before} before, {} after",
        load_average()
    );

    assert!(
        per_held <= MAX_BYTES_PER_HELD,
        "{per_held:.0} bytes per held request (> {MAX_BYTES_PER_HELD})"
    );
    assert!(
        p99 <= MAX_PING_P99,
        "ping p99 {p99:?} while held (> {MAX_PING_P99:?})"
    );
    assert!(
        last <= MAX_PUBLISH_TO_LAST,
        "publish → last answer {last:?} (> {MAX_PUBLISH_TO_LAST:?})"
    );
}
