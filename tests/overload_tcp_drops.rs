//! A TCP pool with backlog 8 and one slow worker, hit by 100 clients connecting the way nginx
//! does (non-blocking `connect()`): the kernel drops what does not fit, the status page shows
//! those `listen drops`, and `rejected conn` counts them.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};

use common::raw;
use common::{master_status, Server};

/// A non-blocking connect, as nginx issues it: `EINPROGRESS` is the normal answer on TCP.
fn connect_nonblocking(addr: SocketAddr) -> OwnedFd {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let SocketAddr::V4(v4) = addr else {
        unreachable!("loopback v4")
    };
    match connect(fd.as_raw_fd(), &SockaddrIn::from(v4)) {
        Ok(()) | Err(Errno::EINPROGRESS) | Err(Errno::EAGAIN) => fd,
        Err(e) => panic!("connect: {e}"),
    }
}

#[test]
fn tcp_backlog_8_drops_are_counted_as_rejected() {
    let server = Server::start(
        r#"
[global]
status_listen = "127.0.0.1:0"
runtime_dir = "{dir}/rt"

[pool.d]
workers = "thread"
max_children = 1

[pool.d.listen]
address = "127.0.0.1:0"
backlog = 8

[pool.d.app]
kind = "sleep"
"#,
    );
    let (status_port, pool_port) = (server.status_port(), server.pool_port("d"));
    let addr: SocketAddr = format!("127.0.0.1:{pool_port}").parse().unwrap();
    // The one worker sleeps 3 s on the first request.
    let mut busy = raw::connect(&addr.to_string());
    busy.write_all(&raw::request("/sleep", "ms=3000", b"", false))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let clients: Vec<OwnedFd> = (0..100).map(|_| connect_nonblocking(addr)).collect();
    // Let the SYN retransmissions (1 s) add to the drops, and the sampler read them.
    std::thread::sleep(Duration::from_millis(1200));
    let pool = &master_status(status_port)["pools"][0];
    drop(clients);
    let drops = pool["listen drops"].as_u64().expect("TCP drops are known");
    assert!(drops > 0, "{pool}");
    assert_eq!(pool["listen queue len"], 8, "{pool}");
    assert_eq!(pool["max listen queue"], 9, "backlog + 1 fit: {pool}");
    assert!(pool["queue full samples"].as_u64().unwrap() > 0, "{pool}");
    let rejected = pool["rejected conn"].as_u64().unwrap();
    assert_eq!(
        rejected,
        drops + pool["shed requests"].as_u64().unwrap(),
        "{pool}"
    );
    eprintln!("100 clients on backlog 8: listen drops {drops}, rejected conn {rejected}");
    drop(server);
}
