//! `fastpm check` output: every setting of a loaded config with its effective value (defaults
//! applied, paths resolved, backlog after `--backlog`/`LISTENQ`), as TOML a person can read and
//! fastpm can load back.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::backlog::{effective_backlog, BacklogError, BacklogSource};
use super::broker::BrokerUrl;
use super::duration::format_duration;
use super::enums::AppKind;
use super::locate::key_segment;
use super::mode::format_mode;
use super::size::format_size;
use super::types::{Config, PhpIni, PoolConfig};

/// A TOML basic string.
fn quote(text: &str) -> String {
    toml_edit::Value::from(text).to_string().trim().to_string()
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

/// A path setting where `""` means "not set".
fn quote_optional_path(path: Option<&Path>) -> String {
    path.map_or_else(|| quote(""), quote_path)
}

fn optional(value: &Option<String>) -> String {
    quote(value.as_deref().unwrap_or(""))
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn map(entries: &std::collections::BTreeMap<String, String>) -> String {
    if entries.is_empty() {
        return "{}".into();
    }
    let pairs: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{} = {}", key_segment(k), quote(v)))
        .collect();
    format!("{{ {} }}", pairs.join(", "))
}

fn duration(value: Duration) -> String {
    quote(&format_duration(value))
}

/// Lines of one table: `key = value` with an optional `# comment`, comments aligned.
struct Table(String);

impl Table {
    fn new(header: &str) -> Self {
        Table(format!("\n[{header}]\n"))
    }

    fn line(&mut self, key: &str, value: impl AsRef<str>, comment: &str) -> &mut Self {
        let assignment = format!("{key} = {}", value.as_ref());
        if comment.is_empty() {
            let _ = writeln!(self.0, "{assignment}");
        } else {
            let _ = writeln!(self.0, "{assignment:<33} # {comment}");
        }
        self
    }
}

/// "off" for settings where zero or empty means off.
fn off_if(flag: bool) -> &'static str {
    if flag {
        "off"
    } else {
        ""
    }
}

/// Which kinds hold requests (DESIGN.md §8): `longpoll` itself, and `php`/`cgi` through GRIP,
/// whose apps say their own timeout (`Grip-Timeout`), so `hold_timeout` is `longpoll`'s only.
fn holds_note(kind: AppKind, timeout: bool) -> &'static str {
    match (kind, timeout) {
        (AppKind::Longpoll, _) | (AppKind::Php | AppKind::Cgi, false) => "",
        (AppKind::Php | AppKind::Cgi, true) => "longpoll only: GRIP apps send Grip-Timeout",
        (_, true) => "used by kind = \"longpoll\" only",
        (_, false) => "used by kind = \"longpoll\", \"php\", \"cgi\" only",
    }
}

/// Render the effective settings. Fails only when `--backlog`/`LISTENQ` is invalid.
pub fn render_effective(
    config: &Config,
    cli_backlog: Option<u32>,
    listenq_env: Option<&str>,
) -> Result<String, BacklogError> {
    let mut out = format!(
        "# fastpm: effective settings of {}\n# (defaults applied, relative paths resolved; this loads as a config)\n",
        config.source
    );
    let g = &config.global;
    let mut t = Table::new("global");
    t.line(
        "log_level",
        quote(g.log_level.as_str()),
        "RUST_LOG overrides",
    )
    .line("log_format", quote(g.log_format.as_str()), "")
    .line(
        "status_listen",
        quote(&g.status_listen.map(|a| a.to_string()).unwrap_or_default()),
        off_if(g.status_listen.is_none()),
    )
    .line(
        "runtime_dir",
        quote_path(&g.runtime_dir),
        g.runtime_dir_source.note(),
    )
    .line("shutdown_timeout", duration(g.shutdown_timeout), "")
    .line(
        "pid_file",
        quote(
            &g.pid_file
                .as_deref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        off_if(g.pid_file.is_none()),
    )
    .line(
        "broker",
        quote(&g.broker.to_string()),
        match g.broker {
            BrokerUrl::Memory => "held requests: this instance only",
            BrokerUrl::Redis(_) => "held requests: shared with every instance on this Redis",
        },
    );
    // Logs (config/logs.rs).
    t.line(
        "error_log",
        quote_optional_path(g.logs.error_log.as_deref()),
        if g.logs.error_log.is_none() {
            "stderr"
        } else {
            ""
        },
    )
    .line("log_limit", g.logs.log_limit.to_string(), "bytes per line");
    out.push_str(&t.0);
    for pool in &config.pools {
        render_pool(&mut out, pool, cli_backlog, listenq_env)?;
    }
    Ok(out)
}

fn render_pool(
    out: &mut String,
    pool: &PoolConfig,
    cli_backlog: Option<u32>,
    listenq_env: Option<&str>,
) -> Result<(), BacklogError> {
    let name = key_segment(&pool.name);
    let dynamic = if pool.pm == super::enums::PmKind::Dynamic {
        ""
    } else {
        "used by pm = \"dynamic\" only"
    };
    let mut t = Table::new(&format!("pool.{name}"));
    t.line("workers", quote(pool.workers.as_str()), "")
        .line("accept_lock", quote(pool.accept_lock.as_str()), "")
        .line("pm", quote(pool.pm.as_str()), "")
        .line("max_children", pool.max_children.to_string(), "")
        .line("start_servers", pool.start_servers.to_string(), dynamic)
        .line(
            "min_spare_servers",
            pool.min_spare_servers.to_string(),
            dynamic,
        )
        .line(
            "max_spare_servers",
            pool.max_spare_servers.to_string(),
            dynamic,
        )
        .line(
            "idle_timeout",
            duration(pool.idle_timeout),
            if pool.pm == super::enums::PmKind::Ondemand {
                ""
            } else {
                "used by pm = \"ondemand\" only"
            },
        )
        .line(
            "max_requests",
            pool.max_requests.to_string(),
            if pool.max_requests == 0 {
                "never recycle"
            } else {
                ""
            },
        )
        .line("max_connections", pool.max_connections.to_string(), "")
        .line(
            "request_timeout",
            duration(pool.request_timeout),
            off_if(pool.request_timeout.is_zero()),
        )
        .line(
            "slow_request",
            duration(pool.slow_request),
            off_if(pool.slow_request.is_zero()),
        )
        .line(
            "client_timeout",
            duration(pool.client_timeout),
            "clients give up after this (nginx: fastcgi_read_timeout); for the backlog advice",
        )
        .line("max_params", quote(&format_size(pool.max_params)), "")
        .line("max_body", quote(&format_size(pool.max_body)), "")
        .line(
            "status_path",
            optional(&pool.status_path),
            off_if(pool.status_path.is_none()),
        )
        .line(
            "ping_path",
            optional(&pool.ping_path),
            off_if(pool.ping_path.is_none()),
        )
        .line("ping_response", quote(&pool.ping_response), "")
        .line(
            "user",
            optional(&pool.user),
            if pool.user.is_none() { "unchanged" } else { "" },
        )
        .line(
            "group",
            optional(&pool.group),
            if pool.group.is_none() {
                "unchanged"
            } else {
                ""
            },
        );
    // Logs (config/logs.rs).
    let logs = &pool.logs;
    t.line(
        "access_log",
        quote_optional_path(logs.access_log.as_deref()),
        off_if(logs.access_log.is_none()),
    )
    .line("access_format", quote(&logs.access_format), "")
    .line(
        "slowlog",
        quote_optional_path(logs.slowlog.as_deref()),
        if logs.slowlog.is_none() {
            "error log only"
        } else {
            ""
        },
    );
    out.push_str(&t.0);

    let listen = &pool.listen;
    let (backlog, source) = effective_backlog(cli_backlog, listenq_env, listen.backlog)?;
    let backlog_comment = match (source, listen.backlog) {
        (BacklogSource::Default, _) => "default (nothing set)".to_string(),
        (BacklogSource::Config, _) => "from config".to_string(),
        (other, Some(written)) => format!("from {other} (config says {written})"),
        (other, None) => format!("from {other}"),
    };
    let unix_only = if listen.address.is_unix() {
        ""
    } else {
        "unix sockets only"
    };
    let mut t = Table::new(&format!("pool.{name}.listen"));
    t.line("address", quote(&listen.address.to_string()), "")
        .line("backlog", backlog.to_string(), &backlog_comment)
        .line("mode", quote(&format_mode(listen.mode)), unix_only)
        .line(
            "owner",
            optional(&listen.owner),
            if listen.owner.is_none() {
                "unchanged"
            } else {
                unix_only
            },
        )
        .line(
            "group",
            optional(&listen.group),
            if listen.group.is_none() {
                "unchanged"
            } else {
                unix_only
            },
        )
        .line(
            "allowed_clients",
            list(
                &listen
                    .allowed_clients
                    .iter()
                    .map(|ip| ip.to_string())
                    .collect::<Vec<_>>(),
            ),
            if listen.allowed_clients.is_empty() {
                "any peer"
            } else {
                ""
            },
        );
    out.push_str(&t.0);

    let app = &pool.app;
    let php_ini = match &app.php_ini {
        PhpIni::Search => (quote(""), "PHP's own php.ini and conf.d"),
        PhpIni::None => (quote("none"), "no php.ini (-n)"),
        PhpIni::Path(path) => (quote_path(path), ""),
    };
    let mut t = Table::new(&format!("pool.{name}.app"));
    t.line("kind", quote(app.kind.as_str()), "")
        .line("document_root", quote_path(&app.document_root), "")
        .line("php_cgi", quote(&app.php_cgi), "")
        .line("php_children", quote(app.php_children.as_str()), "")
        .line("php_ini", php_ini.0, php_ini.1)
        .line(
            "limit_extensions",
            list(&app.limit_extensions),
            if app.limit_extensions.is_empty() {
                "any extension"
            } else {
                ""
            },
        )
        .line("ini", map(&app.ini), "")
        .line("env", map(&app.env), "")
        .line("clear_env", app.clear_env.to_string(), "")
        .line("command", list(&app.command), "")
        .line(
            "history",
            app.history.to_string(),
            holds_note(app.kind, false),
        )
        .line(
            "hold_timeout",
            duration(app.hold_timeout),
            holds_note(app.kind, true),
        )
        .line(
            "max_held",
            app.max_held.to_string(),
            holds_note(app.kind, false),
        );
    out.push_str(&t.0);

    let o = &pool.overload;
    let mut t = Table::new(&format!("pool.{name}.overload"));
    t.line("policy", quote(o.policy.as_str()), "")
        .line("max_queue_wait", duration(o.max_queue_wait), "")
        .line("target", duration(o.target), "")
        .line("interval", duration(o.interval), "");
    out.push_str(&t.0);
    Ok(())
}
