//! Every kind of config mistake is refused with `file:line:column: key: message` on one line,
//! pointing at the right place. Positions in these tables were counted by hand.

use std::path::Path;

use fastpm::config::ConfigErrorKind::{self, *};
use fastpm::config::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    load_str_with_base(
        text,
        ConfigSource::File("conf/x.toml".into()),
        Path::new("/base"),
    )
}

/// (config text, "line:column: key", kind, fragment of the message)
type Case = (&'static str, &'static str, ConfigErrorKind, &'static str);

fn check(cases: &[Case]) {
    for (text, where_, kind, fragment) in cases {
        let err = load(text).expect_err(text);
        let line = err.to_string();
        assert!(
            line.starts_with(&format!("conf/x.toml:{where_}: ")),
            "for {text:?}\n  got:  {line}\n  want: conf/x.toml:{where_}: ..."
        );
        assert_eq!(err.kind, *kind, "for {text:?}: {line}");
        assert!(
            line.contains(fragment),
            "for {text:?}: {line}\n  missing {fragment:?}"
        );
        assert!(!line.contains('\n'), "one line: {line:?}");
        assert_eq!(
            line,
            format!(
                "{}:{}:{}: {}: {}",
                err.file, err.line, err.column, err.key, err.message
            )
        );
    }
}

#[test]
fn the_documented_example_line() {
    let err = load("[pool.www]\npm = \"dynamc\"\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "conf/x.toml:2:6: pool.www.pm: unknown value \"dynamc\", expected one of static, dynamic, ondemand"
    );
    assert_eq!(
        (err.line, err.column, err.key.as_str()),
        (2, 6, "pool.www.pm")
    );
}

#[test]
fn unknown_keys_at_every_level() {
    check(&[
        (
            "foo = 1\n[pool.www]\n",
            "1:1: foo",
            UnknownKey,
            "unknown key `foo`, expected `global` or `pool`",
        ),
        (
            "[global]\nlog_levl = 'info'\n[pool.www]\n",
            "2:1: global.log_levl",
            UnknownKey,
            "expected one of `log_level`",
        ),
        (
            "[pool.www]\nmax_child = 4\n",
            "2:1: pool.www.max_child",
            UnknownKey,
            "unknown key `max_child`",
        ),
        (
            "[pool.www.listen]\nadress = 'x'\n",
            "2:1: pool.www.listen.adress",
            UnknownKey,
            "`address`",
        ),
        (
            "[pool.www.app]\nkinds = 'php'\n",
            "2:1: pool.www.app.kinds",
            UnknownKey,
            "`kind`",
        ),
        (
            "[pool.www.overload]\npolicyy = 'none'\n",
            "2:1: pool.www.overload.policyy",
            UnknownKey,
            "`policy`",
        ),
        (
            "[pool.www]\nlisten = { address = '127.0.0.1:1', bogus = 1 }\n",
            "2:37: pool.www.listen.bogus",
            UnknownKey,
            "bogus",
        ),
        (
            "pool.www.app.bogus = 1\n",
            "1:14: pool.www.app.bogus",
            UnknownKey,
            "bogus",
        ),
        (
            "[pool.www.app.env]\nA = 'b'\n[pool.www.app.bogus]\nx = 1\n",
            "3:15: pool.www.app.bogus",
            UnknownKey,
            "bogus",
        ),
        (
            "[pool.www]\n[pool.www.overload]\n[pool.www.extra]\n",
            "3:11: pool.www.extra",
            UnknownKey,
            "extra",
        ),
        (
            "[globals]\n[pool.www]\n",
            "1:2: globals",
            UnknownKey,
            "globals",
        ),
    ]);
}

#[test]
fn wrong_types() {
    check(&[
        (
            "[global]\nlog_level = 3\n[pool.www]\n",
            "2:13: global.log_level",
            WrongType,
            "invalid type: integer `3`, expected a string",
        ),
        (
            "[pool.www]\nmax_children = '4'\n",
            "2:16: pool.www.max_children",
            WrongType,
            "expected an integer from 0 to 4294967295",
        ),
        (
            "[pool.www]\nmax_children = -4\n",
            "2:16: pool.www.max_children",
            WrongType,
            "integer `-4`",
        ),
        (
            "[pool.www]\nmax_children = 4294967296\n",
            "2:16: pool.www.max_children",
            WrongType,
            "integer `4294967296`",
        ),
        (
            "[pool.www]\nmax_requests = -1\n",
            "2:16: pool.www.max_requests",
            WrongType,
            "expected an integer of 0 or more",
        ),
        (
            "[pool.www]\nmax_children = 2.5\n",
            "2:16: pool.www.max_children",
            WrongType,
            "invalid type: floating point",
        ),
        (
            "[pool.www.app]\nclear_env = 'yes'\n",
            "2:13: pool.www.app.clear_env",
            WrongType,
            "expected a boolean",
        ),
        (
            "[pool.www.listen]\nallowed_clients = '127.0.0.1'\n",
            "2:19: pool.www.listen.allowed_clients",
            WrongType,
            "expected a sequence",
        ),
        (
            "[pool.www.listen]\nmode = 660\n",
            "2:8: pool.www.listen.mode",
            WrongType,
            "octal string such as \"0660\"",
        ),
        (
            "[global]\nshutdown_timeout = 30\n[pool.www]\n",
            "2:20: global.shutdown_timeout",
            WrongType,
            "durations are strings",
        ),
        (
            "[pool.www.overload]\ntarget = 5\n",
            "2:10: pool.www.overload.target",
            WrongType,
            "durations are strings",
        ),
        (
            "[pool.www.app]\nlimit_extensions = ['.php', 3]\n",
            "2:29: pool.www.app.limit_extensions[1]",
            WrongType,
            "integer `3`",
        ),
        (
            "[pool.www.app]\ncommand = [\n 'a',\n 2,\n]\n",
            "4:2: pool.www.app.command[1]",
            WrongType,
            "integer `2`",
        ),
        (
            "[pool.www.app]\nini = { a = [1] }\n",
            "2:9: pool.www.app.ini.a",
            WrongType,
            "expected a string, number or boolean",
        ),
        (
            "[pool.www.app.env]\nOK = 'x'\nX = {}\n",
            "3:1: pool.www.app.env.X",
            WrongType,
            "invalid type: table",
        ),
        (
            "pool = 3\n",
            "1:8: pool",
            WrongType,
            "expected a table of pools, [pool.NAME]",
        ),
        (
            "[pool]\nwww = 3\n",
            "2:7: pool.www",
            WrongType,
            "expected a table",
        ),
        (
            "global = []\n[pool.www]\n",
            "1:10: global",
            WrongType,
            "expected a table",
        ),
        (
            "[pool.www]\nlisten = 'x'\n",
            "2:10: pool.www.listen",
            WrongType,
            "expected a table",
        ),
    ]);
}

#[test]
fn bad_words() {
    let list = |words: &str| -> String { format!("expected one of {words}") };
    let cases: Vec<(String, &str, String)> = vec![
        (
            "[global]\nlog_level = 'loud'\n[pool.www]\n".into(),
            "2:13: global.log_level",
            list("error, warn, info, debug, trace"),
        ),
        (
            "[global]\nlog_format = 'xml'\n[pool.www]\n".into(),
            "2:14: global.log_format",
            list("text, json"),
        ),
        (
            "[pool.www]\nworkers = 'fork'\n".into(),
            "2:11: pool.www.workers",
            list("process, thread"),
        ),
        (
            "[pool.www]\naccept_lock = 'sem'\n".into(),
            "2:15: pool.www.accept_lock",
            list("mutex, fcntl, flock, none"),
        ),
        (
            "[pool.www]\npm = 'Static'\n".into(),
            "2:6: pool.www.pm",
            list("static, dynamic, ondemand"),
        ),
        (
            "[pool.www.app]\nkind = 'python'\n".into(),
            "2:8: pool.www.app.kind",
            list("php, cgi, exec, hello, echo, sleep, longpoll"),
        ),
        (
            "[pool.www.overload]\npolicy = 'red'\n".into(),
            "2:10: pool.www.overload.policy",
            list("none, deadline, codel"),
        ),
    ];
    let leaked: Vec<Case> = cases
        .into_iter()
        .map(|(t, w, f)| -> Case {
            (
                Box::leak(t.into_boxed_str()),
                w,
                InvalidValue,
                Box::leak(f.into_boxed_str()),
            )
        })
        .collect();
    check(&leaked);
}

#[test]
fn bad_values() {
    check(&[
        ("[global]\nshutdown_timeout = '30'\n[pool.www]\n", "2:20: global.shutdown_timeout", InvalidValue, "missing unit"),
        ("[pool.www]\nidle_timeout = '10 s'\n", "2:16: pool.www.idle_timeout", InvalidValue, "invalid duration \"10 s\""),
        ("[pool.www]\nrequest_timeout = '1.5s'\n", "2:19: pool.www.request_timeout", InvalidValue, "invalid duration"),
        ("[pool.www]\nmax_body = '12T'\n", "2:12: pool.www.max_body", InvalidValue, "unknown unit"),
        ("[pool.www]\nmax_params = '10'\n", "2:14: pool.www.max_params", InvalidValue, "at least 1K"),
        ("[pool.www]\nslow_request = 'fast'\n", "2:16: pool.www.slow_request", InvalidValue, "invalid duration"),
        ("[pool.www.overload]\nmax_queue_wait = '1d'\n", "2:18: pool.www.overload.max_queue_wait", InvalidValue, "unknown unit \"d\""),
        ("[pool.www.overload]\ninterval = '-1ms'\n", "2:12: pool.www.overload.interval", InvalidValue, "invalid duration"),
        ("[pool.www.listen]\nmode = '0668'\n", "2:8: pool.www.listen.mode", InvalidValue, "invalid mode \"0668\""),
        ("[pool.www.listen]\nmode = '1777'\n", "2:8: pool.www.listen.mode", InvalidValue, "above 0777"),
        ("[pool.www.listen]\naddress = 'localhost:9000'\n", "2:11: pool.www.listen.address", InvalidValue, "is not a listen address"),
        ("[pool.www.listen]\naddress = 'unix:'\n", "2:11: pool.www.listen.address", InvalidValue, "unix socket path is empty"),
        ("[pool.www.listen]\naddress = ''\n", "2:11: pool.www.listen.address", InvalidValue, "empty listen address"),
        ("[global]\nstatus_listen = 'localhost:9180'\n[pool.www]\n", "2:17: global.status_listen", InvalidValue, "is not an IP:PORT address"),
        ("[global]\nstatus_listen = 'unix:/x'\n[pool.www]\n", "2:17: global.status_listen", InvalidValue, "is not an IP:PORT address"),
        ("[global]\nruntime_dir = ''\n[pool.www]\n", "2:15: global.runtime_dir", InvalidValue, "must not be empty"),
        ("[pool.www.listen]\naddress = '127.0.0.1:9000'\nallowed_clients = ['127.0.0.1', '10.0.0.0/8']\n", "3:33: pool.www.listen.allowed_clients[1]", InvalidValue, "\"10.0.0.0/8\" is not an IP address"),
        ("[pool.www.listen]\naddress = '127.0.0.1:9000'\nallowed_clients = ['localhost']\n", "3:20: pool.www.listen.allowed_clients[0]", InvalidValue, "not an IP address"),
        ("[pool.www]\nstatus_path = 'status'\n", "2:15: pool.www.status_path", InvalidValue, "must start with \"/\""),
        ("[pool.www]\nping_path = 'ping'\n", "2:13: pool.www.ping_path", InvalidValue, "must start with \"/\""),
        ("[pool.www.app]\nlimit_extensions = ['php']\n", "2:21: pool.www.app.limit_extensions[0]", InvalidValue, "\"php\" is not an extension"),
        ("[pool.www.app]\nlimit_extensions = ['.']\n", "2:21: pool.www.app.limit_extensions[0]", InvalidValue, "is not an extension"),
        ("[pool.www.app]\nenv = { \"A=B\" = 'x' }\n", "2:9: pool.www.app.env.\"A=B\"", InvalidValue, "not a valid name"),
        ("[pool.www.app.ini]\n\"\" = 'x'\n", "2:1: pool.www.app.ini.\"\"", InvalidValue, "not a valid name"),
        ("[pool.'my pool']\n", "1:7: pool.\"my pool\"", InvalidValue, "may only contain letters, digits, '_' and '-'"),
        ("[pool.\"a.b\"]\n", "1:7: pool.\"a.b\"", InvalidValue, "may only contain"),
    ]);
}

#[test]
fn single_value_rules() {
    check(&[
        (
            "[pool.www]\nmax_children = 0\n",
            "2:16: pool.www.max_children",
            InvalidValue,
            "must be at least 1 (it is 0)",
        ),
        (
            "[pool.www]\nmax_connections = 0\n",
            "2:19: pool.www.max_connections",
            InvalidValue,
            "must be at least 1",
        ),
        (
            "[pool.www.listen]\nbacklog = 0\n",
            "2:11: pool.www.listen.backlog",
            InvalidValue,
            "must be between 1 and 2147483647 (it is 0)",
        ),
        (
            "[pool.www.listen]\nbacklog = 3000000000\n",
            "2:11: pool.www.listen.backlog",
            InvalidValue,
            "must be between 1 and 2147483647",
        ),
    ]);
    // Above somaxconn (4096) is fine: the kernel clamps and the listen code reports it.
    let config = load("[pool.www.listen]\nbacklog = 65535\n").unwrap();
    assert_eq!(config.pools[0].listen.backlog, Some(65535));
}

#[test]
fn process_manager_rules() {
    check(&[
        (
            "[pool.www]\npm = 'dynamic'\nmin_spare_servers = 0\n",
            "3:21: pool.www.min_spare_servers",
            Rule,
            "but min_spare_servers is 0",
        ),
        // min_spare > start: the later of the two written keys.
        (
            "[pool.www]\npm = 'dynamic'\nmin_spare_servers = 3\nstart_servers = 2\n",
            "4:17: pool.www.start_servers",
            Rule,
            "min_spare_servers (3) > start_servers (2)",
        ),
        (
            "[pool.www]\npm = 'dynamic'\nstart_servers = 2\nmin_spare_servers = 3\n",
            "4:21: pool.www.min_spare_servers",
            Rule,
            "min_spare_servers (3) > start_servers (2)",
        ),
        // Only one of the two written: that one.
        (
            "[pool.www]\npm = 'dynamic'\nmin_spare_servers = 5\n",
            "3:21: pool.www.min_spare_servers",
            Rule,
            "min_spare_servers (5) > start_servers (2)",
        ),
        (
            "[pool.www]\npm = 'dynamic'\nstart_servers = 4\nmax_spare_servers = 3\n",
            "4:21: pool.www.max_spare_servers",
            Rule,
            "start_servers (4) > max_spare_servers (3)",
        ),
        (
            "[pool.www]\npm = 'dynamic'\nmax_spare_servers = 3\nmax_children = 2\n",
            "4:16: pool.www.max_children",
            Rule,
            "max_spare_servers (3) > max_children (2)",
        ),
        (
            "[pool.www]\nmax_children = 2\npm = 'dynamic'\n",
            "2:16: pool.www.max_children",
            Rule,
            "max_spare_servers (3) > max_children (2)",
        ),
        (
            "[pool.www]\npm = 'ondemand'\nidle_timeout = '0s'\n",
            "3:16: pool.www.idle_timeout",
            Rule,
            "pm = \"ondemand\" needs idle_timeout > 0s",
        ),
        (
            "[pool.www]\nidle_timeout = '0s'\npm = 'ondemand'\n",
            "3:6: pool.www.pm",
            Rule,
            "needs idle_timeout > 0s",
        ),
    ]);
    // The same numbers are fine for static and ondemand (php-fpm ignores the spares there).
    for pm in ["static", "ondemand"] {
        let text = format!(
            "[pool.www]\npm = '{pm}'\nmin_spare_servers = 0\nstart_servers = 9\nmax_children = 1\n"
        );
        assert!(load(&text).is_ok(), "{pm}");
    }
    let ok = load("[pool.www]\npm = 'dynamic'\nmax_children = 5\nstart_servers = 1\nmin_spare_servers = 1\nmax_spare_servers = 5\n").unwrap();
    assert_eq!(
        (ok.pools[0].start_servers, ok.pools[0].max_spare_servers),
        (1, 5)
    );
}

#[test]
fn app_and_overload_rules() {
    check(&[
        (
            "[pool.www.app]\nkind = 'exec'\n",
            "2:8: pool.www.app.kind",
            Rule,
            "kind = \"exec\" needs command",
        ),
        (
            "[pool.www.app]\nkind = 'exec'\ncommand = []\n",
            "3:11: pool.www.app.command",
            Rule,
            "needs command",
        ),
        (
            "[pool.www.app]\ncommand = ['']\nkind = 'exec'\n",
            "3:8: pool.www.app.kind",
            Rule,
            "needs command",
        ),
        (
            "[pool.www.app]\nkind = 'php'\nphp_cgi = ''\n",
            "3:11: pool.www.app.php_cgi",
            Rule,
            "needs php_cgi",
        ),
        (
            "[pool.www.app]\nkind = 'cgi'\ndocument_root = ''\n",
            "3:17: pool.www.app.document_root",
            Rule,
            "kind = \"cgi\" needs a document_root",
        ),
        (
            "[pool.www.app]\ndocument_root = ''\n",
            "2:17: pool.www.app.document_root",
            Rule,
            "kind = \"php\" needs a document_root",
        ),
        (
            "[pool.www.overload]\npolicy = 'deadline'\n",
            "2:10: pool.www.overload.policy",
            Rule,
            "policy = \"deadline\" needs max_queue_wait > 0s",
        ),
        (
            "[pool.www.overload]\npolicy = 'deadline'\nmax_queue_wait = '0s'\n",
            "3:18: pool.www.overload.max_queue_wait",
            Rule,
            "needs max_queue_wait > 0s",
        ),
        (
            "[pool.www.overload]\npolicy = 'codel'\ntarget = '0ms'\n",
            "3:10: pool.www.overload.target",
            Rule,
            "needs target > 0s",
        ),
        (
            "[pool.www.overload]\ninterval = '0s'\npolicy = 'codel'\n",
            "3:10: pool.www.overload.policy",
            Rule,
            "needs interval > 0s",
        ),
        (
            "[pool.www]\nstatus_path = '/s'\nping_path = '/s'\n",
            "3:13: pool.www.ping_path",
            Rule,
            "ping_path and status_path are both \"/s\"",
        ),
        (
            "[pool.www]\nstatus_path = '/status'\nping_path = '/status'\n",
            "3:13: pool.www.ping_path",
            Rule,
            "both \"/status\"",
        ),
    ]);
    // Built-in apps need neither php_cgi nor a document root; off paths never clash.
    assert!(load("[pool.www.app]\nkind = 'hello'\nphp_cgi = ''\ndocument_root = ''\n").is_ok());
    assert!(load("[pool.www]\nstatus_path = ''\nping_path = ''\n").is_ok());
}

#[test]
fn allowed_clients_rules() {
    check(&[
        (
            "[pool.www.listen]\naddress = 'unix:/x.sock'\nallowed_clients = ['127.0.0.1']\n",
            "3:19: pool.www.listen.allowed_clients",
            Rule,
            "applies to TCP addresses only, but the address is unix:/x.sock",
        ),
        (
            "[pool.www.listen]\nallowed_clients = ['127.0.0.1']\naddress = 'unix:/x.sock'\n",
            "3:11: pool.www.listen.address",
            Rule,
            "TCP addresses only",
        ),
        // The default address is a unix socket too.
        (
            "[pool.www.listen]\nallowed_clients = ['::1']\n",
            "2:19: pool.www.listen.allowed_clients",
            Rule,
            "unix:/run/fastpm/www.sock",
        ),
    ]);
    let config = load("[pool.www.listen]\naddress = '[::1]:9000'\nallowed_clients = ['127.0.0.1', '::1', ' 10.1.2.3 ']\n").unwrap();
    let want: Vec<std::net::IpAddr> = vec![
        "127.0.0.1".parse().unwrap(),
        "::1".parse().unwrap(),
        "10.1.2.3".parse().unwrap(),
    ];
    assert_eq!(config.pools[0].listen.allowed_clients, want);
    // An empty list is fine on unix.
    assert!(load("[pool.www.listen]\nallowed_clients = []\n").is_ok());
}

#[test]
fn pools_and_addresses() {
    check(&[
        ("", "1:1: pool", Rule, "at least one pool is required"),
        ("[global]\nlog_level = 'info'\n", "1:1: pool", Rule, "at least one pool is required"),
        ("[pool]\n", "1:2: pool", Rule, "at least one pool is required"),
        (
            "[pool.a.listen]\naddress = 'unix:/run/x.sock'\n[pool.b.listen]\naddress = 'unix:/run/x.sock'\n",
            "4:11: pool.b.listen.address", Rule, "unix:/run/x.sock clashes with unix:/run/x.sock of pool \"a\"; two pools may not share an address",
        ),
        // Relative and absolute spellings of one path (base /base).
        ("[pool.a.listen]\naddress = 'unix:x.sock'\n[pool.b.listen]\naddress = 'unix:/base/./x.sock'\n", "4:11: pool.b.listen.address", Rule, "clashes"),
        // A default address (runtime_dir/NAME.sock) clashing with a written one: points at [pool.b].
        ("[pool.a.listen]\naddress = 'unix:/run/fastpm/b.sock'\n[pool.b]\n", "3:7: pool.b.listen.address", Rule, "clashes with unix:/run/fastpm/b.sock of pool \"a\""),
        ("[pool.a.listen]\naddress = '0.0.0.0:9000'\n[pool.b.listen]\naddress = '127.0.0.1:9000'\n", "4:11: pool.b.listen.address", Rule, "127.0.0.1:9000 clashes with 0.0.0.0:9000"),
        ("[pool.a.listen]\naddress = '127.0.0.1:9000'\n[pool.b.listen]\naddress = '[::]:9000'\n", "4:11: pool.b.listen.address", Rule, "clashes"),
        ("[pool.a.listen]\naddress = 'systemd:web'\n[pool.b.listen]\naddress = 'systemd:web'\n", "4:11: pool.b.listen.address", Rule, "clashes"),
        ("[global]\nstatus_listen = '127.0.0.1:9000'\n[pool.www.listen]\naddress = '127.0.0.1:9000'\n", "4:11: pool.www.listen.address", Rule, "clashes with global.status_listen (127.0.0.1:9000)"),
        ("[pool.www.listen]\naddress = '0.0.0.0:9180'\n", "2:11: pool.www.listen.address", Rule, "clashes with global.status_listen (127.0.0.1:9180)"),
    ]);
    let no_clash = [
        "[pool.a.listen]\naddress = '127.0.0.1:0'\n[pool.b.listen]\naddress = '127.0.0.1:0'\n",
        "[pool.a.listen]\naddress = '127.0.0.1:9000'\n[pool.b.listen]\naddress = '127.0.0.2:9000'\n",
        "[pool.a.listen]\naddress = '0.0.0.0:9000'\n[pool.b.listen]\naddress = '[::1]:9000'\n",
        "[pool.a.listen]\naddress = '127.0.0.1:9000'\n[pool.b.listen]\naddress = '127.0.0.1:9001'\n",
        "[global]\nstatus_listen = ''\n[pool.a.listen]\naddress = '127.0.0.1:9180'\n",
        "[pool.a]\n[pool.b]\n",
    ];
    for text in no_clash {
        assert!(load(text).is_ok(), "{text}: {:?}", load(text).err());
    }
}

#[test]
fn syntax_errors() {
    check(&[
        (
            "[pool.www]\npm = dynamc\n",
            "2:6: pool.www.pm",
            Syntax,
            "TOML syntax: invalid string",
        ),
        (
            "[pool.www]\nmax_children = 1\nmax_children = 2\n",
            "3:1: pool.www.max_children",
            Syntax,
            "duplicate key `max_children`",
        ),
        ("[global\n", "1:8: global", Syntax, "invalid table header"),
        (
            "[pool.www.app]\ncommand = [\n 'a',\n 'b'\n",
            "5:1: pool.www.app.command",
            Syntax,
            "invalid array",
        ),
        (
            "[pool.www]\nmax_children = = 1\n",
            "2:16: pool.www.max_children",
            Syntax,
            "TOML syntax",
        ),
        (
            "[pool.www]\n[pool.www]\n",
            "2:1: pool.www",
            Syntax,
            "TOML syntax",
        ),
        ("= 1\n", "1:1: (top level)", Syntax, "TOML syntax"),
        (
            "[pool.www]\nworkers = \"thread\n",
            "2:18: pool.www.workers",
            Syntax,
            "invalid basic string",
        ),
    ]);
}

#[test]
fn unreadable_file() {
    let err = load_file(Path::new("/nonexistent/fastpm.toml")).unwrap_err();
    assert_eq!(err.kind, Io);
    assert_eq!((err.line, err.column, err.key.as_str()), (0, 0, "(file)"));
    assert!(
        err.to_string().starts_with(
            "/nonexistent/fastpm.toml:0:0: (file): cannot read the config file (no position): "
        ),
        "{err}"
    );
}

#[test]
fn file_name_in_errors_is_as_given() {
    let embedded = load_str_with_base(
        "[pool.www]\npm = 1\n",
        ConfigSource::Embedded,
        Path::new("/"),
    )
    .unwrap_err();
    assert!(
        embedded
            .to_string()
            .starts_with("<embedded conf/fastpm.toml>:2:6: pool.www.pm: "),
        "{embedded}"
    );
}
