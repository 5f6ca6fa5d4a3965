//! HUP as an operator meets it: a reload is checked whole before anything changes (a bad pool
//! leaves every pool as it was), the backlog it sets is the one the status page shows, and a
//! reload that cannot start its new workers yet never leaves the pool without serving workers.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{raw, Server};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn config(backlog: u32, second_user: &str) -> String {
    format!(
        r#"
[global]
status_listen = "127.0.0.1:0"
runtime_dir = "{{dir}}/rt"

[pool.a]
workers = "process"
max_children = 2

[pool.a.listen]
address = "unix:{{dir}}/a.sock"
backlog = {backlog}

[pool.a.app]
kind = "sleep"

[pool.b]
workers = "process"
max_children = 1
{second_user}

[pool.b.listen]
address = "unix:{{dir}}/b.sock"

[pool.b.app]
kind = "hello"
"#
    )
}

fn hup(server: &Server) {
    kill(Pid::from_raw(server.pid()), Signal::SIGHUP).unwrap();
}

/// Wait until the log holds `text` `n` times.
fn wait_log(server: &Server, text: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.log().matches(text).count() < n {
        assert!(
            Instant::now() < deadline,
            "no {text:?} x{n}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_children(server: &Server, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kids = common::child_pids(server.pid());
        if kids.len() == n {
            return kids;
        }
        assert!(
            Instant::now() < deadline,
            "{} children, not {n}",
            kids.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bad_pool_refuses_the_whole_reload() {
    let server = Server::start(&config(511, ""));
    let before = wait_children(&server, 3);
    std::fs::write(
        server.path("fastpm.toml"),
        config(600, "user = \"no-such-user-fastpm\"")
            .replace("{dir}", server.dir.path().to_str().unwrap()),
    )
    .unwrap();
    hup(&server);
    wait_log(&server, "reload refused", 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        common::child_pids(server.pid()),
        before,
        "a refused reload replaced workers; log:\n{}",
        server.log()
    );
    let status = common::master_status(server.status_port());
    assert_eq!(status["pools"][0]["listen backlog"], 511, "{status}");
}

#[test]
fn the_status_shows_the_backlog_a_reload_set() {
    let server = Server::start(&config(511, ""));
    std::fs::write(
        server.path("fastpm.toml"),
        config(300, "").replace("{dir}", server.dir.path().to_str().unwrap()),
    )
    .unwrap();
    hup(&server);
    wait_log(&server, "SIGHUP: reloaded", 1);
    let status = common::master_status(server.status_port());
    let pool = &status["pools"][0];
    assert_eq!(pool["listen backlog"], 300, "{pool}");
    // What the kernel holds comes from the sampler's next reading.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = common::master_status(server.status_port());
        let pool = &status["pools"][0];
        if pool["listen queue len"] == 300 {
            break;
        }
        assert!(Instant::now() < deadline, "the kernel's backlog: {pool}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_reload_without_free_slots_keeps_the_pool_serving() {
    let server = Server::start(&config(511, ""));
    wait_children(&server, 3);
    let addr = format!("unix:{}", server.path("a.sock").display());
    // Generation 0 of pool a: both workers busy for 4 s.
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut conn = raw::connect(&addr);
                conn.write_all(&raw::request("/s", "ms=4000", b"", false))
                    .unwrap();
                raw::read_response(&mut *conn).map(|r| r.body())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Reload 1: generation 1 starts in the two free slots; generation 0 finishes its requests.
    hup(&server);
    wait_log(&server, "SIGHUP: reloaded", 1);
    wait_children(&server, 5);
    let port = server.status_port();
    let idle_pids = || -> Vec<u64> {
        let (_, body) = common::http_get(port, "/status/a?json&full");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut pids: Vec<u64> = status["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["state"] == "Idle")
            .map(|p| p["pid"].as_u64().unwrap())
            .collect();
        pids.sort();
        pids
    };
    let generation_1 = idle_pids();
    assert_eq!(generation_1.len(), 2, "generation 1 idle: {generation_1:?}");
    // Reload 2: no free slot for generation 2 while generation 0 still runs.
    hup(&server);
    wait_log(&server, "SIGHUP: reloaded", 2);
    std::thread::sleep(Duration::from_millis(500));
    // Generation 1 keeps serving until generation 2 can take over (not asked to leave first).
    let alive: Vec<i32> = common::child_pids(server.pid());
    assert!(
        generation_1.iter().all(|p| alive.contains(&(*p as i32))),
        "generation 1 {generation_1:?} was retired before any replacement started: {alive:?}; log:\n{}",
        server.log()
    );
    let started = Instant::now();
    let answer = raw::get(&addr, "/s", "ms=1");
    assert!(answer.body().contains("slept 1 ms"), "{}", answer.text());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the pool had no serving worker for {:?}; log:\n{}",
        started.elapsed(),
        server.log()
    );
    for b in busy {
        assert!(b.join().unwrap().unwrap().contains("slept 4000 ms"));
    }
}

/// The real uid of process `pid`.
fn uid_of(pid: i32) -> u32 {
    common::procs::status_number(pid, "Uid:") as u32
}

#[test]
fn a_reload_applies_a_changed_user_to_the_new_workers() {
    let uid = |name: &str| {
        nix::unistd::User::from_name(name)
            .unwrap()
            .unwrap_or_else(|| panic!("this test needs the user {name}"))
            .uid
            .as_raw()
    };
    let server = Server::start(&config(511, "user = \"nobody\""));
    let before = wait_children(&server, 3);
    std::fs::write(
        server.path("fastpm.toml"),
        config(511, "user = \"www-data\"").replace("{dir}", server.dir.path().to_str().unwrap()),
    )
    .unwrap();
    hup(&server);
    wait_log(&server, "SIGHUP: reloaded", 1);
    // Pool b's new worker (the one pid that was not there before) runs as www-data.
    let deadline = Instant::now() + Duration::from_secs(5);
    let fresh = loop {
        let now = common::child_pids(server.pid());
        let fresh: Vec<i32> = now
            .iter()
            .copied()
            .filter(|p| !before.contains(p))
            .collect();
        if now.len() == 3 && fresh.len() == 3 {
            break fresh;
        }
        assert!(
            Instant::now() < deadline,
            "old workers stay: {before:?} → {now:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let b_workers: Vec<u32> = fresh
        .iter()
        .map(|&p| uid_of(p))
        .filter(|&u| u != 0)
        .collect();
    assert_eq!(
        b_workers,
        vec![uid("www-data")],
        "uids of the new workers: {:?}",
        fresh.iter().map(|&p| uid_of(p)).collect::<Vec<_>>()
    );
}

/// A reload that lowers `max_children` is what the status says from then on (it said the
/// value at start before): the OpenMetrics gauge and the dashboard read the one in force.
#[test]
fn the_status_shows_the_max_children_a_reload_set() {
    let server = Server::start(&config(511, ""));
    let gauge = |server: &Server| {
        let (code, body) = common::http_get(server.status_port(), "/metrics");
        assert_eq!(code, 200, "{body}");
        body.lines()
            .find(|l| l.starts_with("fastpm_max_children{") && l.contains("pool=\"a\""))
            .unwrap_or_else(|| panic!("no fastpm_max_children for a in:\n{body}"))
            .to_string()
    };
    assert!(gauge(&server).ends_with(" 2"), "{}", gauge(&server));
    std::fs::write(
        server.path("fastpm.toml"),
        config(511, "")
            .replacen("max_children = 2", "max_children = 1", 1)
            .replace("{dir}", server.dir.path().to_str().unwrap()),
    )
    .unwrap();
    hup(&server);
    wait_log(&server, "SIGHUP: reloaded", 1);
    assert!(gauge(&server).ends_with(" 1"), "{}", gauge(&server));
}
