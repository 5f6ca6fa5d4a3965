//! What fastpm's children may not keep: life after the master (a SIGKILLed master takes every
//! worker, exec program and php-cgi with it, also when they dropped to `user = "nobody"`), root
//! (a thread pool's php-cgi and CGI scripts run as the pool's user), and systemd's variables and
//! unclaimed sockets. Real fastpm, real php-cgi, real CGI scripts; the tests run as root.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{raw, require, Server, FASTPM};
use fastpm::sys::child::ChildSetup;

/// nobody's uid on Debian.
const NOBODY: u32 = 65534;

/// A document root every user can read: a world-readable temporary directory with `files`
/// (name, text, executable).
fn public_docroot(files: &[(&str, &str, bool)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, text, executable) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let mode = if *executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    dir
}

/// php: its uid, then the systemd variables it sees.
const ID_PHP: &str = r#"<?php
echo "uid=", posix_getuid(), "\n";
foreach (['NOTIFY_SOCKET', 'LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'] as $v) {
    echo $v, "=", var_export(getenv($v), true), "\n";
}
"#;

/// A CGI script: its uid, the systemd variables, and what its descriptors point to.
const ID_CGI: &str = r#"#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "uid=$(id -u)"
for v in NOTIFY_SOCKET LISTEN_PID LISTEN_FDS LISTEN_FDNAMES; do
    eval "echo $v=\${$v-unset}"
done
for f in /proc/$$/fd/*; do echo "fd ${f##*/} $(readlink "$f")"; done
"#;

/// The `[global]` section: no status listener, `runtime_dir` under `dir`.
fn global(dir: &str) -> String {
    format!("[global]\nstatus_listen = \"\"\nruntime_dir = \"{dir}/rt\"\n")
}

/// `user = "nobody"` in a pool section.
const NOBODY_USER: &str = "user = \"nobody\"";

/// A pool section's lines for thread workers, plus `more`.
fn thread_workers(more: &str) -> String {
    format!("workers = \"thread\"\n{more}")
}

/// A pool section's lines for worker processes, plus `more`.
fn process_workers(more: &str) -> String {
    format!("workers = \"process\"\n{more}")
}

/// An app section: `kind` serving the scripts in `docroot`.
fn serving(kind: &str, docroot: &Path) -> String {
    format!(
        "kind = \"{kind}\"\ndocument_root = \"{}\"",
        docroot.display()
    )
}

/// A one-worker pool listening on `unix:{dir}/NAME.sock` (`{dir}` is filled in by
/// `Server::start`), with `settings` in its section and `app` in its app section.
fn pool(name: &str, settings: &str, app: &str) -> String {
    format!(
        "\n[pool.{name}]\nmax_children = 1\n{settings}\n[pool.{name}.listen]\naddress = \"unix:{{dir}}/{name}.sock\"\n[pool.{name}.app]\n{app}\n"
    )
}

/// Pool `ex` (exec: `php_cgi`) and pool `hi` (hello, worker processes), both as nobody.
fn exec_and_hello_as_nobody(php_cgi: &Path) -> String {
    pool(
        "ex",
        NOBODY_USER,
        &format!("kind = \"exec\"\ncommand = [\"{}\"]", php_cgi.display()),
    ) + &pool("hi", &process_workers(NOBODY_USER), "kind = \"hello\"")
}

/// GET `script` (an absolute path, sent as SCRIPT_FILENAME) from the pool on unix socket `sock`.
fn get_body(sock: &Path, script: &Path) -> String {
    let r = raw::get(
        &format!("unix:{}", sock.display()),
        script.to_str().unwrap(),
        "",
    );
    r.body()
}

/// Every process below `pid`, as pids (`common::procs::descendants`).
fn descendants(pid: i32) -> Vec<i32> {
    common::procs::descendants(pid)
        .into_iter()
        .map(|p| p.pid)
        .collect()
}

use common::procs::alive;

/// The real uid of `pid` and its command name.
fn uid_and_name(pid: i32) -> (u32, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let uid = field("Uid:")
        .split_whitespace()
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX);
    (uid, field("Name:"))
}

/// Poll until `done` holds or `limit` passes; whether it held.
fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait until the master logging to `log` says it serves (or panic with the log).
fn wait_ready(child: &mut Child, log: &Path) {
    let text = || std::fs::read_to_string(log).unwrap_or_default();
    let ready = within(Duration::from_secs(15), || {
        text().contains("ready:") || matches!(child.try_wait(), Ok(Some(_)))
    });
    assert!(
        ready && text().contains("ready:"),
        "fastpm not ready; log:\n{}",
        text()
    );
}

/// Stop a master this test started itself (QUIT, then wait).
fn stop(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
    if !within(Duration::from_secs(5), || {
        matches!(child.try_wait(), Ok(Some(_)))
    }) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

#[test]
fn a_killed_master_takes_every_child_along_even_after_they_dropped_root() {
    let php_cgi = require("php-cgi");
    let docroot = public_docroot(&[("id.php", ID_PHP, false)]);
    let config = [
        global("{dir}"),
        exec_and_hello_as_nobody(&php_cgi),
        pool(
            "tp",
            &thread_workers(NOBODY_USER),
            &serving("php", docroot.path()),
        ),
    ]
    .concat();
    let mut server = Server::start(&config);
    let master = server.pid();
    assert!(get_body(&server.path("hi.sock"), Path::new("/")).contains("Hello"));
    let body = get_body(&server.path("tp.sock"), &docroot.path().join("id.php"));
    assert!(body.contains(&format!("uid={NOBODY}")), "{body}");

    // The exec program, the hello worker and the thread pool's php-cgi, all as nobody.
    let mut kids = Vec::new();
    let complete = within(Duration::from_secs(5), || {
        kids = descendants(master);
        let names: Vec<String> = kids.iter().map(|&p| uid_and_name(p).1).collect();
        let php = names.iter().filter(|n| n.starts_with("php-cgi")).count();
        php >= 2 && names.len() > php
    });
    assert!(complete, "children of the master: {kids:?}");
    for &pid in &kids {
        assert_eq!(
            uid_and_name(pid).0,
            NOBODY,
            "{:?} runs as",
            uid_and_name(pid)
        );
    }

    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let mut left = kids.clone();
    let all_gone = within(Duration::from_secs(1), || {
        left.retain(|&p| alive(p));
        left.is_empty()
    });
    let survivors: Vec<_> = left.iter().map(|&p| (p, uid_and_name(p))).collect();
    // Do not leave them behind for the other tests.
    for &pid in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        all_gone,
        "outlived the master by 1 s: {survivors:?}; log:\n{}",
        server.log()
    );

    // The same config starts again: nothing is left holding its sockets.
    let log = server.path("again.log");
    let mut again = Command::new(FASTPM)
        .arg("run")
        .arg("-c")
        .arg(server.path("fastpm.toml"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap())
        .spawn()
        .unwrap();
    wait_ready(&mut again, &log);
    assert!(get_body(&server.path("hi.sock"), Path::new("/")).contains("Hello"));
    stop(again);
}

#[test]
fn a_thread_pool_runs_php_cgi_and_cgi_scripts_as_its_user() {
    let docroot = public_docroot(&[("id.php", ID_PHP, false), ("id.cgi", ID_CGI, true)]);
    let config = [
        global("{dir}"),
        pool(
            "php",
            &thread_workers(NOBODY_USER),
            &serving("php", docroot.path()),
        ),
        pool(
            "cgi",
            &thread_workers(NOBODY_USER),
            &serving("cgi", docroot.path()),
        ),
    ]
    .concat();
    let server = Server::start(&config);
    let php = get_body(&server.path("php.sock"), &docroot.path().join("id.php"));
    assert!(php.starts_with(&format!("uid={NOBODY}\n")), "{php}");
    let cgi = get_body(&server.path("cgi.sock"), &docroot.path().join("id.cgi"));
    assert!(cgi.starts_with(&format!("uid={NOBODY}\n")), "{cgi}");
}

/// Start fastpm the way systemd does: the sockets at descriptors 3, 4, … and `LISTEN_PID` = its
/// own pid (bash sets it, then execs fastpm), with `NOTIFY_SOCKET` set.
fn start_activated(config: &Path, passed: &[&UnixListener], notify: &Path, log: &Path) -> Child {
    let fds: Vec<i32> = passed.iter().map(|l| l.as_raw_fd()).collect();
    // Move each inherited descriptor to 3, 4, …: first out of the way to 100, 101, … (one of
    // them may already sit at 3 or 4), then down (bash handles numbers above 9).
    let mut moves = String::new();
    for (i, fd) in fds.iter().enumerate() {
        moves.push_str(&format!("exec {}<&{fd} {fd}<&-; ", 100 + i));
    }
    for i in 0..fds.len() {
        moves.push_str(&format!("exec {}<&{} {}<&-; ", 3 + i, 100 + i, 100 + i));
    }
    let script = format!(
        "{moves}LISTEN_PID=$$ LISTEN_FDS={} LISTEN_FDNAMES=cg:spare NOTIFY_SOCKET={} exec \"$0\" run -c \"$1\"",
        fds.len(),
        notify.display()
    );
    let mut cmd = Command::new(require("bash"));
    cmd.arg("-c")
        .arg(script)
        .arg(FASTPM)
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::options().append(true).open(log).unwrap());
    ChildSetup::new().inherit(fds).apply(&mut cmd);
    cmd.spawn().unwrap()
}

#[test]
fn systemd_variables_and_unclaimed_sockets_do_not_reach_children() {
    let docroot = public_docroot(&[("id.php", ID_PHP, false), ("id.cgi", ID_CGI, true)]);
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| -> PathBuf { dir.path().join(name) };
    let claimed = UnixListener::bind(at("cg.sock")).unwrap();
    let spare = UnixListener::bind(at("spare.sock")).unwrap();
    let spare_inode = std::fs::metadata(format!("/proc/self/fd/{}", spare.as_raw_fd()))
        .unwrap()
        .ino();
    let notify = UnixDatagram::bind(at("notify.sock")).unwrap();
    let inherits = |kind: &str| format!("{}\nclear_env = false", serving(kind, docroot.path()));
    let mut config = [
        global("{dir}"),
        // Thread workers: the master starts the scripts itself.
        pool("cg", &thread_workers(""), &inherits("cgi")),
        // A worker process in between.
        pool("cp", &process_workers(""), &inherits("cgi")),
        pool("php", &thread_workers(""), &inherits("php")),
    ]
    .concat()
    .replace("{dir}", dir.path().to_str().unwrap());
    // The cgi thread pool listens on the socket systemd passes as "cg".
    config = config.replace(
        &format!("address = \"unix:{}/cg.sock\"", dir.path().display()),
        "address = \"systemd:cg\"",
    );
    std::fs::write(at("fastpm.toml"), config).unwrap();
    let log = at("fastpm.log");
    let mut master = start_activated(
        &at("fastpm.toml"),
        &[&claimed, &spare],
        &at("notify.sock"),
        &log,
    );
    wait_ready(&mut master, &log);
    let mut buf = [0u8; 256];
    notify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = notify.recv(&mut buf).expect("the master notified READY");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));

    let script = docroot.path().join("id.cgi");
    let leaked = |body: &str| {
        let vars = [
            "NOTIFY_SOCKET",
            "LISTEN_PID",
            "LISTEN_FDS",
            "LISTEN_FDNAMES",
        ];
        let mut found: Vec<String> = vars
            .iter()
            .filter(|v| {
                !body.contains(&format!("{v}=unset")) && !body.contains(&format!("{v}=false"))
            })
            .map(|v| v.to_string())
            .collect();
        if body.contains(&format!("socket:[{spare_inode}]")) {
            found.push(format!("the unclaimed socket (inode {spare_inode})"));
        }
        found
    };
    for (pool, sock) in [("cg", at("cg.sock")), ("cp", at("cp.sock"))] {
        let body = get_body(&sock, &script);
        assert!(body.contains("uid=0"), "{pool}: {body}");
        assert_eq!(leaked(&body), Vec::<String>::new(), "{pool}: {body}");
    }
    let body = get_body(&at("php.sock"), &docroot.path().join("id.php"));
    assert!(body.contains("uid=0"), "{body}");
    assert_eq!(leaked(&body), Vec::<String>::new(), "php: {body}");
    stop(master);
}

/// A CGI script: its session id and controlling terminal (fields 6 and 7 of its stat), and
/// whether it can open `/dev/tty`.
const TTY_CGI: &str = r#"#!/bin/sh
echo "Content-Type: text/plain"
echo
set -- $(cat /proc/$$/stat)
echo "sid=$6 tty_nr=$7"
if (: </dev/tty) 2>/dev/null; then echo "dev_tty=open"; else echo "dev_tty=none"; fi
"#;

/// `script` running fastpm on a pty; dropped (a failed assert included): fastpm gets QUIT, and
/// `script` is killed if it has not ended within 5 s.
struct OnTerminal(Child);

impl Drop for OnTerminal {
    fn drop(&mut self) {
        for master in common::child_pids(self.0.id() as i32) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(master),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
        if !within(Duration::from_secs(5), || {
            matches!(self.0.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Session id and controlling terminal (`tty_nr`, 0 for none) of `pid`, from its stat.
fn session_and_tty(pid: i32) -> (i64, i64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // "pid (comm) state ppid pgrp session tty_nr …": fields after the last ')'.
    let rest: Vec<i64> = stat
        .rsplit_once(')')
        .map(|(_, r)| {
            r.split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    (
        rest.get(2).copied().unwrap_or(-1),
        rest.get(3).copied().unwrap_or(-1),
    )
}

#[test]
fn children_stay_in_fastpms_session_and_cannot_reach_its_terminal() {
    // fastpm in the foreground on a terminal (a pty `script` makes), as root: every child —
    // worker processes, exec programs, php-cgi of both layouts, CGI scripts — runs as nobody,
    // stays in the master's session (one scheduling group under sched_autogroup, as php-fpm's
    // children) and has no controlling terminal (no TIOCSTI into root's shell).
    let php_cgi = require("php-cgi");
    let script = require("script");
    let docroot = public_docroot(&[("id.php", ID_PHP, false), ("tty.cgi", TTY_CGI, true)]);
    let dir = tempfile::tempdir().unwrap();
    let php = |layout: &str| {
        format!(
            "{}\nphp_children = \"{layout}\"",
            serving("php", docroot.path())
        )
    };
    let config = [
        global("{dir}"),
        exec_and_hello_as_nobody(&php_cgi),
        pool("pw", &thread_workers(NOBODY_USER), &php("per-worker")),
        pool("sh", &process_workers(NOBODY_USER), &php("shared")),
        pool(
            "cg",
            &thread_workers(NOBODY_USER),
            &serving("cgi", docroot.path()),
        ),
    ]
    .concat()
    .replace("{dir}", dir.path().to_str().unwrap());
    let conf = dir.path().join("fastpm.toml");
    std::fs::write(&conf, config).unwrap();
    let log = dir.path().join("script.log");
    let term = OnTerminal(
        Command::new(script)
            .arg("-qefc")
            .arg(format!("exec {FASTPM} run -c {}", conf.display()))
            .arg("/dev/null")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sock = |name: &str| dir.path().join(format!("{name}.sock"));
    let served = within(Duration::from_secs(15), || {
        sock("cg").exists()
            && std::os::unix::net::UnixStream::connect(sock("hi")).is_ok()
            && get_body(&sock("hi"), Path::new("/")).contains("Hello")
    });
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(served, "fastpm did not serve; its terminal:\n{}", text());
    let master = common::child_pids(term.0.id() as i32)[0];
    let (sid, tty) = session_and_tty(master);
    assert_ne!(tty, 0, "the test gave fastpm no terminal");

    let id = get_body(&sock("sh"), &docroot.path().join("id.php"));
    assert!(id.starts_with(&format!("uid={NOBODY}\n")), "{id}");
    let id = get_body(&sock("pw"), &docroot.path().join("id.php"));
    assert!(id.starts_with(&format!("uid={NOBODY}\n")), "{id}");
    let cgi = get_body(&sock("cg"), &docroot.path().join("tty.cgi"));
    assert!(
        cgi.contains(&format!("sid={sid} tty_nr=0\n")) && cgi.contains("dev_tty=none"),
        "a CGI script (master: session {sid}, terminal {tty}): {cgi}"
    );
    // exec's php-cgi, the hello worker, the per-worker php-cgi, the shared pool's worker and
    // its php-cgi parent with its child.
    let mut kids = Vec::new();
    let complete = within(Duration::from_secs(5), || {
        kids = descendants(master);
        let names: Vec<String> = kids.iter().map(|&p| uid_and_name(p).1).collect();
        names.iter().filter(|n| n.starts_with("php-cgi")).count() >= 4 && names.len() >= 6
    });
    let seen: Vec<_> = kids
        .iter()
        .map(|&p| (p, uid_and_name(p).1, session_and_tty(p)))
        .collect();
    drop(term);
    assert!(complete, "children of the master: {seen:?}");
    for (pid, name, (child_sid, child_tty)) in &seen {
        assert_eq!(
            (*child_sid, *child_tty),
            (sid, 0),
            "{pid} {name}: (session, terminal); the master's session is {sid}"
        );
    }
}
