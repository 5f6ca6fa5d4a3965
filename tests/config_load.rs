//! Loading real configs: the embedded default, the shipped examples, DESIGN.md §3's defaults,
//! file order of pools, relative path resolution, and finding php-cgi.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fastpm::config::*;
use fastpm::listen::ListenAddress;

fn load_at(text: &str, base: &str) -> Config {
    load_str_with_base(
        text,
        ConfigSource::File(PathBuf::from(base).join("x.toml")),
        Path::new(base),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn embedded_default_loads_as_documented() {
    let config = load_embedded().unwrap_or_else(|e| panic!("{e}"));
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(config.source, ConfigSource::Embedded);
    assert_eq!(
        config.global.status_listen,
        Some("127.0.0.1:9180".parse::<SocketAddr>().unwrap())
    );
    // The tests run as root, like the master (the default for other users: config::runtime_dir).
    assert_eq!(config.global.runtime_dir, PathBuf::from("/run/fastpm"));
    assert_eq!(config.global.log_level, LogLevel::Info);
    assert_eq!(config.global.pid_file, None);
    assert_eq!(config.pools.len(), 1);
    let www = &config.pools[0];
    assert_eq!(www.name, "www");
    assert_eq!(
        www.listen.address,
        ListenAddress::Tcp("127.0.0.1:9000".parse().unwrap())
    );
    assert_eq!(
        www.listen.backlog, None,
        "the default's backlog must come from the 511 default"
    );
    assert_eq!(www.workers, WorkerKind::Thread);
    assert_eq!(www.pm, PmKind::Static);
    assert_eq!(www.max_children, 4);
    assert_eq!(www.app.kind, AppKind::Php);
    assert_eq!(www.app.document_root, cwd.join("php-examples"));
    assert_eq!(www.app.php_cgi, "php-cgi");
    assert_eq!(config.pool("www"), Some(www));
}

#[test]
fn embedded_default_mentions_every_key() {
    // The default file is the user's manual: every key of the schema appears in it.
    let keys = [
        "log_level",
        "log_format",
        "status_listen",
        "runtime_dir",
        "shutdown_timeout",
        "pid_file",
        "error_log",
        "log_limit",
        "access_log",
        "access_format",
        "slowlog",
        "workers",
        "accept_lock",
        "pm",
        "max_children",
        "start_servers",
        "min_spare_servers",
        "max_spare_servers",
        "idle_timeout",
        "max_requests",
        "max_connections",
        "request_timeout",
        "slow_request",
        "client_timeout",
        "max_params",
        "max_body",
        "status_path",
        "ping_path",
        "ping_response",
        "user",
        "group",
        "address",
        "backlog",
        "mode",
        "owner",
        "allowed_clients",
        "kind",
        "document_root",
        "php_cgi",
        "php_children",
        "limit_extensions",
        "ini",
        "env",
        "clear_env",
        "command",
        "policy",
        "max_queue_wait",
        "target",
        "interval",
    ];
    for key in keys {
        let written = EMBEDDED_DEFAULT.lines().any(|l| {
            l.trim_start_matches(['#', ' '])
                .starts_with(&format!("{key} = "))
        });
        assert!(written, "conf/fastpm.toml does not show `{key} = ...`");
    }
}

#[test]
fn shipped_examples_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            load_file(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 3, "expected the examples, found {seen}");
    let two = load_file(&dir.join("two-pools.toml")).unwrap();
    let names: Vec<&str> = two.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["php", "events"]);
    assert_eq!(
        two.pools[1].listen.address,
        ListenAddress::Unix(dir.join("events.sock"))
    );
    assert_eq!(
        two.pools[0].app.document_root,
        Path::new(env!("CARGO_MANIFEST_DIR")).join("php-examples")
    );
}

#[test]
fn minimal_pool_gets_design_defaults() {
    let config = load_at("[pool.www]\n", "/etc/fastpm");
    let g = &config.global;
    assert_eq!(g.log_level, LogLevel::Info);
    assert_eq!(g.log_format, LogFormat::Text);
    assert_eq!(g.status_listen, Some("127.0.0.1:9180".parse().unwrap()));
    assert_eq!(g.runtime_dir, PathBuf::from("/run/fastpm"));
    assert_eq!(g.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(g.pid_file, None);
    assert_eq!(g.broker, fastpm::config::BrokerUrl::Memory);
    let p = &config.pools[0];
    let want = PoolConfig {
        name: "www".into(),
        workers: WorkerKind::Process,
        // Not DESIGN §3's "mutex": changed from the lock benchmark (docs/BENCHMARKS.md).
        accept_lock: AcceptLock::None,
        pm: PmKind::Static,
        max_children: 4,
        start_servers: 2,
        min_spare_servers: 1,
        max_spare_servers: 3,
        idle_timeout: Duration::from_secs(10),
        max_requests: 0,
        max_connections: 1,
        request_timeout: Duration::ZERO,
        slow_request: Duration::ZERO,
        client_timeout: Duration::from_secs(60),
        max_params: 1 << 20,
        max_body: 128 << 20,
        // Off unless configured, as php-fpm (a pool's socket is reachable by local users).
        status_path: None,
        ping_path: None,
        ping_response: "pong".into(),
        user: None,
        group: None,
        listen: ListenConfig {
            address: ListenAddress::Unix("/run/fastpm/www.sock".into()),
            backlog: None,
            mode: 0o660,
            owner: None,
            group: None,
            allowed_clients: vec![],
        },
        app: AppConfig {
            kind: AppKind::Php,
            document_root: "/etc/fastpm/php-examples".into(),
            php_cgi: "php-cgi".into(),
            php_children: PhpChildren::Shared,
            php_ini: fastpm::config::PhpIni::Search,
            limit_extensions: vec![".php".into()],
            ini: BTreeMap::new(),
            env: BTreeMap::new(),
            clear_env: true,
            command: vec![],
            history: 100,
            hold_timeout: Duration::from_secs(55),
            max_held: 10_000,
        },
        overload: OverloadConfig {
            policy: OverloadPolicy::None,
            max_queue_wait: Duration::ZERO,
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
        },
        // No access log, php-fpm's format plus the queue wait, slow requests in the error log.
        logs: PoolLogs {
            access_log: None,
            access_format: "%R - %u %t \"%m %r\" %s %{queue_wait}".into(),
            slowlog: None,
        },
    };
    assert_eq!(p, &want);
    assert_eq!(
        g.logs,
        GlobalLogs {
            error_log: None,
            log_limit: 1024
        }
    );
}

#[test]
fn every_key_is_read() {
    let text = r#"
[global]
log_level = "debug"
log_format = "json"
status_listen = ""
runtime_dir = "run"
shutdown_timeout = "2m"
pid_file = "fastpm.pid"
error_log = "log/fastpm.log"
log_limit = 2048

[pool.api]
workers = "thread"
accept_lock = "flock"
pm = "dynamic"
max_children = 10
start_servers = 3
min_spare_servers = 2
max_spare_servers = 5
idle_timeout = "1h"
max_requests = 1000
max_connections = 64
request_timeout = "30s"
slow_request = "500ms"
client_timeout = "5s"
max_params = "64K"
max_body = "2G"
status_path = "/fpm-status"
ping_path = "/health"
ping_response = "ok"
user = "www-data"
group = "www-data"
access_log = "log/api.access.log"
access_format = "%R %{mili}d %{queue_wait}"
slowlog = "/var/log/api.slow.log"

[pool.api.listen]
address = "unix:sock/api.sock"
backlog = 2048
mode = "0600"
owner = "nginx"
group = "nginx"

[pool.api.app]
kind = "exec"
document_root = "../srv"
php_cgi = "/usr/bin/php-cgi8.2"
limit_extensions = [".php", ".phtml"]
ini = { memory_limit = "64M", display_errors = false, max_execution_time = 30 }
env = { APP_ENV = "test" }
clear_env = false
command = ["./app", "--fcgi"]

[pool.api.overload]
policy = "deadline"
max_queue_wait = "250ms"
target = "10ms"
interval = "1s"
"#;
    let config = load_at(text, "/etc/fastpm");
    let g = &config.global;
    assert_eq!(
        (g.log_level, g.log_format, g.status_listen),
        (LogLevel::Debug, LogFormat::Json, None)
    );
    assert_eq!(g.runtime_dir, PathBuf::from("/etc/fastpm/run"));
    assert_eq!(g.shutdown_timeout, Duration::from_secs(120));
    assert_eq!(g.pid_file, Some(PathBuf::from("/etc/fastpm/fastpm.pid")));
    assert_eq!(
        g.logs,
        GlobalLogs {
            error_log: Some("/etc/fastpm/log/fastpm.log".into()),
            log_limit: 2048
        }
    );
    let p = &config.pools[0];
    assert_eq!(
        p.logs,
        PoolLogs {
            access_log: Some("/etc/fastpm/log/api.access.log".into()),
            access_format: "%R %{mili}d %{queue_wait}".into(),
            slowlog: Some("/var/log/api.slow.log".into()),
        }
    );
    assert_eq!(
        (p.workers, p.accept_lock, p.pm),
        (WorkerKind::Thread, AcceptLock::Flock, PmKind::Dynamic)
    );
    assert_eq!(
        (
            p.max_children,
            p.start_servers,
            p.min_spare_servers,
            p.max_spare_servers
        ),
        (10, 3, 2, 5)
    );
    assert_eq!(
        (p.idle_timeout, p.max_requests, p.max_connections),
        (Duration::from_secs(3600), 1000, 64)
    );
    assert_eq!(
        (p.request_timeout, p.slow_request, p.client_timeout),
        (
            Duration::from_secs(30),
            Duration::from_millis(500),
            Duration::from_secs(5)
        )
    );
    assert_eq!((p.max_params, p.max_body), (64 << 10, 2 << 30));
    assert_eq!(
        (
            p.status_path.as_deref(),
            p.ping_path.as_deref(),
            p.ping_response.as_str()
        ),
        (Some("/fpm-status"), Some("/health"), "ok")
    );
    assert_eq!(
        (p.user.as_deref(), p.group.as_deref()),
        (Some("www-data"), Some("www-data"))
    );
    let l = &p.listen;
    assert_eq!(
        l.address,
        ListenAddress::Unix("/etc/fastpm/sock/api.sock".into())
    );
    assert_eq!(
        (l.backlog, l.mode, l.owner.as_deref(), l.group.as_deref()),
        (Some(2048), 0o600, Some("nginx"), Some("nginx"))
    );
    let a = &p.app;
    assert_eq!(a.kind, AppKind::Exec);
    assert_eq!(a.document_root, PathBuf::from("/etc/srv"));
    assert_eq!(a.php_cgi, "/usr/bin/php-cgi8.2");
    assert_eq!(a.limit_extensions, [".php", ".phtml"]);
    let ini: Vec<(&str, &str)> = a
        .ini
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        ini,
        [
            ("display_errors", "0"),
            ("max_execution_time", "30"),
            ("memory_limit", "64M")
        ]
    );
    assert_eq!(a.env.get("APP_ENV").map(String::as_str), Some("test"));
    assert!(!a.clear_env);
    assert_eq!(a.command, ["./app", "--fcgi"]);
    let o = &p.overload;
    assert_eq!(o.policy, OverloadPolicy::Deadline);
    assert_eq!(
        (o.max_queue_wait, o.target, o.interval),
        (
            Duration::from_millis(250),
            Duration::from_millis(10),
            Duration::from_secs(1)
        )
    );
}

#[test]
fn pools_keep_file_order() {
    let text = "pool.beta.max_children = 1\n[pool.zeta]\n[pool.alpha]\n[pool.mid]\n";
    let config = load_at(text, "/");
    let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["beta", "zeta", "alpha", "mid"]);
}

#[test]
fn relative_paths_follow_the_config_file() {
    let text = "[global]\nruntime_dir = 'run'\npid_file = './fastpm.pid'\n[pool.www.listen]\naddress = 'unix:../sockets/www.sock'\n[pool.www.app]\ndocument_root = 'htdocs'\n";
    let config = load_at(text, "/srv/site/conf");
    assert_eq!(
        config.global.runtime_dir,
        PathBuf::from("/srv/site/conf/run")
    );
    assert_eq!(
        config.global.pid_file,
        Some(PathBuf::from("/srv/site/conf/fastpm.pid"))
    );
    assert_eq!(
        config.pools[0].listen.address,
        ListenAddress::Unix("/srv/site/sockets/www.sock".into())
    );
    assert_eq!(
        config.pools[0].app.document_root,
        PathBuf::from("/srv/site/conf/htdocs")
    );

    // Absolute paths are kept; the default socket follows the (resolved) runtime_dir.
    let text = "[global]\nruntime_dir = 'rt'\n[pool.www.app]\ndocument_root = '/var/www'\n";
    let config = load_at(text, "/srv");
    assert_eq!(config.pools[0].app.document_root, PathBuf::from("/var/www"));
    assert_eq!(
        config.pools[0].listen.address,
        ListenAddress::Unix("/srv/rt/www.sock".into())
    );

    // base_dir: a file's own directory made absolute; the embedded default uses the cwd.
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        base_dir(&ConfigSource::File("conf/x.toml".into())).unwrap(),
        cwd.join("conf")
    );
    assert_eq!(base_dir(&ConfigSource::File("x.toml".into())).unwrap(), cwd);
    assert_eq!(
        base_dir(&ConfigSource::File("/etc/fastpm/x.toml".into())).unwrap(),
        PathBuf::from("/etc/fastpm")
    );
    assert_eq!(base_dir(&ConfigSource::Embedded).unwrap(), cwd);

    // load_file resolves against the file's directory.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.toml");
    std::fs::write(&file, "[pool.www.listen]\naddress = 'unix:www.sock'\n").unwrap();
    let config = load_file(&file).unwrap();
    assert_eq!(config.source, ConfigSource::File(file.clone()));
    assert_eq!(
        config.pools[0].listen.address,
        ListenAddress::Unix(dir.path().join("www.sock"))
    );
}

#[test]
fn finds_php_cgi_on_a_search_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let exe = bin.join("php-cgi");
    std::fs::write(&exe, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plain = bin.join("not-exec");
    std::fs::write(&plain, "").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();

    let search = std::env::join_paths([dir.path().join("missing"), bin.clone()]).unwrap();
    assert_eq!(find_executable("php-cgi", Some(&search)), Some(exe.clone()));
    assert_eq!(find_executable("not-exec", Some(&search)), None);
    assert_eq!(
        find_executable("bin", Some(dir.path().as_os_str())),
        None,
        "a directory is not a program"
    );
    assert_eq!(find_executable("php-cgi", None), None);
    assert_eq!(find_executable("", Some(&search)), None);
    // With a slash, the name is a path and PATH is not searched.
    assert_eq!(
        find_executable(exe.to_str().unwrap(), None),
        Some(exe.clone())
    );
    assert_eq!(
        find_executable(plain.to_str().unwrap(), Some(&search)),
        None
    );
    // The real PATH: /bin/sh exists on every machine this runs on.
    assert_eq!(php_cgi_on_path("/bin/sh"), Some(PathBuf::from("/bin/sh")));
    assert_eq!(php_cgi_on_path("fastpm-no-such-program-here"), None);
}
