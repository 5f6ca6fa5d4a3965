//! `kind = "php"` end to end: real nginx → fastpm → real php-cgi, serving a copy of
//! php-examples/. Every component is required: a missing one fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::nginx::{curl, Nginx};
use common::php_pages::{self, text};
use common::procs::children_named;
use common::{raw, require, Server};

/// A document root (a copy of php-examples) next to a directory outside it.
struct Site {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    let root = base.join("www");
    let outside = base.join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    php_pages::copy_examples(&root);
    std::fs::write(
        root.join("env.php"),
        "<?php var_export([getenv('FASTPM_TEST'), getenv('HOME'), getenv('PHP_FCGI_MAX_REQUESTS'), ini_get('memory_limit')]);",
    )
    .unwrap();
    php_pages::link_out_of_root(&root, &outside);
    Site {
        _dir: dir,
        root,
        outside,
    }
}

fn start(site: &Site, workers: u32, request_timeout: &str) -> Server {
    start_as(site, "thread", workers, request_timeout)
}

/// `kind`: "thread" or "process" workers.
fn start_as(site: &Site, kind: &str, workers: u32, request_timeout: &str) -> Server {
    let php_cgi = require("php-cgi");
    let config = format!(
        r#"
[global]
status_listen = ""
runtime_dir = "{{dir}}/rt"

[pool.p]
workers = "{kind}"
max_children = {workers}
request_timeout = "{request_timeout}"

[pool.p.listen]
address = "unix:{{dir}}/p.sock"

[pool.p.app]
kind = "php"
php_cgi = "{php_cgi}"
# These tests count and kill each worker's own php-cgi; tests/php_shared.rs covers "shared".
php_children = "per-worker"
document_root = "{root}"
ini = {{ post_max_size = "64M", upload_max_filesize = "64M", memory_limit = "77M" }}
env = {{ FASTPM_TEST = "from-config" }}
"#,
        php_cgi = php_cgi.display(),
        root = site.root.display(),
    );
    Server::start(&config)
}

fn start_nginx(server: &Server, site: &Site) -> Nginx {
    let dir = server.dir.path().display().to_string();
    let root = site.root.display();
    Nginx::start(server.dir.path(), |port| {
        format!(
            r#"
    upstream php {{
        server unix:{dir}/p.sock;
        keepalive 4;
    }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_keep_conn on;
            fastcgi_pass php;
        }}
    }}"#
        )
    })
}

/// php-cgi processes whose parent is `parent`.
fn php_children(parent: i32) -> Vec<i32> {
    children_named(parent, "php-cgi")
}

#[test]
fn php_examples_through_nginx() {
    let site = site();
    let server = start(&site, 2, "0s");
    let nginx = start_nginx(&server, &site);
    let base = format!("http://127.0.0.1:{}", nginx.port);

    let info = php_pages::hello_and_info(&base, &site.root);
    assert!(info.contains("(cgi-fcgi)"), "{info}");

    let (code, body) = curl(&[], &format!("{base}/sleep.php?ms=30"));
    assert_eq!((code, text(&body)), (200, "slept 30 ms\n".to_string()));

    let (code, body) = curl(&[], &format!("{base}/cpu.php?k=1"));
    assert_eq!((code, text(&body)), (200, "k=1 x=729977\n".to_string()));

    php_pages::headers_error_and_post(&base, &server);

    // `env` reaches PHP, fastpm's own environment does not (clear_env), `ini` became -d; the
    // third is php-cgi's PHP_FCGI_MAX_REQUESTS as fastpm sets it.
    php_pages::env_and_ini(&base, "'0'");

    php_pages::refusals(&base);
}

/// Process workers (php-fpm's layout): each worker process owns its php-cgi, which is the
/// worker's child, not the master's; requests overlap across them and all are answered.
#[test]
fn php_process_workers_each_own_a_php_cgi() {
    let site = site();
    let server = start_as(&site, "process", 2, "5s");
    let nginx = start_nginx(&server, &site);
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                for j in 0..5 {
                    let (code, body) = curl(&[], &format!("{base}/sleep.php?ms={}", 5 + i + j));
                    assert_eq!(
                        (code, text(&body)),
                        (200, format!("slept {} ms\n", 5 + i + j))
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
    // Worker processes are re-executions of fastpm through /proc/self/exe: named "exe".
    let workers = children_named(server.pid(), "exe");
    assert_eq!(workers.len(), 2, "two worker processes: {workers:?}");
    for worker in workers {
        assert_eq!(
            php_children(worker).len(),
            1,
            "worker {worker} owns one php-cgi"
        );
    }
    assert!(
        php_children(server.pid()).is_empty(),
        "none belongs to the master"
    );
}

#[test]
fn php_post_and_upload_bodies_arrive_intact() {
    let site = site();
    let server = start(&site, 2, "0s");
    let nginx = start_nginx(&server, &site);
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let file = server.path("body.bin");
    for size in [0usize, 1 << 20, 10 << 20] {
        let body: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&file, &body).unwrap();
        let md5 = php_pages::md5_of(&file);
        let data = format!("@{}", file.display());
        let (code, out) = curl(
            &[
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &data,
            ],
            &format!("{base}/post.php"),
        );
        let out = text(&out);
        assert_eq!(code, 200, "size {size}: {out}");
        assert!(
            out.contains(&format!("length={size}\nmd5={md5}\n")),
            "size {size}: {out}"
        );
        if size > 0 {
            let form = format!("file=@{}", file.display());
            let (code, out) = curl(&["-F", &form], &format!("{base}/upload.php"));
            let out = text(&out);
            assert_eq!(code, 200, "upload {size}: {out}");
            assert!(
                out.contains(&format!("error=0\nsize={size}\nmd5={md5}\n")),
                "upload {size}: {out}"
            );
        }
    }
}

#[test]
fn php_concurrent_requests_all_answered() {
    let site = site();
    let server = start(&site, 3, "0s");
    let nginx = start_nginx(&server, &site);
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                for j in 0..5 {
                    let (code, body) = curl(&[], &format!("{base}/sleep.php?ms={}", 10 + i + j));
                    assert_eq!(code, 200);
                    assert_eq!(text(&body), format!("slept {} ms\n", 10 + i + j));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
    // Each worker kept its own php-cgi: three children, no more.
    assert_eq!(php_children(server.pid()).len(), 3);
}

/// php-cgi closes a freshly accepted connection that carries no request within 5 s. A worker
/// that stays idle longer than that after its php-cgi started must still serve its first
/// request on that same php-cgi (fastpm connects when the first request comes), not find the
/// connection dead and pay a php-cgi restart on the request.
#[test]
fn php_workers_idle_past_php_cgis_first_request_timeout_serve_on_the_same_child() {
    let site = site();
    let server = start(&site, 2, "0s");
    let nginx = start_nginx(&server, &site);
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let mut before = php_children(server.pid());
    before.sort();
    assert_eq!(before.len(), 2, "php-cgi is started with each worker");
    std::thread::sleep(Duration::from_millis(6500));
    // Two overlapping requests: the second finds the first worker busy, so each worker serves one.
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || curl(&[], &format!("{base}/sleep.php?ms={}", 600 + i)))
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let (code, body) = t.join().unwrap();
        assert_eq!(
            (code, text(&body)),
            (200, format!("slept {} ms\n", 600 + i)),
            "{}",
            server.log()
        );
    }
    let mut after = php_children(server.pid());
    after.sort();
    assert_eq!(after, before, "the same php-cgi children: {}", server.log());
    assert!(
        !server.log().contains("restarting"),
        "no php-cgi was restarted: {}",
        server.log()
    );
}

#[test]
fn php_script_filename_outside_document_root_does_not_run() {
    let site = site();
    let server = start(&site, 1, "0s");
    let evil = site.outside.join("evil.php").display().to_string();
    let dotdot = format!("{}/../outside/evil.php", site.root.display());
    let link = site.root.join("link.php").display().to_string();
    for filename in [
        evil.as_str(),
        dotdot.as_str(),
        link.as_str(),
        "/etc/passwd/x.php",
    ] {
        let r = raw::get_script(&server.path("p.sock"), "/evil.php", filename);
        assert!(
            r.text().starts_with("Status: 404"),
            "{filename}: {}",
            r.text()
        );
        assert!(!r.text().contains("EVIL"), "{filename} ran: {}", r.text());
    }
    let r = raw::get_script(&server.path("p.sock"), "/x", "/etc/passwd");
    assert!(r.text().starts_with("Status: 403"), "{}", r.text());
    // The same connection path still runs what is inside.
    let inside = site.root.join("hello.php").display().to_string();
    let r = raw::get_script(&server.path("p.sock"), "/hello.php", &inside);
    assert_eq!(r.body(), "Hello from PHP\n");
    // Without SCRIPT_FILENAME, document_root + SCRIPT_NAME.
    let r = raw::get_script(&server.path("p.sock"), "/hello.php", "");
    assert_eq!(r.body(), "Hello from PHP\n");
}

#[test]
fn php_child_killed_mid_request_fails_that_request_only() {
    let site = site();
    let server = start(&site, 1, "0s");
    let nginx = start_nginx(&server, &site);
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let (code, _) = curl(&[], &format!("{base}/hello.php"));
    assert_eq!(code, 200);
    let children = php_children(server.pid());
    assert_eq!(children.len(), 1, "one php-cgi for one worker");
    let slow = {
        let base = base.clone();
        std::thread::spawn(move || curl(&[], &format!("{base}/sleep.php?ms=5000")))
    };
    std::thread::sleep(Duration::from_millis(700));
    // SIGKILL php-cgi's whole process group while it runs sleep.php.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-children[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let started = Instant::now();
    let (code, body) = slow.join().unwrap();
    assert_eq!(code, 502, "{}", text(&body));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the error came at once"
    );
    let (code, body) = curl(&[], &format!("{base}/hello.php"));
    assert_eq!((code, text(&body)), (200, "Hello from PHP\n".to_string()));
    let now = php_children(server.pid());
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], children[0], "a fresh php-cgi");
    assert!(
        server.log().contains("exited during a request"),
        "{}",
        server.log()
    );

    // A child that dies while idle costs no request at all: the next one is retried on a
    // fresh php-cgi.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-now[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (code, body) = curl(&[], &format!("{base}/hello.php"));
    assert_eq!((code, text(&body)), (200, "Hello from PHP\n".to_string()));
    assert!(
        server.log().contains("had exited while idle"),
        "{}",
        server.log()
    );
}

#[test]
fn php_request_timeout_gives_504_for_the_slow_request_only() {
    let site = site();
    let server = start(&site, 1, "1s");
    let nginx = start_nginx(&server, &site);
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let started = Instant::now();
    let (code, body) = curl(&[], &format!("{base}/sleep.php?ms=4000"));
    assert_eq!(code, 504, "{}", text(&body));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let (code, body) = curl(&[], &format!("{base}/sleep.php?ms=100"));
    assert_eq!((code, text(&body)), (200, "slept 100 ms\n".to_string()));
    let (code, _) = curl(&[], &format!("{base}/hello.php"));
    assert_eq!(code, 200);
    assert!(
        server.log().contains("exceeded request_timeout"),
        "{}",
        server.log()
    );
}

#[test]
fn php_children_stop_with_fastpm() {
    let site = site();
    let mut server = start(&site, 2, "0s");
    let children = php_children(server.pid());
    assert_eq!(children.len(), 2, "php-cgi is started with each worker");
    server.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let alive: Vec<_> = children
            .iter()
            .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "php-cgi {alive:?} outlived fastpm"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A large body goes to php-cgi from the request's own buffer: the worker's peak memory grows
/// by about the body once (php's memory_limit here is 77M, so the body stays well below), not twice (the request plus an encoded copy).
#[test]
fn php_large_body_is_held_once() {
    let site = site();
    let server = start_as(&site, "process", 1, "0s");
    let addr = format!("unix:{}", server.path("p.sock").display());
    let post = site.root.join("post.php");
    let script = post.to_str().unwrap();
    // Warm up: php-cgi started and connected, buffers at their working size.
    let r = raw::get(&addr, script, "");
    assert!(r.text().contains("length=0"), "{}", r.text());
    let worker = *common::child_pids(server.pid())
        .first()
        .expect("a worker process");
    let before = common::procs::status_number(worker, "VmHWM:");
    const MIB: usize = 1 << 20;
    let body: Vec<u8> = (0..24 * MIB).map(|i| (i * 7 % 251) as u8).collect();
    let mut conn = raw::connect(&addr);
    std::io::Write::write_all(&mut conn, &raw::request(script, "", &body, false)).unwrap();
    let r = raw::read_response(&mut *conn).expect("a response");
    assert!(
        r.text().contains(&format!("length={}\n", body.len())),
        "{}",
        r.text()
    );
    let grew_mib = (common::procs::status_number(worker, "VmHWM:") - before) / 1024;
    assert!(
        grew_mib < 36,
        "a 24 MiB body raised the worker's peak memory by {grew_mib} MiB"
    );
}
