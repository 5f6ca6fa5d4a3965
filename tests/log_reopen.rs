//! The master's log files as logrotate and php-fpm users expect them, through the real fastpm
//! binary and real clients (`cgi-fcgi`, php-cgi as the app):
//! - `mv` of the access and error logs, then `kill -USR1`: requests keep flowing the whole
//!   time and every answered request has exactly one line, in the old file or the new one; the
//!   new files are made by the master (root, 0600) although the workers run as www-data, and
//!   no worker restarts;
//! - `error_log` receives the master's lines and the workers';
//! - an application's 10 KB stderr line is cut to `log_limit`;
//! - `slowlog` names the script, the pool, the worker's pid and the duration.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::cgi_fcgi::{get_params, lines_of, request, wait_lines};
use common::{require, Launch, Server};

fn usr1(server: &Server) {
    kill(Pid::from_raw(server.pid()), Signal::SIGUSR1).unwrap();
}

/// Wait (up to 5 s) until `path` contains `text`; its content.
fn wait_text(path: &Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let content = std::fs::read_to_string(path).unwrap_or_default();
        if content.contains(text) || Instant::now() > deadline {
            return content;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn usr1_after_mv_loses_no_line_and_restarts_no_worker() {
    let server = Launch::new(
        r#"
[global]
status_listen = ""
runtime_dir = "{dir}/rt"
error_log = "{dir}/error.log"

[pool.p]
workers = "process"
max_children = 3
user = "www-data"
access_log = "{dir}/access.log"

[pool.p.listen]
address = "unix:{dir}/p.sock"

[pool.p.app]
kind = "sleep"
"#,
    )
    .error_log("error.log")
    .start();
    let access = server.path("access.log");
    let error = server.path("error.log");
    let workers_before = common::child_pids(server.pid());
    assert_eq!(workers_before.len(), 3, "{}", server.log());

    // Clients that keep sending requests through the whole rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, answered, sock) = (stop.clone(), answered.clone(), server.path("p.sock"));
            std::thread::spawn(move || {
                let params = get_params("/sleep?ms=3", "/sleep", "192.0.2.1");
                while !stop.load(Relaxed) {
                    if request(&sock, &params).is_some_and(|r| r.contains("slept 3 ms")) {
                        answered.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // logrotate: rename, then signal after a while (lines keep going to the renamed files).
    let (access_old, error_old) = (server.path("access.log.1"), server.path("error.log.1"));
    std::fs::rename(&access, &access_old).unwrap();
    std::fs::rename(&error, &error_old).unwrap();
    let at_rename = lines_of(&access_old).len();
    std::thread::sleep(Duration::from_millis(300));
    usr1(&server);
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let answered = answered.load(Relaxed);

    // Every answered request has its line: in the old file or the new, none twice.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (old, new) = loop {
        let (old, new) = (lines_of(&access_old).len(), lines_of(&access).len());
        if old + new >= answered || Instant::now() > deadline {
            break (old, new);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "answered {answered}; lines: {at_rename} at the rename, {old} in the old file, {new} in the new"
    );
    assert_eq!(old + new, answered, "old {old} + new {new} lines");
    assert!(
        old > at_rename,
        "lines written between mv and USR1 stay in the old file"
    );
    assert!(new > 0, "lines after USR1 go to the new file");
    for line in lines_of(&access_old).iter().chain(&lines_of(&access)) {
        assert!(
            line.starts_with("192.0.2.1 - - ") && line.contains("\"GET /sleep\" 200 "),
            "{line}"
        );
    }

    // The new files are the master's (root, 0600), not the workers' (www-data), as php-fpm's.
    for path in [&access, &error] {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            (meta.uid(), meta.mode() & 0o777),
            (0, 0o600),
            "{}",
            path.display()
        );
    }
    let www_data = nix::unistd::User::from_name("www-data")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    for pid in &workers_before {
        let uid = std::fs::metadata(format!("/proc/{pid}")).unwrap().uid();
        assert_eq!(uid, www_data, "worker {pid}");
    }
    // No worker was restarted to reopen (php-fpm restarts every child on USR1).
    assert_eq!(common::child_pids(server.pid()), workers_before);
    // The master's own lines follow the rename too.
    assert!(std::fs::read_to_string(&error_old)
        .unwrap()
        .contains("ready:"));
    let new_error = wait_text(&error, "SIGUSR1: reopened 2 log files");
    assert!(
        new_error.contains("SIGUSR1: reopened 2 log files"),
        "{new_error}"
    );
}

/// A php pool (worker processes) whose scripts write to stderr and sleep.
fn php_server(www: &Path) -> Server {
    let config = format!(
        r#"
[global]
status_listen = ""
runtime_dir = "{{dir}}/rt"
error_log = "{{dir}}/error.log"
log_limit = 200

[pool.p]
workers = "process"
max_children = 2
slow_request = "200ms"
slowlog = "{{dir}}/slow.log"

[pool.p.listen]
address = "unix:{{dir}}/p.sock"

[pool.p.app]
kind = "php"
php_cgi = "{php_cgi}"
document_root = "{www}"
"#,
        php_cgi = require("php-cgi").display(),
        www = www.display(),
    );
    Launch::new(&config).error_log("error.log").start()
}

fn php_site() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    for (name, code) in [
        // A 10 KB message through FastCGI STDERR, and 10 KB on php-cgi's own stderr.
        (
            "loud.php",
            "<?php error_log(str_repeat('x', 10240)); file_put_contents('php://stderr', str_repeat('y', 10240) . \"\\n\"); echo 'done';",
        ),
        ("slow.php", "<?php usleep(400000); echo 'late';"),
        ("quick.php", "<?php echo 'quick';"),
    ] {
        std::fs::write(www.join(name), code).unwrap();
    }
    (dir, www)
}

/// The longest run of `c` in `text`.
fn longest_run(text: &str, c: char) -> usize {
    text.split(|ch| ch != c).map(str::len).max().unwrap_or(0)
}

#[test]
fn error_log_gets_master_and_worker_lines_and_long_stderr_is_cut_to_log_limit() {
    let (_site, www) = php_site();
    let server = php_server(&www);
    let script = www.join("loud.php");
    let response = request(
        &server.path("p.sock"),
        &get_params("/loud.php", script.to_str().unwrap(), "192.0.2.2"),
    )
    .unwrap();
    assert!(response.ends_with("done"), "{response}");
    let log = server.path("error.log");
    // Two writers reach the file through the master, in either order: the worker's "php: x"
    // (FastCGI STDERR) and php-cgi's own "php-cgi: y". Wait for both.
    wait_text(&log, "php: x");
    let text = wait_text(&log, "php-cgi: y");
    // The master's lines are there, and nothing but the pointer to the file is on stderr.
    assert!(
        text.contains("ready:") && text.contains("listening on"),
        "{text}"
    );
    let stderr = std::fs::read_to_string(server.path("fastpm.log")).unwrap();
    assert_eq!(
        stderr.trim(),
        format!("fastpm: logging to {} (error_log)", log.display())
    );
    // The workers' lines came through the relay, each cut to log_limit (200) with "...".
    for (marker, c) in [("php: x", 'x'), ("php-cgi: y", 'y')] {
        let line = text
            .lines()
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("no {marker:?} line in:\n{text}"));
        let run = longest_run(line, c);
        assert_eq!(run, 197, "{marker}: 200 bytes = 197 + \"...\"");
        assert!(
            line.contains(&format!("{}...", c.to_string().repeat(197))),
            "{line}"
        );
        assert!(line.len() < 400, "{} bytes: {line}", line.len());
        println!("{marker}: a 10240-byte line logged as {} bytes", line.len());
    }
    assert!(longest_run(&text, 'x') <= 197 && longest_run(&text, 'y') <= 197);
}

#[test]
fn slowlog_names_the_script_pool_pid_and_duration() {
    let (_site, www) = php_site();
    let server = php_server(&www);
    let sock = server.path("p.sock");
    let quick = www.join("quick.php");
    let slow = www.join("slow.php");
    request(
        &sock,
        &get_params("/quick.php", quick.to_str().unwrap(), "192.0.2.3"),
    )
    .unwrap();
    let late = request(
        &sock,
        &get_params("/slow.php?n=1", slow.to_str().unwrap(), "192.0.2.3"),
    );
    assert!(late.unwrap().ends_with("late"));
    let lines = wait_lines(&server.path("slow.log"), 1);
    assert_eq!(lines.len(), 1, "only the slow request: {lines:?}");
    let line = &lines[0];
    let workers = common::child_pids(server.pid());
    let (_, rest) = line
        .split_once("] [pool p] pid ")
        .unwrap_or_else(|| panic!("{line}"));
    let (pid, rest) = rest.split_once(' ').unwrap();
    assert!(
        workers.contains(&pid.parse().unwrap()),
        "pid {pid} is a worker of {workers:?}"
    );
    let want = format!(
        "script_filename = {} request = \"GET /slow.php?n=1\" duration = 0.",
        slow.display()
    );
    assert!(rest.starts_with(&want), "{line}");
    let secs: f64 = rest
        .rsplit(" = ")
        .next()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!((0.4..2.0).contains(&secs), "{line}");
    // The error log says it too (php-fpm's "executing too slow" notice).
    let log = wait_text(&server.path("error.log"), "slow request");
    assert!(
        log.contains("slow request") && log.contains("slow.php"),
        "{log}"
    );
}
