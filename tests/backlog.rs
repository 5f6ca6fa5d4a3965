//! The listen backlog end to end: its precedence (`--backlog` > `LISTENQ` > config > 511) as the
//! kernel holds it (`ss -ln` Send-Q) and as the status page reports it, and the warning when
//! `net.core.somaxconn` clamps it (in a private network namespace whose somaxconn is 128).

mod common;

use common::raw::status_json;
use common::{ss_listen, Launch, Server};

const UNIX_POOL: &str = r#"
[global]
status_listen = ""
runtime_dir = "{dir}/rt"

[pool.t]
workers = "thread"
max_children = 2
status_path = "/status"

[pool.t.listen]
address = "unix:{dir}/t.sock"

[pool.t.app]
kind = "hello"
"#;

fn check_backlog(server: &Server, want: u64) {
    let sock = server.path("t.sock");
    let addr = format!("unix:{}", sock.display());
    let ss = ss_listen(sock.to_str().unwrap(), true).expect("ss -lnx lists the pool's socket");
    assert_eq!(ss.send_q, want, "ss -lnx Send-Q");
    let status = status_json(&addr);
    assert_eq!(status["listen queue len"], want, "status: {status}");
    assert_eq!(status["listen backlog"], want, "status: {status}");
}

#[test]
fn default_backlog_is_511() {
    let server = Server::start(UNIX_POOL);
    check_backlog(&server, 511);
}

#[test]
fn listenq_env_overrides_the_default() {
    let server = Launch::new(UNIX_POOL).env("LISTENQ", "1000").start();
    check_backlog(&server, 1000);
}

#[test]
fn cli_backlog_overrides_listenq() {
    let server = Launch::new(UNIX_POOL)
        .env("LISTENQ", "1000")
        .arg("--backlog")
        .arg("2000")
        .start();
    check_backlog(&server, 2000);
}

#[test]
fn config_backlog_is_used_when_nothing_overrides_it() {
    let config = UNIX_POOL.replace(
        "address = \"unix:{dir}/t.sock\"",
        "address = \"unix:{dir}/t.sock\"\nbacklog = 300",
    );
    let server = Server::start(&config);
    check_backlog(&server, 300);
}

#[test]
fn somaxconn_clamp_is_warned_and_shown() {
    let server = Launch::new(UNIX_POOL).netns_somaxconn(128).start();
    let log = server.log();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("somaxconn"))
        .unwrap_or_else(|| panic!("no somaxconn warning in the log:\n{log}"));
    assert!(
        warning.contains("511") && warning.contains("128"),
        "{warning}"
    );
    assert!(
        warning.contains("sysctl"),
        "the warning names the fix: {warning}"
    );
    let status = status_json(&format!("unix:{}", server.path("t.sock").display()));
    assert_eq!(status["listen queue len"], 128, "{status}");
    assert_eq!(status["listen backlog"], 511, "{status}");
    assert_eq!(status["somaxconn"], 128, "{status}");
}

#[test]
fn no_warning_when_the_backlog_fits() {
    let server = Launch::new(UNIX_POOL).netns_somaxconn(1024).start();
    assert!(
        !server.log().contains("clamped"),
        "unexpected clamp warning:\n{}",
        server.log()
    );
}
