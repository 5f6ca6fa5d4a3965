//! `php_children = "shared"` end to end, with real php-cgi and a real fastpm: one php-cgi parent
//! per pool whose `max_children` children share one opcache; the master starts and restarts
//! the parent; each worker keeps a connection to one child, kills that child (and no other) on
//! `request_timeout`, and recycles it after `max_requests`. A missing php-cgi, nginx or curl
//! fails the test.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::nginx::{curl, Nginx};
use common::procs::{alive, all, children_named, Proc};
use common::{raw, require, wait_for_upgrade, Server, StopOnDrop};

/// tests/fixtures/opcache: report.php (pid and opcache's view) and warm.php.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opcache")
}

/// A pool `p` of `workers` workers and `max_children` php-cgi children in `layout`, serving
/// `root`; `pool_extra` lines go into `[pool.p]`.
fn config(workers: &str, layout: &str, max_children: u32, root: &Path, pool_extra: &str) -> String {
    format!(
        r#"
[global]
status_listen = ""
runtime_dir = "{{dir}}/rt"

[pool.p]
workers = "{workers}"
max_children = {max_children}
{pool_extra}

[pool.p.listen]
address = "unix:{{dir}}/p.sock"

[pool.p.app]
kind = "php"
php_cgi = "{php_cgi}"
php_children = "{layout}"
document_root = "{root}"
# Fresh copies of scripts are cached at once (by default opcache skips files younger than 2 s).
ini = {{ "opcache.file_update_protection" = "0" }}
"#,
        php_cgi = require("php-cgi").display(),
        root = root.display(),
    )
}

fn addr(server: &Server) -> String {
    format!("unix:{}", server.path("p.sock").display())
}

/// The php-cgi processes that are children of the master: the pool's shared parent(s).
fn parents(server: &Server) -> Vec<i32> {
    children_named(server.pid(), "php-cgi")
}

/// Wait until the master has one php-cgi parent with `n` live php-cgi children (a killed child
/// is a zombie for a moment: not counted); (parent, children).
fn wait_for_tree(server: &Server, n: usize) -> (i32, BTreeSet<i32>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let [parent] = parents(server)[..] {
            let children: BTreeSet<i32> = children_named(parent, "php-cgi")
                .into_iter()
                .filter(|&c| alive(c))
                .collect();
            if children.len() == n {
                return (parent, children);
            }
        }
        assert!(
            Instant::now() < deadline,
            "expected one php-cgi parent with {n} children below the master; processes: {:?}; log:\n{}",
            common::procs::descendants(server.pid()),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait (5 s at most) until none of `pids` is a live php-cgi (a killed orphan may stay a
/// zombie until init reaps it: it runs nothing and holds no socket).
fn wait_gone(pids: &BTreeSet<i32>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alive: Vec<Proc> = all()
            .into_iter()
            .filter(|p| pids.contains(&p.pid) && p.name == "php-cgi" && alive(p.pid))
            .collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still running: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `key=value` lines of a report.php answer.
fn field(body: &str, key: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {body:?}"))
        .to_string()
}

/// report.php held `ms`, from `clients` connections at once; the bodies.
fn concurrent_reports(server: &Server, clients: usize, ms: u32) -> Vec<String> {
    let address = addr(server);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let address = address.clone();
            std::thread::spawn(move || raw::get(&address, "/report.php", &format!("ms={ms}")))
        })
        .collect();
    threads
        .into_iter()
        .map(|t| {
            let r = t.join().unwrap();
            assert!(r.text().contains("pid="), "{}", r.text());
            r.body()
        })
        .collect()
}

/// The point of the layout: what one child compiled, every child has. warm.php runs once; then
/// both children (reached at once by two held requests) find it cached, and opcache's used
/// memory is the same number in both (one segment). The per-worker layout, in the same test, is
/// the control: there only the child that ran warm.php has it.
#[test]
fn children_share_one_opcache_and_per_worker_ones_do_not() {
    for (layout, both_cached) in [("shared", true), ("per-worker", false)] {
        let server = Server::start(&config("thread", layout, 2, &fixtures(), ""));
        let warm = raw::get(&addr(&server), "/warm.php", "");
        assert!(warm.body().contains("warm pid="), "{}", warm.text());
        let reports = concurrent_reports(&server, 2, 400);
        let pids: BTreeSet<String> = reports.iter().map(|r| field(r, "pid")).collect();
        assert_eq!(
            pids.len(),
            2,
            "{layout}: two children answered: {reports:?}"
        );
        for r in &reports {
            assert_eq!(field(r, "enabled"), "1", "{layout}: opcache is on: {r}");
        }
        let cached: Vec<String> = reports.iter().map(|r| field(r, "warm_cached")).collect();
        if both_cached {
            assert_eq!(cached, ["1", "1"], "{layout}: {reports:?}");
            let used: BTreeSet<String> = reports.iter().map(|r| field(r, "used_memory")).collect();
            assert_eq!(used.len(), 1, "{layout}: one segment: {reports:?}");
        } else {
            let mut sorted = cached.clone();
            sorted.sort();
            assert_eq!(sorted, ["0", "1"], "{layout}: {reports:?}");
        }
    }
}

/// request_timeout: 504 for that request, the one child that ran it killed and replaced by the
/// parent, the other child and the parent untouched, and the next request served.
#[test]
fn request_timeout_kills_only_the_child_running_it() {
    let server = Server::start(&config(
        "thread",
        "shared",
        2,
        &fixtures(),
        "request_timeout = \"1s\"",
    ));
    let (parent, before) = wait_for_tree(&server, 2);
    // Both workers connected (so both children hold a connection): two held reports.
    let reports = concurrent_reports(&server, 2, 200);
    let served: BTreeSet<i32> = reports
        .iter()
        .map(|r| field(r, "pid").parse().unwrap())
        .collect();
    assert_eq!(served, before, "the two children answered");
    let started = Instant::now();
    let slow = raw::get(&addr(&server), "/report.php", "ms=5000");
    let took = started.elapsed();
    assert!(slow.text().starts_with("Status: 504"), "{}", slow.text());
    assert!(took < Duration::from_secs(3), "504 after {took:?}");
    let after = raw::get(&addr(&server), "/report.php", "");
    assert!(after.body().contains("pid="), "{}", after.text());
    let (parent_now, now) = wait_for_tree(&server, 2);
    assert_eq!(parent_now, parent, "the parent stays");
    assert_eq!(
        before.intersection(&now).count(),
        1,
        "exactly one child replaced: before {before:?}, after {now:?}; log:\n{}",
        server.log()
    );
    let log = server.log();
    assert!(
        log.contains("exceeded request_timeout (1000 ms); killed it"),
        "{log}"
    );
}

/// `max_requests` recycles the child after that many answers on its worker's connection, with
/// no request lost: php-cgi's own PHP_FCGI_MAX_REQUESTS would close the kept connection by
/// itself, racing with the next request.
#[test]
fn max_requests_recycles_children_without_losing_a_request() {
    let server = Server::start(&config(
        "thread",
        "shared",
        1,
        &fixtures(),
        "max_requests = 3",
    ));
    let mut pids = Vec::new();
    for _ in 0..10 {
        let r = raw::get(&addr(&server), "/report.php", "");
        assert!(r.body().contains("pid="), "{}", r.text());
        pids.push(field(&r.body(), "pid"));
    }
    let runs: Vec<usize> = pids.chunk_by(|a, b| a == b).map(|run| run.len()).collect();
    assert_eq!(runs, [3, 3, 3, 1], "pids per request: {pids:?}");
    let distinct: BTreeSet<&String> = pids.iter().collect();
    assert_eq!(distinct.len(), 4, "{pids:?}");
    assert!(!server.log().contains("WARN"), "{}", server.log());
}

/// The master starts the parent again when it dies, after killing the children it left
/// (orphans would keep accepting on a socket nobody reaches); requests are served again.
#[test]
fn a_killed_parent_is_replaced_with_its_children() {
    let server = Server::start(&config("process", "shared", 2, &fixtures(), ""));
    let (parent, children) = wait_for_tree(&server, 2);
    let r = raw::get(&addr(&server), "/report.php", "");
    assert!(r.body().contains("pid="), "{}", r.text());
    kill(Pid::from_raw(parent), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_children = loop {
        let (p, c) = wait_for_tree(&server, 2);
        if p != parent {
            break c;
        }
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(new_children.is_disjoint(&children));
    wait_gone(&children, "the old parent's children");
    for _ in 0..4 {
        let r = raw::get(&addr(&server), "/report.php", "");
        let pid: i32 = field(&r.body(), "pid").parse().unwrap();
        assert!(new_children.contains(&pid), "{pid} {new_children:?}");
    }
    assert!(
        server.log().contains("ended; its children were killed"),
        "{}",
        server.log()
    );
}

/// A master killed outright takes the parent with it (its parent-death signal is TERM, on
/// which php-cgi kills its children); a master stopped normally removes the socket and pid
/// files. Either way no php-cgi is left.
#[test]
fn no_php_cgi_outlives_the_master() {
    for signal in [Signal::SIGKILL, Signal::SIGTERM] {
        let mut server = Server::start(&config("thread", "shared", 3, &fixtures(), ""));
        let (parent, children) = wait_for_tree(&server, 3);
        let pool_dir = server.path("rt").join("p");
        let files = |ext: &str| -> Vec<PathBuf> {
            std::fs::read_dir(&pool_dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == ext))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(files("sock").len(), 1, "{:?}", files("sock"));
        assert_eq!(files("pid").len(), 1);
        let pid_text = std::fs::read_to_string(&files("pid")[0]).unwrap();
        assert_eq!(pid_text.trim(), parent.to_string());
        server.stop_with(signal, Duration::from_secs(10));
        let mine: BTreeSet<i32> = children.iter().copied().chain([parent]).collect();
        wait_gone(&mine, &format!("php-cgi after the master's {signal}"));
        if signal == Signal::SIGTERM {
            assert!(files("sock").is_empty(), "{:?}", files("sock"));
            assert!(files("pid").is_empty(), "{:?}", files("pid"));
        }
    }
}

/// A reload that changes what php-cgi is started with (an ini value) starts a new parent for
/// the new workers; the old one leaves once the old workers have; answers show the new value.
#[test]
fn a_reload_with_new_ini_gets_a_new_parent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ini.php"),
        "<?php echo 'memory_limit=', ini_get('memory_limit'), \"\\n\";",
    )
    .unwrap();
    let server = Server::start(&config("process", "shared", 2, dir.path(), ""));
    let (old_parent, _) = wait_for_tree(&server, 2);
    let before = raw::get(&addr(&server), "/ini.php", "");
    assert!(
        !before.body().contains("memory_limit=55M"),
        "{}",
        before.text()
    );
    let path = server.path("fastpm.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("ini = {", "ini = { memory_limit = \"55M\","),
    )
    .unwrap();
    kill(Pid::from_raw(server.pid()), Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ps = parents(&server);
        if server.log().contains("SIGHUP: reloaded") && ps.len() == 1 && ps[0] != old_parent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "php-cgi parents {ps:?} (old {old_parent}); log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_tree(&server, 2);
    for _ in 0..3 {
        let after = raw::get(&addr(&server), "/ini.php", "");
        assert!(
            after.body().contains("memory_limit=55M"),
            "{}",
            after.text()
        );
    }
}

/// A site a www-data worker can read: php-examples copied into a world-readable directory
/// inside a 0711 one (the runtime_dir goes there too).
fn www_data_site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::set_permissions(&www, std::fs::Permissions::from_mode(0o755)).unwrap();
    common::php_pages::copy_examples(&www);
    for entry in std::fs::read_dir(&www).unwrap().flatten() {
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    dir
}

/// The shared layout as a php-fpm user runs it: worker processes and php-cgi as www-data,
/// behind nginx, php-examples answering GET, POST and an error page.
#[test]
fn shared_layout_as_www_data_serves_php_examples_through_nginx() {
    let site = www_data_site();
    let base = site.path().display().to_string();
    let text = config(
        "process",
        "shared",
        3,
        &site.path().join("www"),
        "user = \"www-data\"",
    )
    .replace(
        "runtime_dir = \"{dir}/rt\"",
        &format!("runtime_dir = \"{base}/rt\""),
    );
    let server = Server::start(&text);
    let (parent, children) = wait_for_tree(&server, 3);
    let www_data = nix::unistd::User::from_name("www-data")
        .unwrap()
        .expect("user www-data");
    for pid in children.iter().copied().chain([parent]) {
        let uid = common::procs::status_number(pid, "Uid:").to_string();
        assert_eq!(
            uid,
            www_data.uid.to_string(),
            "php-cgi {pid} runs as www-data"
        );
    }
    let sock = server.path("p.sock");
    let root = site.path().join("www");
    let nginx = Nginx::start(server.dir.path(), |port| {
        format!(
            r#"
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location ~ \.php$ {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_pass unix:{sock};
        }}
    }}"#,
            root = root.display(),
            sock = sock.display(),
        )
    });
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", nginx.port);
    for _ in 0..6 {
        let (code, body) = curl(&[], &url("/hello.php"));
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("Hello from PHP"));
    }
    let (code, body) = curl(&["--data", "a=1&b=two"], &url("/post.php"));
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("method=POST") && body.contains("post[b]=two"),
        "{body}"
    );
    let (code, body) = curl(&[], &url("/error.php"));
    assert_eq!(code, 500, "{}", String::from_utf8_lossy(&body));
    // Through all that, the tree stood: the same parent and children.
    assert_eq!(wait_for_tree(&server, 3), (parent, children));
}

/// A binary upgrade: the new master starts its own parent on the same socket path (the key is
/// the same); the old master, leaving, kills only its own parent and removes neither the new
/// socket nor the new pid file.
#[test]
fn a_binary_upgrade_hands_the_socket_path_to_the_new_parent() {
    let text = config("process", "shared", 2, &fixtures(), "").replace(
        "status_listen = \"\"",
        "status_listen = \"\"\npid_file = \"{dir}/fastpm.pid\"",
    );
    let mut server = Server::start(&text);
    let old_master = server.pid();
    let (old_parent, old_children) = wait_for_tree(&server, 2);
    kill(Pid::from_raw(old_master), Signal::SIGUSR2).unwrap();
    let pid_path = server.path("fastpm.pid");
    let new_master = wait_for_upgrade(&mut server, &pid_path);
    let _stop = StopOnDrop(new_master);
    let gone: BTreeSet<i32> = old_children.iter().copied().chain([old_parent]).collect();
    wait_gone(&gone, "the old master's php-cgi");
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_parent = loop {
        if let [p] = children_named(new_master, "php-cgi")[..] {
            if children_named(p, "php-cgi").len() == 2 {
                break p;
            }
        }
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    let pool_dir = server.path("rt").join("p");
    let names: Vec<String> = std::fs::read_dir(&pool_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let pid_file = names
        .iter()
        .find(|n| n.ends_with(".pid"))
        .unwrap_or_else(|| panic!("no pid file in {names:?}"));
    assert!(names.iter().any(|n| n.ends_with(".sock")), "{names:?}");
    let written = std::fs::read_to_string(pool_dir.join(pid_file)).unwrap();
    assert_eq!(written.trim(), new_parent.to_string());
    for _ in 0..3 {
        let r = raw::get(&addr(&server), "/report.php", "");
        assert!(r.body().contains("pid="), "{}", r.text());
    }
}
