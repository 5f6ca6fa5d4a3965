//! The master speaks sd_notify when systemd asks for it (`Type=notify`): `READY=1` once every
//! pool serves, `STOPPING=1` when it stops — read from a real unix datagram socket.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{raw, Launch};

#[test]
fn master_notifies_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&sock_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut server = Launch::new(
        r#"
[global]
status_listen = ""
runtime_dir = "{dir}/rt"

[pool.n]
workers = "process"
max_children = 1

[pool.n.listen]
address = "unix:{dir}/n.sock"

[pool.n.app]
kind = "hello"
"#,
    )
    .env("NOTIFY_SOCKET", sock_path.to_str().unwrap())
    .start();
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("a notification");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", server.pid())),
        "{ready}"
    );
    // It really serves by then, and its workers did not notify (their environment is cleaned).
    let r = raw::get(
        &format!("unix:{}", server.path("n.sock").display()),
        "/",
        "",
    );
    assert!(r.body().contains("Hello"));
    let status = server.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    assert!(status.success());
    let n = notify.recv(&mut buf).expect("the stopping notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}
