//! On TCP the queue-wait accounting (sampler arrivals + accept sequence numbers) is cross-checked
//! against the kernel's own measure, `tcpi_last_data_recv` of the accepted socket: one worker,
//! 100 ms requests, five closed-loop clients → both say ~400 ms, and they agree with each other.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::raw;
use common::{master_status, Server};

#[test]
fn tcp_queue_wait_agrees_with_tcp_info() {
    let server = Server::start(
        r#"
[global]
status_listen = "127.0.0.1:0"
runtime_dir = "{dir}/rt"

[pool.w]
workers = "thread"
max_children = 1

[pool.w.listen]
address = "127.0.0.1:0"

[pool.w.app]
kind = "sleep"
"#,
    );
    let (port, pool_port) = (server.status_port(), server.pool_port("w"));
    let unix_like_null = &master_status(port)["pools"][0]["tcp_info wait p50 ms"];
    assert!(unix_like_null.is_null(), "nothing measured yet");
    let addr = format!("127.0.0.1:{pool_port}");
    let until = Instant::now() + Duration::from_secs(3);
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                while Instant::now() < until {
                    let mut c = raw::connect(&addr);
                    c.write_all(&raw::request("/sleep", "ms=100", b"", false))
                        .unwrap();
                    raw::read_response(&mut *c).expect("a response");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let status = master_status(port);
    let pool = &status["pools"][0];
    let ours = pool["queue wait p50 ms"].as_f64().expect("accounting p50");
    let kernel = pool["tcp_info wait p50 ms"].as_f64().expect("TCP_INFO p50");
    let (ours_max, kernel_max) = (
        pool["queue wait max ms"].as_f64().unwrap(),
        pool["tcp_info wait max ms"].as_f64().unwrap(),
    );
    eprintln!("queue wait p50/max: accounting {ours}/{ours_max} ms, tcpi_last_data_recv {kernel}/{kernel_max} ms");
    assert!(
        (ours_max - kernel_max).abs() <= 0.25 * kernel_max,
        "max: accounting {ours_max} ms, TCP_INFO {kernel_max} ms; log:\n{}",
        server.log()
    );
    for (what, v) in [("accounting", ours), ("TCP_INFO", kernel)] {
        assert!(
            (300.0..=500.0).contains(&v),
            "{what} p50 {v} ms, expected ~400"
        );
    }
    assert!(
        (ours - kernel).abs() <= 0.25 * kernel,
        "accounting {ours} ms and TCP_INFO {kernel} ms disagree by more than 25%"
    );
}
