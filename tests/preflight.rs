//! `fastpm check` refuses everything `fastpm run` would refuse from the config alone (an
//! unknown user, a php-cgi that is not there, an exec program that does not exist), both
//! with exit 2 and the pool named; and a pool's own
//! status/ping paths are off unless configured (php-fpm's defaults), while the master's
//! listener keeps its /status.

mod common;

use std::process::Command;

use common::{raw, Server, FASTPM};

/// `fastpm ARGS -c CONFIG` with `config` written into a temp dir; its output.
fn fastpm_on(sub: &str, config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fastpm.toml");
    std::fs::write(&path, config.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let mut cmd = Command::new(FASTPM);
    cmd.arg(sub).arg("-c").arg(&path).env_remove("LISTENQ");
    // `run` on a config it accepts would keep running: bound it (a refusal exits at once).
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn pool(app: &str, extra: &str) -> String {
    format!(
        r#"
[global]
status_listen = ""
runtime_dir = "{{dir}}/rt"

[pool.p]
workers = "thread"
max_children = 1
{extra}

[pool.p.listen]
address = "unix:{{dir}}/p.sock"

[pool.p.app]
{app}
"#
    )
}

#[test]
fn check_and_run_refuse_what_the_machine_cannot_run_with_exit_2() {
    let cases = [
        (
            pool("kind = \"hello\"", "user = \"no-such-user-fastpm\""),
            "no user named \"no-such-user-fastpm\"",
        ),
        (
            pool(
                "kind = \"php\"\nphp_cgi = \"/nonexistent/php-cgi\"\ndocument_root = \"{dir}\"",
                "",
            ),
            "/nonexistent/php-cgi",
        ),
        (
            pool("kind = \"exec\"\ncommand = [\"no-such-fcgi-program\"]", ""),
            "\"no-such-fcgi-program\" is not an executable",
        ),
    ];
    for (config, want) in cases {
        for sub in ["check", "run"] {
            let out = fastpm_on(sub, &config);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "fastpm {sub} should refuse with exit 2:\n{config}\nstderr: {stderr}"
            );
            assert!(
                stderr.contains(want),
                "fastpm {sub}: {stderr:?} lacks {want:?}"
            );
            assert!(
                stderr.contains("pool p"),
                "fastpm {sub}: {stderr:?} names no pool"
            );
        }
    }
}

#[test]
fn check_accepts_what_run_runs() {
    let out = fastpm_on("check", &pool("kind = \"hello\"", "user = \"nobody\""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pool_status_and_ping_are_off_unless_configured() {
    let server = Server::start(
        r#"
[global]
status_listen = "127.0.0.1:0"
runtime_dir = "{dir}/rt"

[pool.p]
workers = "thread"
max_children = 1

[pool.p.listen]
address = "unix:{dir}/p.sock"

[pool.p.app]
kind = "echo"
"#,
    );
    let port = server.status_port();
    let addr = format!("unix:{}", server.path("p.sock").display());
    // The app answers these paths like any other: the pool reveals nothing itself.
    for path in ["/status", "/ping"] {
        let response = raw::get(&addr, path, "full&json");
        let body = response.text();
        assert!(
            !body.contains("accepted conn") && !body.contains("pong"),
            "{path} answered by the pool itself: {body}"
        );
    }
    // The master's listener still shows the pool.
    let status = common::master_status(port);
    assert_eq!(status["pools"][0]["pool"], "p", "{status}");
}
