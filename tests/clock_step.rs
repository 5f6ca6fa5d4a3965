//! A wall-clock step (NTP, `date -s`) must not look like a hung worker: liveness is measured on
//! the monotonic clock. The step is faked for fastpm alone with libfaketime (Debian's
//! `libfaketime`): the wall clock of the master and its workers jumps a minute ahead while
//! `CLOCK_MONOTONIC` runs on.

mod common;

use std::time::{Duration, Instant};

use common::{raw, Launch};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[test]
fn a_wall_clock_step_kills_no_worker() {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "this test needs {LIBFAKETIME}; install the test dependencies with scripts/deps.sh test"
    );
    let offset = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(offset.path(), "+0\n").unwrap();
    let server = Launch::new(
        r#"
[global]
status_listen = ""
runtime_dir = "{dir}/rt"

[pool.w]
workers = "process"
max_children = 2

[pool.w.listen]
address = "unix:{dir}/w.sock"

[pool.w.app]
kind = "hello"
"#,
    )
    .env("LD_PRELOAD", LIBFAKETIME)
    .env("FAKETIME_TIMESTAMP_FILE", offset.path().to_str().unwrap())
    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
    .env("FAKETIME_NO_CACHE", "1")
    .start();
    let addr = format!("unix:{}", server.path("w.sock").display());
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let pids = common::child_pids(server.pid());
        if pids.len() == 2 {
            break pids;
        }
        assert!(Instant::now() < deadline, "workers did not start: {pids:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(raw::get(&addr, "/", "").body().contains("Hello"));
    // The wall clock jumps 60 s ahead (more than every liveness limit but request_timeout).
    std::fs::write(offset.path(), "+60\n").unwrap();
    // The master looks every 50 ms; give it two seconds to (wrongly) act.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        common::child_pids(server.pid()),
        before,
        "workers were replaced after the clock step; log:\n{}",
        server.log()
    );
    assert!(
        !server.log().contains("no sign of life"),
        "{}",
        server.log()
    );
    assert!(raw::get(&addr, "/", "").body().contains("Hello"));
}
