//! `php_children = "embedded"`: PHP (libphp8.2-embed) inside fastpm's worker processes, as in
//! php-fpm's children, end to end: real nginx → fastpm → PHP as www-data, raw FastCGI straight
//! to the socket, the request timeout, what a worker process keeps over time (its pid, its
//! memory), per-request `PHP_VALUE`, and the config check that refuses thread workers. A
//! missing libphp (or a fastpm built without PHP's headers) fails these tests: the pool refuses
//! to start.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::nginx::{curl, Nginx};
use common::php_pages::{self, text};
use common::procs::{alive, status_number};
use common::{child_pids, raw, Server, FASTPM};

/// A document root www-data can read (php-examples plus this test's scripts) inside a 0711
/// directory that also holds the runtime_dir, next to a script outside the root.
struct Site {
    dir: tempfile::TempDir,
    root: PathBuf,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    let root = base.join("www");
    let outside = base.join("outside");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    php_pages::copy_examples(&root);
    let scripts = [
        (
            "env.php",
            "<?php var_export([getenv('FASTPM_TEST'), getenv('HOME'), $_SERVER['FASTPM_TEST'] ?? null, ini_get('memory_limit')]);",
        ),
        (
            "who.php",
            "<?php echo posix_geteuid(), ' ', getmypid(), ' ', PHP_SAPI, ' ', $_SERVER['PHP_SELF'], \"\\n\";",
        ),
        ("precision.php", "<?php echo ini_get('precision'), \"\\n\";"),
        ("unique.php", "<?php echo getmypid();"),
        ("exitneg.php", "<?php echo \"bye\\n\"; exit(-1);"),
        (
            "lock.php",
            "<?php ini_set('memory_limit', '-1'); echo ini_get('memory_limit'), ' ', ini_get('upload_max_filesize'), \"\\n\";",
        ),
        ("gone.php", "<?php header('HTTP/1.1 404 Gone away'); echo \"gone\\n\";"),
        (
            "cached.php",
            "<?php $s = opcache_get_status(true); echo getmypid(), ' ', isset($s['scripts'][__DIR__ . '/unique.php']) ? 'cached' : 'not-cached';",
        ),
        (
            "finish.php",
            "<?php echo \"answered\\n\"; $done = fastcgi_finish_request(); echo 'dropped';\n\
             usleep(800000); file_put_contents($_GET['file'], var_export($done, true) . ' ran on');",
        ),
        (
            "allheaders.php",
            "<?php var_export([getallheaders(), apache_request_headers() === getallheaders()]);",
        ),
        (
            "counter.php",
            "<?php static $n = 0; $GLOBALS['leak'] = str_repeat('x', 100000); echo strlen($GLOBALS['leak']), \"\\n\";",
        ),
    ];
    for (name, text) in scripts {
        std::fs::write(root.join(name), text).unwrap();
    }
    php_pages::link_out_of_root(&root, &outside);
    for dir in [&root, &outside] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644))
                    .unwrap();
            }
        }
    }
    Site { dir, root }
}

/// fastpm with one embedded-PHP pool `p` on `<dir>/p.sock`; `pool_keys`: more lines of the
/// pool's table (`user = "…"`, `pm = "…"`), or "".
fn start(site: &Site, workers: u32, request_timeout: &str, pool_keys: &str) -> Server {
    let config = format!(
        r#"
[global]
status_listen = ""
runtime_dir = "{base}/rt"

[pool.p]
workers = "process"
max_children = {workers}
request_timeout = "{request_timeout}"
{pool_keys}

[pool.p.listen]
address = "unix:{{dir}}/p.sock"

[pool.p.app]
kind = "php"
php_children = "embedded"
document_root = "{root}"
# file_update_protection: opcache caches this test's scripts although they are seconds old.
ini = {{ post_max_size = "64M", upload_max_filesize = "64M", memory_limit = "77M", "opcache.file_update_protection" = "0" }}
env = {{ FASTPM_TEST = "from-config" }}
"#,
        base = site.dir.path().display(),
        root = site.root.display(),
    );
    Server::start(&config)
}

fn start_nginx(server: &Server, site: &Site) -> Nginx {
    let sock = server.path("p.sock");
    let root = site.root.display();
    Nginx::start(server.dir.path(), |port| {
        format!(
            r#"
    server {{
        listen 127.0.0.1:{port};
        root {root};
        client_max_body_size 64m;
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_pass unix:{sock};
        }}
    }}"#,
            sock = sock.display(),
        )
    })
}

fn www_data_uid() -> u64 {
    u64::from(
        nix::unistd::User::from_name("www-data")
            .unwrap()
            .expect("user www-data")
            .uid
            .as_raw(),
    )
}

/// The pool's php parent: the master's one live child (PHP starts there once). A retired one
/// may linger a moment as a zombie after a reload.
fn php_parent(server: &Server) -> i32 {
    let live = || -> Vec<i32> {
        child_pids(server.pid())
            .into_iter()
            .filter(|&pid| alive(pid))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut parents = live();
    while parents.len() != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        parents = live();
    }
    assert_eq!(
        parents.len(),
        1,
        "the php parent: {parents:?}\n{}",
        server.log()
    );
    parents[0]
}

/// The worker processes: the php parent's children, once there are `n`.
fn workers(server: &Server, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<i32> = child_pids(php_parent(server))
            .into_iter()
            .filter(|&pid| alive(pid))
            .collect();
        if pids.len() == n || Instant::now() > deadline {
            assert_eq!(
                pids.len(),
                n,
                "worker processes: {pids:?}\n{}",
                server.log()
            );
            return pids;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// php-examples through nginx, the pool as www-data: the pages, the error page (and php's
/// message on nginx's log, as php-fpm sends it), bodies and uploads, `env` and `ini`, and the
/// scripts that must not run.
#[test]
fn embedded_php_serves_php_examples_through_nginx_as_www_data() {
    let site = site();
    let server = start(&site, 2, "0s", "user = \"www-data\"");
    for pid in workers(&server, 2).into_iter().chain([php_parent(&server)]) {
        assert_eq!(
            status_number(pid, "Uid:"),
            www_data_uid(),
            "{pid} runs as www-data"
        );
    }
    let nginx = start_nginx(&server, &site);
    let base = format!("http://127.0.0.1:{}", nginx.port);

    php_pages::hello_and_info(&base, &site.root);

    // PHP runs in the worker: its pid is a worker's, its uid www-data, its SAPI php-fpm's.
    let (code, body) = curl(&[], &format!("{base}/who.php/extra"));
    let body = text(&body);
    assert_eq!(code, 200, "{body}");
    let fields: Vec<&str> = body.split_whitespace().collect();
    assert_eq!(fields[0], www_data_uid().to_string(), "{body}");
    let pid: i32 = fields[1].parse().unwrap();
    assert!(workers(&server, 2).contains(&pid), "{body}");
    assert_eq!(fields[2], "fpm-fcgi", "{body}");
    assert_eq!(fields[3], "/who.php/extra", "PHP_SELF: {body}");

    php_pages::headers_error_and_post(&base, &server);
    let nginx_log = std::fs::read_to_string(server.path("nginx-error.log")).unwrap_or_default();
    assert!(
        nginx_log.contains("FastCGI sent in stderr: \"PHP message: PHP Fatal error")
            && nginx_log.contains("undefined_function_for_the_example"),
        "as php-fpm sends it (\"PHP message: \"): {nginx_log}"
    );
    // The fatal error ended that request only: both workers go on.
    for _ in 0..4 {
        let (code, body) = curl(&[], &format!("{base}/hello.php"));
        assert_eq!((code, text(&body)), (200, "Hello from PHP\n".to_string()));
    }

    let upload = site.dir.path().join("upload.bin");
    let bytes: Vec<u8> = (0..3usize << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&upload, &bytes).unwrap();
    let md5 = php_pages::md5_of(&upload);
    let field = format!("file=@{}", upload.display());
    let (code, body) = curl(&["-F", &field], &format!("{base}/upload.php"));
    assert_eq!(
        (code, text(&body)),
        (
            200,
            format!(
                "field=file\nname=upload.bin\nerror=0\nsize={}\nmd5={md5}\n",
                3 << 20
            )
        ),
        "a 3 MiB upload arrives intact"
    );

    // `env` is in getenv() and (the third) in $_SERVER; the worker's own environment is not
    // (clear_env); `ini` is applied.
    php_pages::env_and_ini(&base, "'from-config'");

    php_pages::refusals(&base);
}

/// Over time: the worker process keeps its pid (no restart per request, none while idle),
/// and its memory stays flat over hundreds of requests that each allocate. One worker, so
/// that the warm-up surely reached it.
#[test]
fn embedded_workers_keep_their_pids_and_their_memory() {
    let site = site();
    let server = start(&site, 1, "0s", "");
    let sock = server.path("p.sock");
    let before = workers(&server, 1);
    let script = site.root.join("counter.php");
    let run = |n: usize| {
        for _ in 0..n {
            let r = raw::get_script(&sock, "/counter.php", script.to_str().unwrap());
            assert_eq!(r.body(), "100000\n", "{}", r.text());
        }
    };
    run(300);
    let warm: Vec<u64> = before.iter().map(|&p| status_number(p, "VmRSS:")).collect();
    run(1500);
    std::thread::sleep(Duration::from_secs(2));
    let after = workers(&server, 1);
    assert_eq!(before, after, "the worker process restarted");
    for (i, &pid) in after.iter().enumerate() {
        assert!(alive(pid));
        let now = status_number(pid, "VmRSS:");
        assert!(
            now < warm[i] + 2048,
            "worker {pid}: RSS {} KiB after warm-up, {now} KiB 1500 requests later",
            warm[i]
        );
    }
}

/// `request_timeout`: the slow request gets 504 and its worker process is replaced; the next
/// requests are answered.
#[test]
fn embedded_request_timeout_gives_504_for_the_slow_request_only() {
    let site = site();
    let server = start(&site, 1, "1s", "");
    let nginx = start_nginx(&server, &site);
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let first = workers(&server, 1);
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
    assert_ne!(workers(&server, 1), first, "the stuck worker was replaced");
}

/// `PHP_VALUE` and `PHP_ADMIN_VALUE` (nginx: `fastcgi_param PHP_VALUE "…"`) set ini values for
/// that request only, as php-fpm applies them.
#[test]
fn embedded_php_value_applies_to_its_request_only() {
    let site = site();
    let server = start(&site, 1, "0s", "");
    let script = site.root.join("precision.php");
    let script = script.to_str().unwrap();
    let precision = |extra: &[(&str, &str)]| {
        let mut params = vec![
            ("SCRIPT_NAME", "/precision.php"),
            ("SCRIPT_FILENAME", script),
        ];
        params.extend_from_slice(extra);
        ask(&server, &params).body()
    };
    let default = precision(&[]);
    assert_ne!(default, "5\n");
    assert_eq!(precision(&[("PHP_VALUE", "precision=5")]), "5\n");
    assert_eq!(
        precision(&[]),
        default,
        "PHP_VALUE of the request before leaked"
    );
    assert_eq!(precision(&[("PHP_ADMIN_VALUE", "precision=7")]), "7\n");
    assert_eq!(
        precision(&[]),
        default,
        "PHP_ADMIN_VALUE of the request before leaked"
    );

    // Any directive, as php-fpm sets them (upload_max_filesize is not a script's to change);
    // an admin value is locked against the script's ini_set().
    let lock = site.root.join("lock.php");
    let lock = lock.to_str().unwrap();
    let run_lock = |extra: &[(&str, &str)]| {
        let mut params = vec![("SCRIPT_NAME", "/lock.php"), ("SCRIPT_FILENAME", lock)];
        params.extend_from_slice(extra);
        ask(&server, &params).body()
    };
    assert_eq!(run_lock(&[]), "-1 64M\n");
    assert_eq!(
        run_lock(&[
            ("PHP_VALUE", "upload_max_filesize=5M"),
            ("PHP_ADMIN_VALUE", "memory_limit=99M"),
        ]),
        "99M 5M\n"
    );
    assert_eq!(run_lock(&[]), "-1 64M\n", "the lock outlived its request");
}

/// What a script ends with does not reach the next request: `exit(-1)` (PHP's exit status
/// -1) is a finished request, answered and cleaned up; a status set with its own reason is
/// passed on as php-fpm passes it; the last of duplicate params wins, for PHP_SELF as for
/// $_SERVER.
#[test]
fn embedded_exit_codes_status_lines_and_duplicate_params() {
    let site = site();
    let server = start(&site, 1, "0s", "");
    let script = |name: &str| site.root.join(name).to_str().unwrap().to_string();
    let exitneg = script("exitneg.php");
    for _ in 0..2 {
        let r = ask(
            &server,
            &[
                ("SCRIPT_NAME", "/exitneg.php"),
                ("SCRIPT_FILENAME", &exitneg),
            ],
        );
        assert_eq!(r.body(), "bye\n", "{}", r.text());
    }
    let r = hello(&server, &site);
    assert_eq!(
        r.text(),
        "Content-type: text/html; charset=UTF-8\r\n\r\nHello from PHP\n"
    );

    let gone = script("gone.php");
    let r = ask(
        &server,
        &[("SCRIPT_NAME", "/gone.php"), ("SCRIPT_FILENAME", &gone)],
    );
    assert!(
        r.text().starts_with("Status: 404 Gone away\r\n"),
        "{}",
        r.text()
    );

    let who = script("who.php");
    let r = ask(
        &server,
        &[
            ("SCRIPT_NAME", "/first.php"),
            ("SCRIPT_FILENAME", &who),
            ("SCRIPT_NAME", "/who.php"),
        ],
    );
    assert!(r.body().ends_with(" /who.php\n"), "PHP_SELF: {}", r.text());
}

/// Debian's libphp is not thread-safe: `fastpm check` refuses embedded PHP with thread workers,
/// naming the file, line, column and key.
#[test]
fn embedded_php_with_thread_workers_is_refused_at_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fastpm.toml");
    std::fs::write(
        &path,
        "[pool.p]\nworkers = \"thread\"\n\n[pool.p.app]\nkind = \"php\"\nphp_children = \"embedded\"\n",
    )
    .unwrap();
    let out = Command::new(FASTPM)
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:6:16: pool.p.app.php_children", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("workers = \"process\""), "{stderr}");
}

/// Sends `params` (plus REQUEST_METHOD GET) to the pool's socket; the whole response.
fn ask(server: &Server, params: &[(&str, &str)]) -> raw::Response {
    let mut conn = send(server, params);
    raw::read_response(&mut conn).expect("a response")
}

/// What php-fpm's SAPI adds and php-cgi lacks or has differently: `fastcgi_finish_request()`
/// answers the client at once while the script goes on (its later output dropped),
/// and `getallheaders()` names the request's headers as the client sent them.
#[test]
fn embedded_fastcgi_finish_request_and_getallheaders() {
    let site = site();
    let server = start(&site, 1, "0s", "");
    let marker = site.dir.path().join("after-finish");
    let script = site.root.join("finish.php");
    let query = format!("file={}", marker.display());
    let started = Instant::now();
    let r = ask(
        &server,
        &[
            ("SCRIPT_NAME", "/finish.php"),
            ("SCRIPT_FILENAME", script.to_str().unwrap()),
            ("QUERY_STRING", &query),
        ],
    );
    let took = started.elapsed();
    assert_eq!(r.body(), "answered\n", "{}", r.text());
    assert!(took < Duration::from_millis(600), "answered after {took:?}");
    assert!(!marker.exists(), "the script was still sleeping");
    common::longpoll::wait_until("the script ran on", Duration::from_secs(5), || {
        std::fs::read_to_string(&marker).is_ok_and(|t| t == "true ran on")
    });

    let script = site.root.join("allheaders.php");
    let r = ask(
        &server,
        &[
            ("SCRIPT_NAME", "/allheaders.php"),
            ("SCRIPT_FILENAME", script.to_str().unwrap()),
            ("HTTP_X_FORWARDED_FOR", "10.1.2.3"),
            ("HTTP_ACCEPT", "*/*"),
            ("CONTENT_TYPE", "text/plain"),
        ],
    );
    let body = r.body();
    for want in [
        "'X-Forwarded-For' => '10.1.2.3'",
        "'Accept' => '*/*'",
        "'Content-Type' => 'text/plain'",
        "1 => true",
    ] {
        assert!(body.contains(want), "{want} in {body}");
    }
}

/// hello.php through the pool's socket: its whole response.
fn hello(server: &Server, site: &Site) -> raw::Response {
    let script = site.root.join("hello.php");
    ask(
        server,
        &[
            ("SCRIPT_NAME", "/hello.php"),
            ("SCRIPT_FILENAME", script.to_str().unwrap()),
        ],
    )
}

/// Sends `params` (plus REQUEST_METHOD GET) over a new connection and returns it, without
/// reading the answer.
fn send(server: &Server, params: &[(&str, &str)]) -> std::os::unix::net::UnixStream {
    let mut all = vec![("REQUEST_METHOD", "GET")];
    all.extend_from_slice(params);
    raw::send_params(&server.path("p.sock"), &all)
}

/// PHP starts once, in the php parent, and the workers are forked from it: they share one
/// opcache, as php-fpm's children do. A script compiled by one worker is in the cache another
/// worker sees (with an opcache per worker it would not be).
#[test]
fn embedded_workers_share_one_opcache() {
    let site = site();
    let server = start(&site, 2, "0s", "");
    let script = |name: &str| site.root.join(name).to_str().unwrap().to_string();
    let unique = script("unique.php");
    let first = ask(
        &server,
        &[("SCRIPT_NAME", "/unique.php"), ("SCRIPT_FILENAME", &unique)],
    )
    .body();
    let compiled_by: i32 = first.trim().parse().expect(&first);
    let (sleep, cached) = (script("sleep.php"), script("cached.php"));
    for _ in 0..20 {
        // One worker sleeps: the other answers.
        let mut sleeping = send(
            &server,
            &[
                ("SCRIPT_NAME", "/sleep.php"),
                ("SCRIPT_FILENAME", &sleep),
                ("QUERY_STRING", "ms=400"),
            ],
        );
        std::thread::sleep(Duration::from_millis(100));
        let answer = ask(
            &server,
            &[("SCRIPT_NAME", "/cached.php"), ("SCRIPT_FILENAME", &cached)],
        )
        .body();
        raw::read_response(&mut sleeping).expect("the sleep answer");
        let (pid, verdict) = answer.split_once(' ').expect(&answer);
        if pid.parse::<i32>().unwrap() != compiled_by {
            assert_eq!(
                verdict, "cached",
                "worker {pid} does not see worker {compiled_by}'s cache"
            );
            return;
        }
    }
    panic!("the other worker never answered");
}

/// When the php parent dies its workers die with it; the master starts a new one and new
/// workers, and the pool answers again.
#[test]
fn embedded_php_parent_killed_comes_back_with_its_workers() {
    let site = site();
    let server = start(&site, 2, "0s", "");
    let before = workers(&server, 2);
    let parent = php_parent(&server);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(parent),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    common::longpoll::wait_until(
        "a new php parent with 2 workers",
        Duration::from_secs(10),
        || {
            let parents = child_pids(server.pid());
            parents.len() == 1 && parents[0] != parent && child_pids(parents[0]).len() == 2
        },
    );
    for pid in before {
        assert!(!alive(pid), "worker {pid} outlived its php parent");
    }
    assert_eq!(hello(&server, &site).body(), "Hello from PHP\n");
}

/// After serving, TERM stops fastpm within a few seconds with nothing left behind: the workers
/// drain and leave (PHP puts back the signal handlers it found at start-up after every
/// request: they must be the workers' own), then the php parent goes.
#[test]
fn embedded_pool_stops_on_term_after_serving_and_reload_replaces_the_php_parent() {
    let site = site();
    let mut server = start(&site, 2, "0s", "");
    let serve = |server: &Server| {
        for _ in 0..20 {
            assert_eq!(hello(server, &site).body(), "Hello from PHP\n");
        }
    };
    serve(&server);
    // A reload (HUP) starts a new php parent and new workers from it; the old ones leave.
    let old_parent = php_parent(&server);
    let old_workers = workers(&server, 2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    common::longpoll::wait_until("the old php parent gone", Duration::from_secs(10), || {
        !alive(old_parent) && old_workers.iter().all(|&pid| !alive(pid))
    });
    let new_workers = workers(&server, 2);
    serve(&server);
    let everyone: Vec<i32> = new_workers
        .iter()
        .copied()
        .chain([php_parent(&server)])
        .collect();
    let status = server.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(5));
    assert!(status.success(), "{status}\n{}", server.log());
    for pid in everyone {
        assert!(!alive(pid), "{pid} outlived fastpm");
    }
}

/// `.user.ini` files are read from the document root down to the script's directory (the
/// deepest wins), as php-fpm reads them.
#[test]
fn embedded_user_ini_files_apply_per_directory() {
    let site = site();
    let sub = site.root.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(
        site.root.join(".user.ini"),
        "precision=4\nserialize_precision=9\n",
    )
    .unwrap();
    std::fs::write(sub.join(".user.ini"), "precision=3\n").unwrap();
    let text = "<?php echo ini_get('precision'), ' ', ini_get('serialize_precision'), \"\\n\";";
    std::fs::write(site.root.join("p.php"), text).unwrap();
    std::fs::write(sub.join("p.php"), text).unwrap();
    let server = start(&site, 1, "0s", "");
    let root = site.root.to_str().unwrap();
    let run = |name: &str| {
        let file = format!("{root}{name}");
        ask(
            &server,
            &[
                ("SCRIPT_NAME", name),
                ("SCRIPT_FILENAME", &file),
                ("DOCUMENT_ROOT", root),
            ],
        )
        .body()
    };
    assert_eq!(run("/p.php"), "4 9\n");
    assert_eq!(run("/sub/p.php"), "3 9\n");
    assert_eq!(run("/p.php"), "4 9\n", "a directory's settings stay in it");
}

/// The php parent starts with the pool, as php-fpm starts PHP at boot: an `ondemand` pool has
/// it (and no worker) before its first request, which gets a worker forked from it.
#[test]
fn embedded_ondemand_pool_has_its_php_parent_before_the_first_request() {
    let site = site();
    let server = start(&site, 2, "0s", "pm = \"ondemand\"");
    let parent = php_parent(&server);
    assert!(child_pids(parent).is_empty(), "no worker yet");
    assert_eq!(hello(&server, &site).body(), "Hello from PHP\n");
    assert_eq!(php_parent(&server), parent);
    assert_eq!(workers(&server, 1).len(), 1);
}

/// Every accept lock reaches the workers the php parent forks, at the descriptor number they
/// got it under (not the master's): they start, serve, and stay.
#[test]
fn embedded_workers_take_each_accept_lock_kind() {
    let site = site();
    for lock in ["mutex", "fcntl", "flock"] {
        let server = start(&site, 2, "0s", &format!("accept_lock = \"{lock}\""));
        let before = workers(&server, 2);
        for _ in 0..20 {
            let answer = hello(&server, &site).text();
            assert!(answer.contains("Hello from PHP"), "{lock}: {answer}");
        }
        assert_eq!(workers(&server, 2), before, "{lock}: {}", server.log());
    }
}
