//! The held-request settings (DESIGN.md §3, §8): `[global] broker` and `[pool.NAME.app]`
//! `history`, `hold_timeout`, `max_held` — read, defaulted, refused with file:line:column and
//! the key, shown by `fastpm check` in a form that loads back; and `kind = "longpoll"` accepted
//! by `check` and `run` (its worker app answers paths other than sub/pub with 404).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fastpm::config::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    load_str_with_base(
        text,
        ConfigSource::File("/etc/fastpm/x.toml".into()),
        Path::new("/etc/fastpm"),
    )
}

#[test]
fn the_keys_are_read_and_default_as_documented() {
    let c = load("[pool.a]\n[pool.a.app]\nkind = \"longpoll\"\n").unwrap();
    assert_eq!(c.global.broker, BrokerUrl::Memory);
    let app = &c.pools[0].app;
    assert_eq!(app.kind, AppKind::Longpoll);
    assert_eq!(
        (app.history, app.hold_timeout, app.max_held),
        (100, Duration::from_secs(55), 10_000)
    );

    let c = load(
        "[global]\nbroker = \"redis://10.1.2.3:7000/2\"\n[pool.a.app]\nkind = \"php\"\nhistory = 0\nhold_timeout = \"24h\"\nmax_held = 1\n",
    )
    .unwrap();
    assert_eq!(
        c.global.broker,
        BrokerUrl::Redis("redis://10.1.2.3:7000/2".into())
    );
    let app = &c.pools[0].app;
    assert_eq!(
        (app.history, app.hold_timeout, app.max_held),
        (0, Duration::from_secs(86_400), 1)
    );

    // A relative unix socket is relative to the config file, like every path.
    let c = load("[global]\nbroker = \"unix:run/redis.sock\"\n[pool.a]\n").unwrap();
    assert_eq!(
        c.global.broker.client_url(),
        Some("redis+unix:///etc/fastpm/run/redis.sock")
    );
    assert_eq!(
        c.global.broker.to_string(),
        "unix:/etc/fastpm/run/redis.sock"
    );
}

#[test]
fn mistakes_name_file_line_column_and_key() {
    // (text, "line:column: key", fragment of the message)
    let cases = [
        (
            "[global]\nbroker = \"kafka://k:9092\"\n[pool.a]\n",
            "2:10: global.broker",
            "unknown scheme; expected \"memory\", \"redis://HOST:PORT[/DB]\" or \"unix:PATH\"",
        ),
        (
            "[global]\nbroker = \"Memory\"\n[pool.a]\n",
            "2:10: global.broker",
            "unknown broker",
        ),
        (
            "[global]\nbroker = \"redis://h:99999\"\n[pool.a]\n",
            "2:10: global.broker",
            "port \"99999\"",
        ),
        (
            "[global]\nbroker = 6379\n[pool.a]\n",
            "2:10: global.broker",
            "invalid type",
        ),
        (
            "[pool.a.app]\nhistory = 100001\n",
            "2:11: pool.a.app.history",
            "must be from 0 to 100000 (it is 100001)",
        ),
        (
            "[pool.a.app]\nhistory = -1\n",
            "2:11: pool.a.app.history",
            "invalid value: integer `-1`",
        ),
        (
            "[pool.a.app]\nhold_timeout = \"0s\"\n",
            "2:16: pool.a.app.hold_timeout",
            "must be from 1s to 24h (it is \"0s\")",
        ),
        (
            "[pool.a.app]\nhold_timeout = \"25h\"\n",
            "2:16: pool.a.app.hold_timeout",
            "must be from 1s to 24h",
        ),
        (
            "[pool.a.app]\nhold_timeout = \"55\"\n",
            "2:16: pool.a.app.hold_timeout",
            "missing unit",
        ),
        (
            "[pool.a.app]\nmax_held = 0\n",
            "2:12: pool.a.app.max_held",
            "must be at least 1 (it is 0)",
        ),
        (
            "[pool.a.app]\nmax_hold = 5\n",
            "2:1: pool.a.app.max_hold",
            "unknown key `max_hold`, expected one of",
        ),
    ];
    for (text, where_, fragment) in cases {
        let err = load(text).expect_err(text);
        let line = err.to_string();
        assert!(
            line.starts_with(&format!("/etc/fastpm/x.toml:{where_}: ")),
            "{text:?}\n  got:  {line}\n  want: …:{where_}: …"
        );
        assert!(line.contains(fragment), "{text:?}: {line}");
        assert!(!line.contains('\n'), "{line:?}");
    }
}

#[test]
fn check_shows_them_and_the_rendering_loads_back() {
    let text = "[global]\nbroker = \"unix:redis.sock\"\n\n[pool.lp]\n[pool.lp.app]\nkind = \"longpoll\"\nhistory = 7\nhold_timeout = \"90s\"\nmax_held = 50000\n\n[pool.web]\nlisten = { address = \"127.0.0.1:9001\" }\n[pool.web.app]\nkind = \"hello\"\n";
    let config = load(text).unwrap();
    let rendered = render_effective(&config, None, None).unwrap();
    for line in [
        "broker = \"unix:/etc/fastpm/redis.sock\"",
        "kind = \"longpoll\"",
        "history = 7",
        "hold_timeout = \"90s\"",
        "max_held = 50000",
    ] {
        assert!(
            rendered.lines().any(|l| l.starts_with(line)),
            "no {line:?} in\n{rendered}"
        );
    }
    // A pool that holds nothing says the settings are not its own.
    assert!(
        rendered.contains("# used by kind = \"longpoll\" only"),
        "{rendered}"
    );
    let reloaded = load_str_with_base(&rendered, config.source.clone(), Path::new("/x"))
        .unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    assert_eq!(reloaded.global.broker, config.global.broker);
    for (a, b) in reloaded.pools.iter().zip(&config.pools) {
        assert_eq!(a.app, b.app);
    }
}

#[test]
fn a_longpoll_pool_is_checked_and_runs() {
    let config = r#"
[global]
status_listen = "127.0.0.1:0"
runtime_dir = "{dir}/rt"

[pool.lp]
workers = "thread"
max_children = 1

[pool.lp.listen]
address = "unix:{dir}/lp.sock"

[pool.lp.app]
kind = "longpoll"
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fastpm.toml");
    std::fs::write(&path, config.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let out = Command::new(common::FASTPM)
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("kind = \"longpoll\""));

    let server = common::Server::start(config);
    let socket = format!("unix:{}", server.path("lp.sock").display());
    // Served by the longpoll app (held requests themselves: tests/held_requests.rs).
    let response = common::raw::get(&socket, "/elsewhere", "");
    let text = response.text();
    assert!(text.starts_with("Status: 404 Not Found\r\n"), "{text}");
}
