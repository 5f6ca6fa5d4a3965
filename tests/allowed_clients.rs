//! `allowed_clients` on a TCP pool: a peer that is not listed is closed without an answer and
//! counted in `rejected conn`; a listed peer is served.

mod common;

use std::io::{Read, Write};

use common::raw;
use common::{master_status, Server};

fn config(pool_port: u16, status_port: u16, allowed: &str) -> String {
    format!(
        r#"
[global]
status_listen = "127.0.0.1:{status_port}"
runtime_dir = "{{dir}}/rt"

[pool.a]
workers = "thread"
max_children = 2

[pool.a.listen]
address = "127.0.0.1:{pool_port}"
allowed_clients = [{allowed}]

[pool.a.app]
kind = "hello"
"#
    )
}

#[test]
fn unlisted_peers_are_refused_and_counted() {
    let server = Server::start(&config(0, 0, "\"192.0.2.1\""));
    let (pool_port, status_port) = (server.pool_port("a"), server.status_port());
    let mut c = raw::connect(&format!("127.0.0.1:{pool_port}"));
    c.write_all(&raw::request("/hello", "", b"", false))
        .unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "refused peer got {:?}",
        String::from_utf8_lossy(&rest)
    );
    let pool = &master_status(status_port)["pools"][0];
    assert_eq!(pool["rejected conn"], 1, "{pool}");
    assert_eq!(pool["accepted conn"], 0, "{pool}");
    assert!(server.log().contains("allowed_clients"), "{}", server.log());
}

#[test]
fn listed_peers_are_served() {
    let server = Server::start(&config(0, 0, "\"192.0.2.1\", \"127.0.0.1\""));
    let (pool_port, status_port) = (server.pool_port("a"), server.status_port());
    let r = raw::get(&format!("127.0.0.1:{pool_port}"), "/hello", "");
    assert!(r.body().contains("Hello from fastpm pool a"));
    assert_eq!(master_status(status_port)["pools"][0]["rejected conn"], 0);
}
