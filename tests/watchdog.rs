//! `request_timeout` in worker processes: the watchdog answers 504 on the timed-out request's
//! own id (not a guessed 1), and the worker is replaced.

mod common;

use std::io::Write;

use common::{raw, Server};

#[test]
fn the_504_carries_the_request_s_own_id() {
    let server = Server::start(
        r#"
[global]
status_listen = ""
runtime_dir = "{dir}/rt"

[pool.w]
workers = "process"
max_children = 1
request_timeout = "1s"

[pool.w.listen]
address = "unix:{dir}/w.sock"

[pool.w.app]
kind = "sleep"
"#,
    );
    let addr = format!("unix:{}", server.path("w.sock").display());
    let mut conn = raw::connect(&addr);
    conn.write_all(&raw::request_with_id(7, "/sleep", "ms=5000", b"", false))
        .unwrap();
    let mut records = Vec::new();
    while let Some(record) = raw::read_record(&mut *conn) {
        let end = record.rtype == raw::END_REQUEST;
        records.push(record);
        if end {
            break;
        }
    }
    let stdout: Vec<u8> = records
        .iter()
        .filter(|r| r.rtype == raw::STDOUT)
        .flat_map(|r| r.content.clone())
        .collect();
    let text = String::from_utf8_lossy(&stdout);
    assert!(text.starts_with("Status: 504"), "{text:?}");
    let ids: Vec<u16> = records.iter().map(|r| r.id).collect();
    assert!(
        records.iter().any(|r| r.rtype == raw::END_REQUEST) && ids.iter().all(|&id| id == 7),
        "every record of the answer must carry id 7: {records:?}"
    );
    // The replacement worker serves the next request.
    let response = raw::get(&addr, "/sleep", "ms=10");
    assert!(
        response.body().contains("slept 10 ms"),
        "{}",
        response.text()
    );
}
