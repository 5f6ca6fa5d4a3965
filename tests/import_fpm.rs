//! `fastpm import-fpm`: Debian's real php-fpm configuration converts, passes `fastpm check`, and
//! serves PHP once only its listen address and private paths are moved to a temporary
//! directory; every php-fpm key the converter does not map is kept as a comment; mapped keys
//! land where DESIGN.md §3 says; bad input exits 2 naming file:line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{raw, Server, FASTPM};

const DEBIAN_CONF: &str = "/etc/php/8.2/fpm/php-fpm.conf";

fn import(files: &[&Path]) -> Output {
    Command::new(FASTPM)
        .arg("import-fpm")
        .args(files)
        .output()
        .expect("run fastpm import-fpm")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn debian_php_fpm_conf_converts_checks_and_serves_hello() {
    let out = import(&[Path::new(DEBIAN_CONF)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let toml = stdout(&out);
    assert!(toml.contains("/etc/php/8.2/fpm/pool.d/www.conf"), "{toml}");
    assert!(toml.contains("[pool.www]"), "{toml}");
    assert!(
        toml.contains("address = \"unix:/run/php/php8.2-fpm.sock\""),
        "{toml}"
    );

    let dir = tempfile::tempdir().unwrap();
    let converted = dir.path().join("converted.toml");
    std::fs::write(&converted, &toml).unwrap();
    let check = Command::new(FASTPM)
        .arg("check")
        .arg("-c")
        .arg(&converted)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "check: {}\n{toml}",
        stderr(&check)
    );

    // Serve the same pool: only the listen address and private paths move to the test's
    // directory (the status listener to a kernel-picked port), and document_root to the repo's
    // examples. Workers still run as www-data, with Debian's settings.
    let mut doc: toml_edit::DocumentMut = toml.parse().expect("the output is TOML");
    doc["global"]["runtime_dir"] = toml_edit::value("{dir}/rt");
    doc["global"]["pid_file"] = toml_edit::value("{dir}/fastpm.pid");
    doc["global"]["status_listen"] = toml_edit::value("127.0.0.1:0");
    doc["pool"]["www"]["listen"]["address"] = toml_edit::value("unix:{dir}/www.sock");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("php-examples");
    doc["pool"]["www"]["app"]["document_root"] = toml_edit::value(examples.to_str().unwrap());
    let server = Server::start(&doc.to_string());
    let socket = format!("unix:{}", server.path("www.sock").display());
    let response = raw::get(&socket, "/hello.php", "");
    assert!(
        response.text().contains("Status: 200") || !response.text().contains("Status:"),
        "{}",
        response.text()
    );
    assert!(
        response.body().contains("Hello"),
        "{}\nlog:\n{}",
        response.text(),
        server.log()
    );
}

/// A php-fpm configuration with every key the converter does not carry over.
const UNMAPPED_GLOBAL: &[&str] = &[
    "error_log = /var/log/fpm.log",
    "syslog.facility = daemon",
    "syslog.ident = php-fpm",
    "log_limit = 4096",
    "log_buffering = no",
    "emergency_restart_threshold = 10",
    "emergency_restart_interval = 1m",
    "process.max = 128",
    "process.priority = -19",
    "daemonize = no",
    "rlimit_files = 1024",
    "rlimit_core = 0",
    "events.mechanism = epoll",
    "systemd_interval = 10",
    "no_such_global = 1",
];

const UNMAPPED_POOL: &[&str] = &[
    "listen.acl_users = nginx",
    "listen.acl_groups = www",
    "listen.setfib = 1",
    "pm.max_spawn_rate = 32",
    "pm.status_listen = 127.0.0.1:9001",
    "request_slowlog_trace_depth = 20",
    "request_terminate_timeout_track_finished = yes",
    "rlimit_files = 1024",
    "rlimit_core = unlimited",
    "chroot = /srv/jail/$pool",
    "catch_workers_output = yes",
    "decorate_workers_output = no",
    "access.suppress_path[] = /ping",
    "prefix = /srv",
    "process.priority = -19",
    "process.dumpable = yes",
    "apparmor_hat = php",
    "env[PATH] = $PATH",
    "listen.backlog = -1",
    "listen.allowed_clients = 127.0.0.1",
    "pm.min_spare_servers = 1",
    "no_such_pool_key = 1",
];

#[test]
fn every_key_not_carried_over_is_kept_as_a_comment() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("php-fpm.conf");
    let text = format!(
        "[global]\n{}\n[app]\nlisten = /run/app.sock\npm = static\npm.max_children = 3\n{}\n",
        UNMAPPED_GLOBAL.join("\n"),
        UNMAPPED_POOL.join("\n")
    );
    std::fs::write(&conf, text).unwrap();
    let out = import(&[&conf]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let toml = stdout(&out);
    for line in UNMAPPED_GLOBAL.iter().chain(UNMAPPED_POOL) {
        let key = line.split(" = ").next().unwrap();
        let kept = toml.lines().any(|l| {
            l.starts_with("# php-fpm ")
                && l.contains(&format!(" {key} = "))
                && l.contains("not carried over: ")
        });
        assert!(kept, "{key} is not kept as a comment:\n{toml}");
    }
    // $pool is expanded in what the comment cites.
    assert!(toml.contains("chroot = /srv/jail/app"), "{toml}");
    // Still a config fastpm reads (document_root from the chroot is only a path to set).
    let parsed: toml::Table = toml.parse().expect("TOML");
    assert!(parsed["pool"]["app"]["listen"]
        .get("allowed_clients")
        .is_none());
}

/// `text` (one php-fpm line in a section) converts to TOML with the line `want`.
fn assert_converts(text: &str, want: &str) {
    let doc = fastpm::import_fpm::ini::read_str(text, Path::new("/etc/fpm.conf")).unwrap();
    let toml = fastpm::import_fpm::convert::convert(&doc).unwrap();
    assert!(
        toml.lines().any(|l| l == want),
        "{text:?} should give {want}:\n{toml}"
    );
    toml.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{text:?}: not TOML: {e}\n{toml}"));
}

/// php-fpm lines and the fastpm lines they become.
#[test]
fn mapped_keys_land_where_design_says() {
    let table: &[(&str, &str)] = &[
        ("pm = ondemand", "pm = \"ondemand\""),
        ("pm.max_children = 12", "max_children = 12"),
        ("pm.process_idle_timeout = 30", "idle_timeout = \"30s\""),
        ("pm.max_requests = 500", "max_requests = 500"),
        ("request_terminate_timeout = 5m", "request_timeout = \"5m\""),
        ("request_slowlog_timeout = 2", "slow_request = \"2s\""),
        (
            "pm.status_path = /fpm-status",
            "status_path = \"/fpm-status\"",
        ),
        ("ping.path = /ping", "ping_path = \"/ping\""),
        (
            "ping.response = \"ok; fine\"",
            "ping_response = \"ok; fine\"",
        ),
        ("user = www-data", "user = \"www-data\""),
        ("listen = 9000", "address = \"[::]:9000\""),
        ("listen.backlog = 4096", "backlog = 4096"),
        (
            "listen.allowed_clients = 127.0.0.1, ::1",
            "allowed_clients = [\"127.0.0.1\", \"::1\"]",
        ),
        ("listen.mode = 0666", "mode = \"0666\""),
        ("listen.owner = nginx", "owner = \"nginx\""),
        (
            "security.limit_extensions = .php .php8",
            "limit_extensions = [\".php\", \".php8\"]",
        ),
        ("clear_env = no", "clear_env = false"),
        (
            "php_admin_value[memory_limit] = 64M",
            "memory_limit = \"64M\"",
        ),
        (
            "php_value[error_log] = /var/log/$pool.err",
            "error_log = \"/var/log/p.err\"",
        ),
        ("php_flag[display_errors] = off", "display_errors = \"0\""),
        (
            "php_admin_flag[opcache.enable] = on",
            "\"opcache.enable\" = \"1\"",
        ),
        ("env[APP_ENV] = prod", "APP_ENV = \"prod\""),
        ("chdir = /srv/site", "document_root = \"/srv/site\""),
        (
            "access.log = /var/log/$pool.access.log",
            "access_log = \"/var/log/p.access.log\"",
        ),
        (
            "access.format = \"%R - %u %t \\\"%m %r%Q%q\\\" %s %{mili}d\"",
            "access_format = '%R - %u %t \"%m %r%Q%q\" %s %{mili}d'",
        ),
        (
            "slowlog = /var/log/$pool.slow",
            "slowlog = \"/var/log/p.slow\"",
        ),
    ];
    for (fpm, want) in table {
        assert_converts(&format!("[p]\n{fpm}\n"), want);
    }
    let global: &[(&str, &str)] = &[
        ("log_level = warning", "log_level = \"warn\""),
        ("log_level = notice", "log_level = \"info\""),
        ("pid = /run/php-fpm.pid", "pid_file = \"/run/php-fpm.pid\""),
        (
            "process_control_timeout = 10s",
            "shutdown_timeout = \"10s\"",
        ),
        ("process_control_timeout = 0", "shutdown_timeout = \"30s\""),
    ];
    for (fpm, want) in global {
        assert_converts(&format!("[global]\n{fpm}\n"), want);
    }
}

#[test]
fn bad_input_exits_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("pool.d")).unwrap();
    let main = d.join("php-fpm.conf");
    std::fs::write(&main, "[global]\ninclude = pool.d/*.conf\n").unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "[www]\npm = sometimes\n",
            "www.conf:2: pm: expected static, dynamic or ondemand",
            "",
        ),
        (
            "[www]\n\nrequest_terminate_timeout = 5x\n",
            "www.conf:3: request_terminate_timeout: unknown unit",
            "",
        ),
        (
            "[www]\nlisten.mode = 0999\n",
            "www.conf:2: listen.mode: invalid mode",
            "",
        ),
        (
            "[www]\nuser www-data\n",
            "www.conf:2: expected `key = value`",
            "",
        ),
        ("[www\n", "www.conf:1: section header", ""),
    ];
    for (pool, want, _) in cases {
        std::fs::write(d.join("pool.d/www.conf"), pool).unwrap();
        let out = import(&[&main]);
        assert_eq!(out.status.code(), Some(2), "{pool}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("fastpm: ") && err.contains(want),
            "{pool}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let missing: PathBuf = d.join("nope.conf");
    let out = import(&[&missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
    let out = Command::new(FASTPM).arg("import-fpm").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "no file is a usage error");
}
