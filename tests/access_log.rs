//! The access log (`[pool.NAME] access_log`, `access_format`) through real components: the
//! fastpm binary, libfcgi's `cgi-fcgi` and nginx as clients, php-cgi as the app. One line per
//! request, with the time it waited in the kernel's accept queue; worker processes running as
//! www-data log into a file they could not open themselves.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use common::cgi_fcgi::{get_params, lines_of, request, wait_lines};
use common::nginx::{curl, Nginx};
use common::{require, Server, FASTPM};

/// The queue wait, the last field of the default format, of each line.
fn queue_waits(lines: &[String]) -> Vec<Option<u64>> {
    lines
        .iter()
        .map(|l| l.rsplit(' ').next().and_then(|w| w.parse().ok()))
        .collect()
}

#[test]
fn one_line_per_request_with_the_queue_wait_for_process_and_thread_pools() {
    let server = Server::start(
        r#"
[global]
status_listen = ""
runtime_dir = "{dir}/rt"

[pool.p]
workers = "process"
max_children = 2
access_log = "{dir}/p.access.log"

[pool.p.listen]
address = "unix:{dir}/p.sock"

[pool.p.app]
kind = "sleep"

[pool.t]
workers = "thread"
max_children = 2
access_log = "{dir}/t.access.log"
access_format = "%n %p %P %s %{mili}d %{mili}w \"%{HTTP_X_TRACE}e\""

[pool.t.listen]
address = "unix:{dir}/t.sock"

[pool.t.app]
kind = "sleep"
"#,
    );
    let p_sock = server.path("p.sock");
    // A burst: 8 clients at once on 2 workers sleeping 200 ms — most wait in the kernel queue.
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let sock = p_sock.clone();
            std::thread::spawn(move || {
                request(&sock, &get_params("/sleep?ms=200", "/sleep", "192.0.2.7"))
            })
        })
        .collect();
    let answered = burst
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .inspect(|r| assert!(r.contains("slept 200 ms"), "{r}"))
        .count();
    assert_eq!(answered, 8);
    for _ in 0..10 {
        let r = request(&p_sock, &get_params("/sleep?ms=1", "/sleep", "192.0.2.8")).unwrap();
        assert!(r.contains("slept 1 ms"), "{r}");
    }
    let lines = wait_lines(&server.path("p.access.log"), 18);
    assert_eq!(
        lines.len(),
        18,
        "one line per request:\n{}",
        lines.join("\n")
    );
    // php-fpm's default format (its %t has no brackets), then the queue wait in µs.
    for line in &lines {
        let (head, rest) = line.split_once(" \"").unwrap_or_else(|| panic!("{line}"));
        let (client, time) = head.split_at("192.0.2.7 - - ".len());
        assert!(
            client == "192.0.2.7 - - " || client == "192.0.2.8 - - ",
            "{line}"
        );
        assert_eq!(time.len(), "10/Jan/2025:10:00:00 +0000".len(), "{line}");
        assert!(rest.starts_with("GET /sleep\" 200 "), "{line}");
    }
    let waits = queue_waits(&lines);
    assert!(
        waits.iter().all(Option::is_some),
        "every first request has a wait: {lines:?}"
    );
    let burst_waits: Vec<u64> = waits[..8].iter().flatten().copied().collect();
    let longest = burst_waits.iter().max().copied().unwrap_or(0);
    println!("queue waits of the burst (µs): {burst_waits:?}");
    // The last two of the burst waited behind three rounds of 200 ms.
    assert!(
        longest >= 400_000,
        "the burst's longest queue wait is {longest} µs: {lines:?}"
    );

    // Thread workers write from the master itself: %p and %P are both its pid.
    let t_sock = server.path("t.sock");
    for _ in 0..5 {
        let mut params = get_params("/sleep?ms=20", "/sleep", "192.0.2.9");
        params.push(("HTTP_X_TRACE".into(), "tr\"ace\n1".into()));
        request(&t_sock, &params).unwrap();
    }
    let lines = wait_lines(&server.path("t.access.log"), 5);
    assert_eq!(lines.len(), 5, "{lines:?}");
    let master = server.pid();
    for line in &lines {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            fields[..4],
            ["t", &master.to_string(), &master.to_string(), "200"],
            "{line}"
        );
        let took: f64 = fields[4].parse().unwrap();
        assert!((20.0..1000.0).contains(&took), "%{{mili}}d {took}: {line}");
        assert!(fields[5].parse::<f64>().is_ok(), "%{{mili}}w: {line}");
        // A header value cannot break the line or the quotes.
        assert_eq!(fields[6], "\"tr\\x22ace\\x0A1\"", "{line}");
    }
}

/// A site a www-data worker can serve: a world-readable document root and a runtime_dir it
/// can pass through, next to a log directory only root may enter.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir(&www).unwrap();
        std::fs::set_permissions(&www, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (name, code) in [
            (
                "ok.php",
                "<?php header('Content-Type: text/plain'); echo 'ok ', $_GET['x'] ?? '';",
            ),
            ("gone.php", "<?php http_response_code(404); echo 'gone';"),
        ] {
            std::fs::write(www.join(name), code).unwrap();
            std::fs::set_permissions(www.join(name), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o700)).unwrap();
        Site { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn www_data_php_workers_behind_nginx_log_through_the_master() {
    let site = Site::new();
    let config = format!(
        r#"
[global]
status_listen = ""
runtime_dir = "{base}/rt"

[pool.php]
workers = "process"
max_children = 2
user = "www-data"
access_log = "{base}/logs/php.access.log"
access_format = "%R %u %t \"%m %r%Q%q\" %s %f %{{mili}}d %{{kilo}}M %C%% %{{queue_wait}} %{{Content-Type}}o %{{HTTP_USER_AGENT}}e %n"

[pool.php.listen]
address = "unix:{{dir}}/php.sock"

[pool.php.app]
kind = "php"
php_cgi = "{php_cgi}"
document_root = "{base}/www"
"#,
        base = site.dir.path().display(),
        php_cgi = require("php-cgi").display(),
    );
    let server = Server::start(&config);
    let www = site.path("www");
    let nginx = Nginx::start(server.dir.path(), |port| {
        format!(
            r#"
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_pass unix:{sock};
        }}
    }}"#,
            www = www.display(),
            sock = server.path("php.sock").display()
        )
    });
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", nginx.port);
    let (status, body) = curl(&["-A", "probe/1.0"], &url("/ok.php?x=42"));
    assert_eq!(
        (status, String::from_utf8_lossy(&body).as_ref()),
        (200, "ok 42")
    );
    let (status, _) = curl(&["-A", "probe/1.0"], &url("/gone.php"));
    assert_eq!(status, 404);

    // The workers run as www-data, and the log directory is root's alone.
    let www_data = nix::unistd::User::from_name("www-data")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let uids: Vec<u32> = common::child_pids(server.pid())
        .iter()
        .filter_map(|p| std::fs::metadata(format!("/proc/{p}")).ok())
        .map(|m| m.uid())
        .collect();
    assert!(
        !uids.is_empty() && uids.iter().all(|&u| u == www_data),
        "worker uids {uids:?}"
    );

    let log = site.path("logs/php.access.log");
    let lines = wait_lines(&log, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let ok = &lines[0];
    let script = www.join("ok.php");
    assert!(ok.starts_with("127.0.0.1 - "), "%R %u: {ok}");
    let parts: Vec<&str> = ok.split('"').collect();
    assert_eq!(parts[1], "GET /ok.php?x=42", "%m %r%Q%q: {ok}");
    let fields: Vec<&str> = parts[2].trim_start().split(' ').collect();
    assert_eq!(fields[..2], ["200", &script.display().to_string()], "{ok}");
    let fields = &fields[2..];
    assert!(fields[0].parse::<f64>().unwrap() > 0.0, "%{{mili}}d: {ok}");
    assert!(fields[1].parse::<u64>().unwrap() > 0, "%{{kilo}}M: {ok}");
    let cpu = fields[2].strip_suffix('%').map(str::parse::<f64>);
    assert!(matches!(cpu, Some(Ok(_))), "%C%%: {ok}");
    assert!(fields[3].parse::<u64>().is_ok(), "%{{queue_wait}}: {ok}");
    assert_eq!(
        fields[4..],
        ["text/plain;charset=UTF-8", "probe/1.0", "php"],
        "{ok}"
    );
    let gone = &lines[1];
    assert!(gone.contains("\"GET /gone.php\" 404 "), "{gone}");

    // Made by the master as php-fpm makes it: root's, 0600 — the app cannot rewrite it.
    let meta = std::fs::metadata(&log).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
}

#[test]
fn a_bad_access_format_is_refused_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[pool.www]\naccess_log = \"a.log\"\naccess_format = \"%R %{mili}x\"\n",
    )
    .unwrap();
    let out = Command::new(FASTPM)
        .arg("check")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.toml:3:17: pool.www.access_format: %x is not a field"),
        "{stderr}"
    );
    std::fs::write(&config, "[global]\nlog_limit = 9000\n[pool.www]\n").unwrap();
    let out = Command::new(FASTPM)
        .arg("check")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:2:13: global.log_limit: must be at most 4000"),
        "{stderr}"
    );
    // And `fastpm check` shows the effective keys.
    std::fs::write(&config, "[pool.www]\naccess_log = \"a.log\"\n").unwrap();
    let out = Command::new(FASTPM)
        .arg("check")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let resolved = dir.path().join("a.log");
    for want in [
        format!("access_log = \"{}\"", resolved.display()),
        "access_format = '%R - %u %t \"%m %r\" %s %{queue_wait}'".to_string(),
        "log_limit = 1024".to_string(),
    ] {
        assert!(stdout.contains(&want), "{want} in:\n{stdout}");
    }
    assert!(
        lines_of(&resolved).is_empty() && !resolved.exists(),
        "check opens no log file"
    );
}
