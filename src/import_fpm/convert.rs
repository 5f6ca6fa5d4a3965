//! php-fpm's keys → fastpm's TOML (DESIGN.md §3). Each key has one rule in [`pool_rule`] or
//! [`global_rule`]: a fastpm key (with the value converted: counts, php-fpm durations such as
//! `30s`/`5m`/`1h`/bare seconds, booleans, lists), a conversion needing more than one value
//! (listen address, `$VAR` environment, php ini, document root), or a reason it cannot be
//! carried over, which the output keeps as a comment with the php-fpm line and its file:line.
//! Pure: the document in, the text out.

use std::time::Duration;

use super::ini::{Document, Entry, Section};
use super::ImportError;
use crate::config::duration::format_duration;

/// A TOML value to write.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Int(u64),
    Bool(bool),
    List(Vec<String>),
}

impl Value {
    fn render(&self) -> String {
        match self {
            Value::Str(s) => toml::Value::String(s.clone()).to_string(),
            Value::Int(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::List(items) => {
                let items: Vec<String> = items
                    .iter()
                    .map(|s| toml::Value::String(s.clone()).to_string())
                    .collect();
                format!("[{}]", items.join(", "))
            }
        }
    }
}

/// One line of a table: a key (with an optional comment above it) or a comment alone.
#[derive(Debug, Clone)]
enum Item {
    Key {
        key: String,
        value: Value,
        note: Option<String>,
    },
    Comment(String),
}

/// A `[table]` and its lines, rendered in the order they were added.
#[derive(Debug, Default)]
struct Table {
    items: Vec<Item>,
}

impl Table {
    fn set(&mut self, key: &str, value: Value, note: Option<String>) {
        // A key set again (php-fpm: the last one wins) replaces the earlier line.
        self.items
            .retain(|item| !matches!(item, Item::Key { key: k, .. } if k == key));
        self.items.push(Item::Key {
            key: key.to_string(),
            value,
            note,
        });
    }
    fn has(&self, key: &str) -> bool {
        self.items
            .iter()
            .any(|item| matches!(item, Item::Key { key: k, .. } if k == key))
    }
    fn comment(&mut self, text: String) {
        self.items.push(Item::Comment(text));
    }
    fn render(&self, header: &str, out: &mut String) {
        out.push_str(&format!("\n[{header}]\n"));
        for item in &self.items {
            match item {
                Item::Comment(text) => out.push_str(&format!("# {text}\n")),
                Item::Key { key, value, note } => {
                    if let Some(note) = note {
                        out.push_str(&format!("# {note}\n"));
                    }
                    out.push_str(&format!("{} = {}\n", toml_key(key), value.render()));
                }
            }
        }
    }
}

/// A bare TOML key when it can be one, else quoted (`"opcache.enable"`).
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_string()
    } else {
        toml::Value::String(key.to_string()).to_string()
    }
}

/// How a php-fpm value is read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Count,
    Seconds,
    Bool,
    /// Space-separated words (`security.limit_extensions`).
    Words,
}

/// Which fastpm table a key lands in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Pool,
    Listen,
    App,
}

/// What the converter does with one php-fpm key.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    /// Becomes this fastpm key, converted as `Kind`, with an optional comment.
    Key(Target, &'static str, Kind, Option<&'static str>),
    /// Converted by code of its own (needs more than the value).
    Special,
    /// Not carried over, for this reason.
    Drop(&'static str),
}

const UNKNOWN_POOL: &str = "not a php-fpm 8.2 pool key fastpm knows";
const UNKNOWN_GLOBAL: &str = "not a php-fpm 8.2 global key fastpm knows";
const NO_SUPPRESS_PATH: &str = "fastpm has no suppress_path: its access log has every request";
const NO_BACKTRACE: &str =
    "fastpm logs slow requests in its own log (slow_request) and takes no backtrace";
const NO_RLIMIT: &str =
    "fastpm sets no resource limits: use LimitNOFILE=/LimitCORE= in the systemd unit (or ulimit)";
const NO_RENICE: &str = "fastpm does not renice processes: use Nice= in the systemd unit";
const SLOW_NOTE: &str = "from request_slowlog_timeout: fastpm logs a slower request (pool, pid, script, duration) when it ends, in the error log and in slowlog; no backtrace";
const ADMIN_NOTE: &str = "from php_value/php_admin_value/php_flag/php_admin_flag: fastpm passes all of them to php-cgi as -d NAME=VALUE, so a script's ini_set() can change php_admin_value settings too (php-fpm forbids that)";

/// php-fpm's pool keys (php-fpm 8.2, www.conf).
fn pool_rule(key: &str) -> Rule {
    use Kind::*;
    use Target::*;
    match key {
        "user" => Rule::Key(Pool, "user", Text, None),
        "group" => Rule::Key(Pool, "group", Text, None),
        "listen.owner" => Rule::Key(Listen, "owner", Text, None),
        "listen.group" => Rule::Key(Listen, "group", Text, None),
        "listen.mode" => Rule::Key(Listen, "mode", Text, None),
        "pm" => Rule::Special,
        "pm.max_children" => Rule::Key(Pool, "max_children", Count, None),
        "pm.start_servers" | "pm.min_spare_servers" | "pm.max_spare_servers" => Rule::Special,
        "pm.process_idle_timeout" => Rule::Key(Pool, "idle_timeout", Seconds, None),
        "pm.max_requests" => Rule::Key(Pool, "max_requests", Count, None),
        "pm.status_path" => Rule::Key(Pool, "status_path", Text, None),
        "ping.path" => Rule::Key(Pool, "ping_path", Text, None),
        "ping.response" => Rule::Key(Pool, "ping_response", Text, None),
        "request_terminate_timeout" => Rule::Key(Pool, "request_timeout", Seconds, Some("from request_terminate_timeout: fastpm ends the request and kills its php-cgi")),
        "request_slowlog_timeout" => Rule::Key(Pool, "slow_request", Seconds, Some(SLOW_NOTE)),
        "clear_env" => Rule::Key(App, "clear_env", Bool, None),
        "security.limit_extensions" => Rule::Key(App, "limit_extensions", Words, None),
        "listen" | "listen.backlog" | "listen.allowed_clients" | "chdir" => Rule::Special,
        "listen.acl_users" | "listen.acl_groups" => Rule::Drop("fastpm sets no POSIX ACLs on the socket: give the web server access with listen owner/group/mode"),
        "listen.setfib" => Rule::Drop("FreeBSD routing tables: fastpm runs on Linux"),
        "pm.max_spawn_rate" => Rule::Drop("fastpm has no spawn-rate setting"),
        "pm.status_listen" => Rule::Drop("fastpm's master serves every pool's status over HTTP on [global] status_listen; status_path answers on the pool's own socket"),
        "slowlog" => Rule::Key(Pool, "slowlog", Text, None),
        "request_slowlog_trace_depth" => Rule::Drop(NO_BACKTRACE),
        "request_terminate_timeout_track_finished" => Rule::Drop("fastpm has no such switch"),
        "rlimit_files" | "rlimit_core" => Rule::Drop(NO_RLIMIT),
        "chroot" => Rule::Drop("fastpm does not chroot workers: document_root limits which scripts run, not what they may open"),
        "catch_workers_output" => Rule::Drop("fastpm always copies php-cgi's stderr into its own log with pool and pid (as catch_workers_output = yes)"),
        "decorate_workers_output" => Rule::Drop("fastpm's log lines always name the pool and pid"),
        "access.log" => Rule::Key(Pool, "access_log", Text, None),
        "access.format" => Rule::Key(Pool, "access_format", Text, None),
        "access.suppress_path" | "access.suppress_path[]" => Rule::Drop(NO_SUPPRESS_PATH),
        "prefix" => Rule::Drop("fastpm resolves relative paths against its config file's directory; paths here are copied as php-fpm wrote them"),
        "process.priority" => Rule::Drop(NO_RENICE),
        "process.dumpable" => Rule::Drop("fastpm has no PR_SET_DUMPABLE switch"),
        "apparmor_hat" => Rule::Drop("fastpm does not change AppArmor hats"),
        k if is_php_ini(k).is_some() || k.starts_with("env[") => Rule::Special,
        _ => Rule::Drop(UNKNOWN_POOL),
    }
}

/// php-fpm's `[global]` keys.
fn global_rule(key: &str) -> Rule {
    match key {
        "pid" => Rule::Key(Target::Pool, "pid_file", Kind::Text, None),
        "log_level" | "process_control_timeout" => Rule::Special,
        "error_log" | "syslog.facility" | "syslog.ident" => Rule::Drop("fastpm has no syslog: it logs to stderr (the journal under systemd) or to [global] error_log = PATH, set by hand"),
        "log_limit" => Rule::Drop("fastpm's [global] log_limit takes 64 to 4000 bytes (one atomic pipe write): set it by hand"),
        "log_buffering" => Rule::Drop("fastpm has no such log setting"),
        "emergency_restart_threshold" | "emergency_restart_interval" => Rule::Drop("fastpm restarts each worker that dies; it has no emergency restart of the whole master"),
        "process.max" => Rule::Drop("fastpm has no global cap: the pools' max_children bound the workers"),
        "process.priority" => Rule::Drop(NO_RENICE),
        "daemonize" => Rule::Drop("fastpm always stays in the foreground: run it under systemd (conf/systemd/fastpm.service, Type=notify) or a supervisor"),
        "rlimit_files" | "rlimit_core" => Rule::Drop(NO_RLIMIT),
        "events.mechanism" => Rule::Drop("fastpm has no event-mechanism choice"),
        "systemd_interval" => Rule::Drop("fastpm talks to systemd itself (sd_notify READY=1, the watchdog when WatchdogSec= is set)"),
        _ => Rule::Drop(UNKNOWN_GLOBAL),
    }
}

/// `php_value[x]` etc.: the ini name and whether it is a flag.
fn is_php_ini(key: &str) -> Option<(&str, bool)> {
    for (prefix, flag) in [
        ("php_value[", false),
        ("php_admin_value[", false),
        ("php_flag[", true),
        ("php_admin_flag[", true),
    ] {
        if let Some(rest) = key.strip_prefix(prefix) {
            return rest
                .strip_suffix(']')
                .filter(|name| !name.is_empty())
                .map(|name| (name, flag));
        }
    }
    None
}

fn bad(entry: &Entry, message: String) -> ImportError {
    ImportError::Value {
        origin: entry.origin.clone(),
        key: entry.key.clone(),
        message,
    }
}

/// The line as php-fpm had it, for comments.
fn cite(entry: &Entry) -> String {
    format!("{} = {}  ({})", entry.key, entry.value, entry.origin)
}

fn dropped(entry: &Entry, reason: &str) -> String {
    format!("php-fpm {}: not carried over: {reason}", cite(entry))
}

/// php-fpm's booleans: yes/on/true/1 and no/off/false/none/0/"".
pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Ok(true),
        "0" | "no" | "off" | "false" | "none" | "" => Ok(false),
        _ => Err(format!(
            "expected yes/no (on/off, true/false, 1/0), got {text:?}"
        )),
    }
}

/// php-fpm's durations: a whole number with s, m, h or d, or bare seconds; as fastpm writes
/// them ("30s", "5m", "1h").
pub(crate) fn parse_seconds(text: &str) -> Result<String, String> {
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: php-fpm takes s, m, h, d or bare seconds"
            ))
        }
    };
    let n: u64 = digits.parse().map_err(|_| {
        format!("expected a duration such as 30s, 5m, 1h or bare seconds, got {text:?}")
    })?;
    Ok(format_duration(Duration::from_secs(
        n.saturating_mul(scale),
    )))
}

fn parse_count(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("expected a whole number, got {text:?}"))
}

fn convert_value(entry: &Entry, kind: Kind) -> Result<Value, ImportError> {
    let v = entry.value.as_str();
    Ok(match kind {
        Kind::Text => Value::Str(v.to_string()),
        Kind::Count => Value::Int(parse_count(v).map_err(|m| bad(entry, m))?),
        Kind::Seconds => Value::Str(parse_seconds(v).map_err(|m| bad(entry, m))?),
        Kind::Bool => Value::Bool(parse_bool(v).map_err(|m| bad(entry, m))?),
        Kind::Words => Value::List(v.split_whitespace().map(str::to_string).collect()),
    })
}

/// php-fpm's `listen` as a fastpm address, with a comment when the meaning needs one.
/// php-fpm: a value with ':' is HOST:PORT, digits alone a port on every address, anything else
/// a unix socket path.
pub(crate) fn listen_address(value: &str) -> Result<(String, Option<String>), String> {
    let is_port = |s: &str| matches!(s.parse::<u32>(), Ok(1..=65535));
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        if !is_port(value) {
            return Err(format!("invalid port {value:?}"));
        }
        return Ok((
            format!("[::]:{value}"),
            Some(format!("from listen = {value}: php-fpm binds a bare port on every address, IPv6 and IPv4 (\"::\", or 0.0.0.0 without IPv6); [::] does the same on Linux unless net.ipv6.bindv6only=1. With a local web server, 127.0.0.1:{value} is safer")),
        ));
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        let note = (!value.starts_with('/')).then(|| {
            format!("from listen = {value}: php-fpm reads a relative path from its prefix; fastpm from this file's directory")
        });
        return Ok((format!("unix:{value}"), note));
    };
    if !is_port(port) {
        return Err(format!("invalid port {port:?} in {value:?}"));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok((
            std::net::SocketAddr::new(ip, port.parse().unwrap_or(0)).to_string(),
            None,
        ));
    }
    if bare == "localhost" {
        return Ok((
            format!("127.0.0.1:{port}"),
            Some(format!("from listen = {value}: fastpm takes IP addresses; php-fpm took the first address localhost resolves to")),
        ));
    }
    Ok((
        value.to_string(),
        Some(format!("fastpm takes IP addresses, not host names: replace {bare:?} (php-fpm took the first address it resolves to)")),
    ))
}

/// php-fpm's log levels → fastpm's.
pub(crate) fn log_level(value: &str) -> Result<&'static str, String> {
    match value.to_ascii_lowercase().as_str() {
        "alert" | "error" => Ok("error"),
        "warning" => Ok("warn"),
        "notice" => Ok("info"),
        "debug" => Ok("debug"),
        _ => Err(format!(
            "expected alert, error, warning, notice or debug, got {value:?}"
        )),
    }
}

/// The fastpm TOML for a php-fpm document.
pub fn convert(doc: &Document) -> Result<String, ImportError> {
    let mut out = String::new();
    out.push_str(
        "# fastpm configuration converted from php-fpm by `fastpm import-fpm`, reading:\n",
    );
    for file in &doc.files {
        out.push_str(&format!("#   {}\n", file.display()));
    }
    out.push_str(
        "# Every php-fpm key fastpm cannot carry over is kept below as a comment saying why.\n",
    );
    out.push_str("# Check the result with `fastpm check -c FILE`.\n");
    for note in &doc.notes {
        out.push_str(&format!("# note: {note}\n"));
    }
    convert_global(&doc.global)?.render("global", &mut out);
    let php_cgi = php_cgi_for(doc);
    for pool in &doc.pools {
        convert_pool(pool, &php_cgi, &mut out)?;
    }
    if doc.pools.is_empty() {
        out.push_str("\n# php-fpm defined no pool: fastpm starts its default pool www.\n");
    }
    Ok(out)
}

fn convert_global(entries: &[Entry]) -> Result<Table, ImportError> {
    let mut table = Table::default();
    let mut shutdown = None;
    for entry in entries {
        match global_rule(&entry.key) {
            Rule::Key(_, key, kind, note) => {
                let value = convert_value(entry, kind)?;
                table.set(key, value, note.map(str::to_string));
            }
            Rule::Special if entry.key == "log_level" => {
                let level = log_level(&entry.value).map_err(|m| bad(entry, m))?;
                table.set(
                    "log_level",
                    Value::Str(level.to_string()),
                    Some(format!("from log_level = {}", entry.value)),
                );
            }
            Rule::Special => shutdown = Some(entry),
            Rule::Drop(UNKNOWN_GLOBAL) if pool_rule(&entry.key) != Rule::Drop(UNKNOWN_POOL) => {
                table.comment(dropped(
                    entry,
                    "a pool key outside any pool (php-fpm refuses it too)",
                ));
            }
            Rule::Drop(reason) => table.comment(dropped(entry, reason)),
        }
    }
    table.set(
        "status_listen",
        Value::Str(crate::config::DEFAULT_STATUS_LISTEN.to_string()),
        Some("fastpm's own: the master's HTTP status, metrics and dashboard, for every pool (php-fpm has none)".to_string()),
    );
    let timeout_note = "php-fpm's process_control_timeout is how long children get to react to the master's stop signal before they are killed: fastpm's graceful-stop drain";
    match shutdown {
        Some(entry) => {
            let value = parse_seconds(&entry.value).map_err(|m| bad(entry, m))?;
            if value == "0s" {
                table.set(
                    "shutdown_timeout",
                    Value::Str(format_duration(crate::config::DEFAULT_SHUTDOWN_TIMEOUT)),
                    Some(format!("{timeout_note}; php-fpm's 0 ({}) gives no time at all, so fastpm's default is kept", entry.origin)),
                );
            } else {
                table.set(
                    "shutdown_timeout",
                    Value::Str(value),
                    Some(format!("from process_control_timeout = {}: {timeout_note}", entry.value)),
                );
            }
        }
        None => table.comment(format!("shutdown_timeout: fastpm's default {} is kept ({timeout_note}; php-fpm's default 0 gives none)", format_duration(crate::config::DEFAULT_SHUTDOWN_TIMEOUT))),
    }
    Ok(table)
}

/// php-cgi of the same PHP version when the files are Debian's /etc/php/X.Y/fpm/.
fn php_cgi_for(doc: &Document) -> (String, Option<String>) {
    let version = doc.files.iter().find_map(|f| {
        let text = f.to_string_lossy();
        let rest = text.split("/php/").nth(1)?;
        let (version, tail) = rest.split_once('/')?;
        (tail.starts_with("fpm/") && version.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
            .then(|| version.to_string())
    });
    match version {
        Some(v) => (
            format!("php-cgi{v}"),
            Some(format!("php-fpm embeds PHP; fastpm starts php-cgi (Debian: php{v}-cgi). php-cgi reads /etc/php/{v}/cgi/php.ini, not fpm/php.ini: compare them, or set what differs in ini below")),
        ),
        None => (
            "php-cgi".to_string(),
            Some("php-fpm embeds PHP; fastpm starts php-cgi, which reads the CGI php.ini, not php-fpm's: compare them".to_string()),
        ),
    }
}

/// A fastpm pool name: letters, digits, '_' and '-'.
fn pool_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The five tables one php-fpm pool becomes.
#[derive(Default)]
struct PoolTables {
    pool: Table,
    listen: Table,
    app: Table,
    ini: Table,
    env: Table,
}

impl PoolTables {
    fn target(&mut self, target: Target) -> &mut Table {
        match target {
            Target::Pool => &mut self.pool,
            Target::Listen => &mut self.listen,
            Target::App => &mut self.app,
        }
    }

    /// A key whose rule is [`Rule::Special`] (`pm` and `chdir` are read by `convert_pool`).
    fn special(&mut self, entry: &Entry, pm: &str) -> Result<(), ImportError> {
        let number = |text: &str| parse_count(text).map_err(|m| bad(entry, m));
        match entry.key.as_str() {
            "pm" | "chdir" => {}
            "pm.start_servers" | "pm.min_spare_servers" | "pm.max_spare_servers" => {
                let key = &entry.key["pm.".len()..];
                if pm == "dynamic" {
                    self.pool.set(key, Value::Int(number(&entry.value)?), None);
                } else {
                    let why =
                        format!("only pm = dynamic uses it (php-fpm ignores it with pm = {pm})");
                    self.pool.comment(dropped(entry, &why));
                }
            }
            "listen" => {
                let (addr, note) = listen_address(&entry.value).map_err(|m| bad(entry, m))?;
                self.listen.set("address", Value::Str(addr), note);
            }
            "listen.backlog" => match entry.value.strip_prefix('-') {
                Some(_) => {
                    number(&entry.value[1..])?;
                    self.listen.comment(dropped(entry, "php-fpm's -1 means the system's maximum; fastpm's default 511 is kept (raise it, and net.core.somaxconn, to queue more)"));
                }
                None => self
                    .listen
                    .set("backlog", Value::Int(number(&entry.value)?), None),
            },
            "listen.allowed_clients" => {
                let clients = entry
                    .value
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                self.listen
                    .set("allowed_clients", Value::List(clients), None);
            }
            key if key.starts_with("env[") => {
                let var = key["env[".len()..].trim_end_matches(']');
                if let Some(from) = entry.value.strip_prefix('$') {
                    let why = format!("php-fpm copies ${from} from its own environment at start; fastpm passes values as written: write the value here");
                    self.env.comment(dropped(entry, &why));
                } else {
                    self.env.set(var, Value::Str(entry.value.clone()), None);
                }
            }
            key => {
                let (name, flag) =
                    is_php_ini(key).expect("pool_rule: the other Special keys are php ini");
                let value = if flag {
                    let on = parse_bool(&entry.value).map_err(|m| bad(entry, m))?;
                    (if on { "1" } else { "0" }).to_string()
                } else {
                    entry.value.clone()
                };
                if self.ini.items.is_empty() {
                    self.ini.comment(ADMIN_NOTE.to_string());
                }
                self.ini.set(name, Value::Str(value), None);
            }
        }
        Ok(())
    }

    fn render(&self, name: &str, out: &mut String) {
        let prefix = format!("pool.{name}");
        self.pool.render(&prefix, out);
        self.listen.render(&format!("{prefix}.listen"), out);
        self.app.render(&format!("{prefix}.app"), out);
        if !self.ini.items.is_empty() {
            self.ini.render(&format!("{prefix}.app.ini"), out);
        }
        if !self.env.items.is_empty() {
            self.env.render(&format!("{prefix}.app.env"), out);
        }
    }
}

/// The pool's `pm` (php-fpm requires one; fastpm's default when it is missing).
fn pool_pm(section: &Section, pool: &mut Table) -> Result<String, ImportError> {
    match section.entries.iter().rev().find(|e| e.key == "pm") {
        Some(e) => match e.value.as_str() {
            "static" | "dynamic" | "ondemand" => Ok(e.value.clone()),
            other => Err(bad(
                e,
                format!("expected static, dynamic or ondemand, got {other:?}"),
            )),
        },
        None => {
            pool.comment(
                "pm: php-fpm requires it and none was given; fastpm's default static is used"
                    .into(),
            );
            Ok("static".into())
        }
    }
}

fn convert_pool(
    section: &Section,
    php_cgi: &(String, Option<String>),
    out: &mut String,
) -> Result<(), ImportError> {
    let name = pool_name(&section.name);
    let mut t = PoolTables::default();
    if name != section.name {
        t.pool.comment(format!(
            "php-fpm pool [{}] ({}) renamed: fastpm pool names use letters, digits, '_' and '-'",
            section.name, section.origin
        ));
    }
    t.pool.set(
        "workers",
        Value::Str("process".into()),
        Some("php-fpm's model: one process per worker".into()),
    );
    t.app.set("kind", Value::Str("php".into()), None);
    t.app
        .set("php_cgi", Value::Str(php_cgi.0.clone()), php_cgi.1.clone());
    let pm = pool_pm(section, &mut t.pool)?;
    t.pool.set("pm", Value::Str(pm.clone()), None);

    for entry in &section.entries {
        match pool_rule(&entry.key) {
            Rule::Key(target, key, kind, note) => {
                let value = convert_value(entry, kind)?;
                if key == "mode" {
                    crate::config::mode::parse_mode(&entry.value).map_err(|m| bad(entry, m))?;
                }
                t.target(target).set(key, value, note.map(str::to_string));
            }
            Rule::Drop(reason) if entry.key.starts_with("listen.") => {
                t.listen.comment(dropped(entry, reason))
            }
            Rule::Drop(reason) => t.pool.comment(dropped(entry, reason)),
            Rule::Special => t.special(entry, &pm)?,
        }
    }

    let last = |key: &str| section.entries.iter().rev().find(|e| e.key == key);
    match last("listen") {
        None => t.listen.comment(format!("listen: php-fpm requires it and pool [{}] has none; fastpm's default unix:RUNTIME_DIR/{name}.sock is used", section.name)),
        Some(listen) if t.listen.has("allowed_clients") && !listen.value.contains(':') && !listen.value.bytes().all(|b| b.is_ascii_digit()) => {
            let entry = last("listen.allowed_clients").expect("set from an entry");
            t.listen.items.retain(|i| !matches!(i, Item::Key { key, .. } if key == "allowed_clients"));
            t.listen.comment(dropped(entry, "it applies to TCP only (php-fpm ignores it for a unix socket too)"));
        }
        Some(_) => {}
    }
    if pm == "dynamic" && !t.pool.has("start_servers") {
        if let (Some(min), Some(max)) = (last("pm.min_spare_servers"), last("pm.max_spare_servers"))
        {
            // Both were read as numbers above.
            let (min, max) = (
                parse_count(&min.value).unwrap_or(1),
                parse_count(&max.value).unwrap_or(3),
            );
            let start = min + max.saturating_sub(min) / 2;
            t.pool.set("start_servers", Value::Int(start), Some("php-fpm's default: min_spare_servers + (max_spare_servers - min_spare_servers) / 2".into()));
        }
    }
    if last("security.limit_extensions").is_none() {
        t.app.comment("security.limit_extensions unset: php-fpm allows .php and .phar, fastpm's default .php only; add limit_extensions = [\".php\", \".phar\"] for phar scripts".into());
    }
    let (root, note) = document_root(last("chroot"), last("chdir"));
    t.app.set("document_root", Value::Str(root), Some(note));
    t.render(&name, out);
    Ok(())
}

/// php-fpm has no document root (the web server's SCRIPT_FILENAME picks the script); fastpm
/// needs one. The chroot and chdir are the best guess, else Debian's /var/www/html.
fn document_root(chroot: Option<&Entry>, chdir: Option<&Entry>) -> (String, String) {
    let why = "php-fpm has no document root (the web server's SCRIPT_FILENAME picks the script); fastpm runs only scripts inside it: SET IT to the site's root (nginx's `root`)";
    match (chroot, chdir) {
        (_, Some(dir)) if dir.value.starts_with('/') => {
            let root = match chroot {
                Some(c) => format!(
                    "{}/{}",
                    c.value.trim_end_matches('/'),
                    dir.value.trim_start_matches('/')
                ),
                None => dir.value.clone(),
            };
            (
                root,
                format!(
                    "from chdir ({}), php-fpm's working directory for the pool. {why}",
                    dir.origin
                ),
            )
        }
        (Some(c), _) => (
            c.value.clone(),
            format!("from chroot ({}). {why}", c.origin),
        ),
        _ => ("/var/www/html".to_string(), format!("a guess. {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let table: &[(&str, Result<&str, &str>)] = &[
            ("30", Ok("30s")),
            ("30s", Ok("30s")),
            ("90s", Ok("90s")),
            ("5m", Ok("5m")),
            ("1h", Ok("1h")),
            ("2d", Ok("48h")),
            ("0", Ok("0s")),
            ("5x", Err("unknown unit 'x'")),
            ("s", Err("expected a duration")),
            ("-3", Err("expected a duration")),
        ];
        for (text, want) in table {
            match (parse_seconds(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn booleans_and_log_levels() {
        for (text, want) in [
            ("yes", true),
            ("On", true),
            ("1", true),
            ("no", false),
            ("off", false),
            ("", false),
        ] {
            assert_eq!(parse_bool(text), Ok(want), "{text}");
        }
        assert!(parse_bool("maybe").is_err());
        for (fpm, ours) in [
            ("alert", "error"),
            ("error", "error"),
            ("warning", "warn"),
            ("notice", "info"),
            ("debug", "debug"),
        ] {
            assert_eq!(log_level(fpm), Ok(ours));
        }
        assert!(log_level("verbose").unwrap_err().contains("notice"));
    }

    #[test]
    fn listen_addresses() {
        let table: &[(&str, &str, Option<&str>)] = &[
            (
                "/run/php/php8.2-fpm.sock",
                "unix:/run/php/php8.2-fpm.sock",
                None,
            ),
            ("php.sock", "unix:php.sock", Some("relative path")),
            ("127.0.0.1:9000", "127.0.0.1:9000", None),
            ("[::1]:9000", "[::1]:9000", None),
            ("9000", "[::]:9000", Some("every address")),
            ("localhost:9001", "127.0.0.1:9001", Some("localhost")),
            ("php.example:9000", "php.example:9000", Some("replace")),
        ];
        for (fpm, want, note) in table {
            let (got, got_note) = listen_address(fpm).unwrap();
            assert_eq!(&got, want, "{fpm}");
            match (note, got_note) {
                (None, None) => {}
                (Some(n), Some(g)) => assert!(g.contains(n), "{fpm}: {g}"),
                (n, g) => panic!("{fpm}: note {g:?}, expected {n:?}"),
            }
        }
        for bad in ["0", "70000", "127.0.0.1:", "127.0.0.1:http"] {
            assert!(listen_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_key_has_a_rule_and_unknown_keys_are_kept() {
        assert_eq!(pool_rule("no_such_key"), Rule::Drop(UNKNOWN_POOL));
        assert_eq!(global_rule("no_such_key"), Rule::Drop(UNKNOWN_GLOBAL));
        assert_eq!(pool_rule("php_admin_flag[log_errors]"), Rule::Special);
        assert_eq!(
            is_php_ini("php_flag[display_errors]"),
            Some(("display_errors", true))
        );
        assert_eq!(is_php_ini("php_value[x"), None);
        assert_eq!(pool_rule("php_value[]"), Rule::Drop(UNKNOWN_POOL));
        assert_eq!(
            pool_rule("access.suppress_path[]"),
            Rule::Drop(NO_SUPPRESS_PATH)
        );
    }
}
