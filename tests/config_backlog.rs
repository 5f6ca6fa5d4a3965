//! Backlog precedence (`--backlog` > `LISTENQ` > config > 511) and the `fastpm check`
//! rendering of the effective settings.

use std::path::Path;

use fastpm::config::BacklogSource::*;
use fastpm::config::*;

#[test]
fn precedence_table() {
    type Row = (
        Option<u32>,
        Option<&'static str>,
        Option<u32>,
        Result<(u32, BacklogSource), BacklogError>,
    );
    let listenq = |v: &str| Err(BacklogError::Listenq { value: v.into() });
    let table: Vec<Row> = vec![
        (None, None, None, Ok((511, Default))),
        (None, None, Some(1024), Ok((1024, Config))),
        (None, Some("2000"), None, Ok((2000, ListenqEnv))),
        (None, Some("2000"), Some(1024), Ok((2000, ListenqEnv))),
        (Some(64), None, None, Ok((64, Cli))),
        (Some(64), None, Some(1024), Ok((64, Cli))),
        (Some(64), Some("2000"), None, Ok((64, Cli))),
        (Some(64), Some("2000"), Some(1024), Ok((64, Cli))),
        // --backlog wins even over a broken LISTENQ (it is never read).
        (Some(64), Some("abc"), Some(1024), Ok((64, Cli))),
        (None, Some("1"), None, Ok((1, ListenqEnv))),
        (None, Some("65535"), None, Ok((65535, ListenqEnv))),
        (None, Some("2147483647"), None, Ok((2147483647, ListenqEnv))),
        (None, Some("abc"), Some(1024), listenq("abc")),
        (None, Some("0"), None, listenq("0")),
        (None, Some(""), None, listenq("")),
        (None, Some("-5"), None, listenq("-5")),
        (None, Some("+5"), None, listenq("+5")),
        (None, Some(" 5"), None, listenq(" 5")),
        (None, Some("1.5"), None, listenq("1.5")),
        (None, Some("2147483648"), None, listenq("2147483648")),
        (
            None,
            Some("99999999999999999999"),
            None,
            listenq("99999999999999999999"),
        ),
        (Some(0), None, None, Err(BacklogError::Cli { value: 0 })),
        (
            Some(u32::MAX),
            None,
            None,
            Err(BacklogError::Cli { value: u32::MAX }),
        ),
    ];
    for (cli, env, config, want) in table {
        assert_eq!(
            effective_backlog(cli, env, config),
            want,
            "cli {cli:?} LISTENQ {env:?} config {config:?}"
        );
    }
    assert_eq!(DEFAULT_BACKLOG, 511);
}

#[test]
fn backlog_errors_name_the_source_and_value() {
    let err = effective_backlog(None, Some("abc"), None).unwrap_err();
    assert_eq!(err.to_string(), "LISTENQ=\"abc\" is not a valid listen backlog: expected a positive integer up to 2147483647");
    let err = effective_backlog(None, Some("0"), None).unwrap_err();
    assert!(err.to_string().starts_with("LISTENQ=\"0\" "), "{err}");
    let err = effective_backlog(Some(0), None, None).unwrap_err();
    assert!(err.to_string().starts_with("--backlog 0 "), "{err}");
}

fn two_pools() -> fastpm::config::Config {
    let text = "[pool.a.listen]\naddress = '127.0.0.1:9000'\nbacklog = 1024\n[pool.b.listen]\naddress = 'unix:b.sock'\n";
    load_str_with_base(
        text,
        ConfigSource::File("/etc/fastpm/x.toml".into()),
        Path::new("/etc/fastpm"),
    )
    .unwrap()
}

/// The `backlog = ...` line of each pool's listen table, in order.
fn backlog_lines(rendered: &str) -> Vec<String> {
    rendered
        .lines()
        .filter(|l| l.starts_with("backlog = "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn render_shows_effective_backlog_and_source() {
    let config = two_pools();
    let cases: &[(Option<u32>, Option<&str>, [&str; 2])] = &[
        (
            None,
            None,
            [
                "backlog = 1024 # from config",
                "backlog = 511 # default (nothing set)",
            ],
        ),
        (
            Some(2000),
            None,
            [
                "backlog = 2000 # from --backlog (config says 1024)",
                "backlog = 2000 # from --backlog",
            ],
        ),
        (
            None,
            Some("300"),
            [
                "backlog = 300 # from LISTENQ (config says 1024)",
                "backlog = 300 # from LISTENQ",
            ],
        ),
        (
            Some(7),
            Some("300"),
            [
                "backlog = 7 # from --backlog (config says 1024)",
                "backlog = 7 # from --backlog",
            ],
        ),
    ];
    for (cli, env, want) in cases {
        let rendered = render_effective(&config, *cli, *env).unwrap();
        assert_eq!(
            backlog_lines(&rendered),
            want,
            "cli {cli:?} env {env:?}\n{rendered}"
        );
    }
    assert_eq!(
        render_effective(&config, None, Some("abc")).unwrap_err(),
        BacklogError::Listenq {
            value: "abc".into()
        }
    );
}

#[test]
fn render_shows_resolved_addresses_and_every_key() {
    let rendered = render_effective(&two_pools(), None, None).unwrap();
    assert!(
        rendered.contains("address = \"127.0.0.1:9000\""),
        "{rendered}"
    );
    assert!(
        rendered.contains("address = \"unix:/etc/fastpm/b.sock\""),
        "{rendered}"
    );
    assert!(
        rendered.starts_with("# fastpm: effective settings of /etc/fastpm/x.toml\n"),
        "{rendered}"
    );
    for header in [
        "[global]",
        "[pool.a]",
        "[pool.a.listen]",
        "[pool.a.app]",
        "[pool.a.overload]",
        "[pool.b]",
        "[pool.b.overload]",
    ] {
        assert!(
            rendered.lines().any(|l| l == header),
            "missing {header}\n{rendered}"
        );
    }
    // Every key of the embedded default (which shows them all) appears in each pool's output.
    let keys: Vec<&str> = EMBEDDED_DEFAULT
        .lines()
        .filter_map(|l| {
            l.trim_start_matches(['#', ' '])
                .split_once(" = ")
                .map(|(k, _)| k)
        })
        .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    assert!(keys.len() >= 40, "{keys:?}");
    for key in keys {
        assert!(
            rendered
                .lines()
                .any(|l| l.starts_with(&format!("{key} = "))),
            "missing {key}\n{rendered}"
        );
    }
}

/// The rendering is valid TOML that loads back to the same configuration (backlog aside, which
/// the rendering makes explicit).
#[test]
fn render_loads_back_unchanged() {
    let mut configs = vec![load_embedded().unwrap(), two_pools()];
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/examples");
    for name in ["unix-socket.toml", "two-pools.toml", "exec.toml"] {
        configs.push(load_file(&examples.join(name)).unwrap());
    }
    let tricky = "[global]\nstatus_listen = ''\npid_file = 'p \"q\".pid'\n[pool.x]\nping_path = ''\nping_response = 'a\\tb \"c\"'\n[pool.x.listen]\naddress = '[::1]:9001'\nallowed_clients = ['::1', '10.0.0.1']\n[pool.x.app]\nkind = 'echo'\nini = { 'a.b' = 'c' }\nenv = { K = 'v=w' }\n[pool.x.overload]\npolicy = 'codel'\ntarget = '1500ms'\n";
    configs.push(
        load_str_with_base(
            tricky,
            ConfigSource::File("/t/x.toml".into()),
            Path::new("/t"),
        )
        .unwrap(),
    );
    for config in configs {
        let rendered = render_effective(&config, None, None).unwrap();
        let reloaded = load_str_with_base(
            &rendered,
            config.source.clone(),
            Path::new("/unused-all-paths-absolute"),
        )
        .unwrap_or_else(|e| panic!("{e}\n{rendered}"));
        let mut want = config.clone();
        // Rendered, runtime_dir is written out: loaded back, it comes from the file.
        want.global.runtime_dir_source = fastpm::config::RuntimeDirSource::Config;
        for pool in &mut want.pools {
            pool.listen.backlog = Some(
                effective_backlog(None, None, pool.listen.backlog)
                    .unwrap()
                    .0,
            );
        }
        assert_eq!(reloaded, want, "\n{rendered}");
    }
}
