//! `max_params` and `max_body` (php.ini-style sizes) reach the workers: a request over either
//! is answered 431/413 naming the key to change, and one under them is served.

mod common;

use std::io::Write;

use common::{raw, Server};

#[test]
fn configured_limits_are_enforced_and_named() {
    let server = Server::start(
        r#"
[global]
status_listen = ""
runtime_dir = "{dir}/rt"

[pool.l]
workers = "thread"
max_children = 1
max_params = "1K"
max_body = "2K"

[pool.l.listen]
address = "unix:{dir}/l.sock"

[pool.l.app]
kind = "echo"
"#,
    );
    let addr = format!("unix:{}", server.path("l.sock").display());
    let send = |request: Vec<u8>| {
        let mut conn = raw::connect(&addr);
        conn.write_all(&request).unwrap();
        raw::read_response(&mut *conn).expect("an answer").text()
    };
    let ok = send(raw::request("/e", "", &[b'x'; 2048], false));
    assert!(ok.contains("xxxx"), "{ok}");
    let big_body = send(raw::request("/e", "", &[b'x'; 2049], false));
    assert!(
        big_body.starts_with("Status: 413") && big_body.contains("max_body = 2048"),
        "{big_body}"
    );
    let long_query = "q=".to_string() + &"y".repeat(1100);
    let big_params = send(raw::request("/e", &long_query, b"", false));
    assert!(
        big_params.starts_with("Status: 431") && big_params.contains("max_params = 1024"),
        "{big_params}"
    );
}
