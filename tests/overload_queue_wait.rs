//! Queue wait measured without client help (DESIGN.md §4), end to end: one worker, a `sleep`
//! app answering in 100 ms, five closed-loop clients on a unix socket for ~3 s. Every request
//! (after the first round) waits behind the four others: ~400 ms in the kernel queue. The
//! status page's `queue wait p50 ms` must be within 25% of that, and `/metrics` must carry the
//! histogram.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::raw;
use common::{http_get, master_status, Server};

fn config(status_port: u16) -> String {
    format!(
        r#"
[global]
status_listen = "127.0.0.1:{status_port}"
runtime_dir = "{{dir}}/rt"

[pool.w]
workers = "thread"
max_children = 1

[pool.w.listen]
address = "unix:{{dir}}/w.sock"

[pool.w.app]
kind = "sleep"
"#
    )
}

#[test]
fn unix_queue_wait_p50_matches_the_true_wait() {
    let server = Server::start(&config(0));
    let port = server.status_port();
    let addr = format!("unix:{}", server.path("w.sock").display());

    // Nothing measured yet: the figures are null, not 0.
    let before = master_status(port);
    assert!(
        before["pools"][0]["queue wait p50 ms"].is_null(),
        "{before}"
    );

    let until = Instant::now() + Duration::from_secs(3);
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut done = 0u32;
                while Instant::now() < until {
                    let mut c = raw::connect(&addr);
                    c.write_all(&raw::request("/sleep", "ms=100", b"", false))
                        .unwrap();
                    let r = raw::read_response(&mut *c).expect("a response");
                    assert!(r.text().contains("slept 100 ms"), "{}", r.text());
                    done += 1;
                }
                done
            })
        })
        .collect();
    let done: u32 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(
        (20..=40).contains(&done),
        "{done} requests in 3 s with one 100 ms worker"
    );

    let status = master_status(port);
    let pool = &status["pools"][0];
    let p50 = pool["queue wait p50 ms"].as_f64().expect("p50 known");
    let p99 = pool["queue wait p99 ms"].as_f64().expect("p99 known");
    let max = pool["queue wait max ms"].as_f64().expect("max known");
    eprintln!("{done} requests: queue wait p50 {p50} ms, p99 {p99} ms, max {max} ms");
    // Four requests of 100 ms ahead of each one: 400 ms (a little more with the overheads).
    assert!(
        (300.0..=500.0).contains(&p50),
        "p50 {p50} ms, want 400 ± 25%: {pool}"
    );
    assert!(p50 <= p99 && p99 <= max, "{pool}");
    assert!(
        max < 600.0,
        "nothing waits for more than five requests: {pool}"
    );

    let (code, metrics) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("# TYPE fastpm_queue_wait_seconds histogram"),
        "{metrics}"
    );
    let count_line = metrics
        .lines()
        .find(|l| l.starts_with("fastpm_queue_wait_seconds_count{pool=\"w\"}"))
        .expect("a _count sample");
    let count: u64 = count_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= u64::from(done), "{count_line} for {done} requests");
    let inf = format!("fastpm_queue_wait_seconds_bucket{{le=\"+Inf\",pool=\"w\"}} {count}");
    assert!(metrics.contains(&inf), "{metrics}");
    // Most waits are between 0.2 s and 0.4096 s: the 0.2048 s bucket holds few, 0.4096 most.
    let bucket = |le: &str| -> u64 {
        let prefix = format!("fastpm_queue_wait_seconds_bucket{{le=\"{le}\",pool=\"w\"}} ");
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{prefix}"));
        line[prefix.len()..].parse().unwrap()
    };
    assert!(bucket("0.2048") * 2 < count, "{metrics}");
    assert!(bucket("0.8192") == count, "{metrics}");
    drop(server);
}
