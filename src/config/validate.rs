//! Rules between values (php-fpm's pm rules, what each app kind needs, shared addresses).
//! A rule about two keys points at the second one, i.e. the one written later in the file
//! (where the contradiction appears); when neither is written, at the setting that switched
//! the rule on (`pm`, `kind`, `policy`).

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use super::builder::{span_of, Builder, Keys};
use super::enums::{AppKind, OverloadPolicy, PhpChildren, PmKind, WorkerKind};
use super::error::{ConfigError, ConfigErrorKind};
use super::locate::key_segment;
use super::raw::{RawFile, RawPool};
use super::types::{GlobalConfig, PoolConfig};
use crate::listen::ListenAddress;

/// A candidate place to report a rule: the value's span (if written) and its key.
type Place = (Option<Range<usize>>, String);

/// An error at the last written of `places`, else at `fallback`.
fn rule_error(b: &Builder, places: Vec<Place>, fallback: Place, message: String) -> ConfigError {
    let (span, key) = places
        .into_iter()
        .filter(|(span, _)| span.is_some())
        .max_by_key(|(span, _)| span.as_ref().map(|s| s.start))
        .unwrap_or(fallback);
    b.site.at(span, key, ConfigErrorKind::Rule, message)
}

/// Rules inside one pool.
pub(crate) fn pool_rules(pool: &PoolConfig, raw: &RawPool, b: &Builder) -> Result<(), ConfigError> {
    let keys = Keys(format!("pool.{}", key_segment(&pool.name)));
    let pm_place = (span_of(&raw.pm), keys.key("pm"));
    let place = |span, field: &str| (span, keys.key(field));

    if pool.pm == PmKind::Dynamic {
        let min = place(span_of(&raw.min_spare_servers), "min_spare_servers");
        let start = place(span_of(&raw.start_servers), "start_servers");
        let max = place(span_of(&raw.max_spare_servers), "max_spare_servers");
        let children = place(span_of(&raw.max_children), "max_children");
        let rule = "pm = \"dynamic\" needs 1 <= min_spare_servers <= start_servers <= max_spare_servers <= max_children";
        let checks = [
            (
                1,
                pool.min_spare_servers,
                "1",
                "min_spare_servers",
                vec![min.clone()],
            ),
            (
                pool.min_spare_servers,
                pool.start_servers,
                "min_spare_servers",
                "start_servers",
                vec![min, start.clone()],
            ),
            (
                pool.start_servers,
                pool.max_spare_servers,
                "start_servers",
                "max_spare_servers",
                vec![start, max.clone()],
            ),
            (
                pool.max_spare_servers,
                pool.max_children,
                "max_spare_servers",
                "max_children",
                vec![max, children],
            ),
        ];
        for (low, high, low_name, high_name, places) in checks {
            if low > high {
                let message = if low_name == "1" {
                    format!("{rule}, but {high_name} is {high}")
                } else {
                    format!("{rule}, but {low_name} ({low}) > {high_name} ({high})")
                };
                return Err(rule_error(b, places, pm_place, message));
            }
        }
    }
    if pool.pm == PmKind::Ondemand && pool.idle_timeout == Duration::ZERO {
        let places = vec![
            place(span_of(&raw.idle_timeout), "idle_timeout"),
            pm_place.clone(),
        ];
        return Err(rule_error(
            b,
            places,
            pm_place,
            "pm = \"ondemand\" needs idle_timeout > 0s".into(),
        ));
    }

    app_rules(pool, raw, b)?;

    if let (Some(status), Some(ping)) = (&pool.status_path, &pool.ping_path) {
        if status == ping {
            let ping_place = place(span_of(&raw.ping_path), "ping_path");
            let places = vec![
                ping_place.clone(),
                place(span_of(&raw.status_path), "status_path"),
            ];
            return Err(rule_error(
                b,
                places,
                ping_place,
                format!("ping_path and status_path are both {status:?}"),
            ));
        }
    }

    if pool.listen.address.is_unix() && !pool.listen.allowed_clients.is_empty() {
        let clients = place(
            span_of(&raw.listen.allowed_clients),
            "listen.allowed_clients",
        );
        let places = vec![
            clients.clone(),
            place(span_of(&raw.listen.address), "listen.address"),
        ];
        let message = format!(
            "allowed_clients applies to TCP addresses only, but the address is {}",
            pool.listen.address
        );
        return Err(rule_error(b, places, clients, message));
    }

    overload_rules(pool, raw, b, &keys)
}

fn app_rules(pool: &PoolConfig, raw: &RawPool, b: &Builder) -> Result<(), ConfigError> {
    let keys = Keys(format!("pool.{}.app", key_segment(&pool.name)));
    let app = &raw.app;
    let kind_place = (span_of(&app.kind), keys.key("kind"));
    let kind = pool.app.kind;
    let empty = |field: &toml::Spanned<String>| field.get_ref().is_empty();
    if matches!(kind, AppKind::Php | AppKind::Cgi) && app.document_root.as_ref().is_some_and(empty)
    {
        let places = vec![
            (span_of(&app.document_root), keys.key("document_root")),
            kind_place.clone(),
        ];
        return Err(rule_error(
            b,
            places,
            kind_place,
            format!("kind = \"{kind}\" needs a document_root"),
        ));
    }
    if kind == AppKind::Php && app.php_cgi.as_ref().is_some_and(empty) {
        let places = vec![
            (span_of(&app.php_cgi), keys.key("php_cgi")),
            kind_place.clone(),
        ];
        return Err(rule_error(
            b,
            places,
            kind_place,
            "kind = \"php\" needs php_cgi (a binary name or path)".into(),
        ));
    }
    if kind == AppKind::Php
        && pool.app.php_children == PhpChildren::Embedded
        && pool.workers != WorkerKind::Process
    {
        let children_place = (span_of(&app.php_children), keys.key("php_children"));
        let places = vec![
            children_place.clone(),
            (
                span_of(&raw.workers),
                format!("pool.{}.workers", key_segment(&pool.name)),
            ),
        ];
        let message = "php_children = \"embedded\" needs workers = \"process\" (libphp runs one interpreter per process)";
        return Err(rule_error(b, places, children_place, message.into()));
    }
    if kind == AppKind::Exec
        && pool
            .app
            .command
            .first()
            .is_none_or(|argv0| argv0.is_empty())
    {
        let places = vec![
            (span_of(&app.command), keys.key("command")),
            kind_place.clone(),
        ];
        let message = "kind = \"exec\" needs command = [\"/path/to/program\", \"arg\", ...]";
        return Err(rule_error(b, places, kind_place, message.into()));
    }
    Ok(())
}

fn overload_rules(
    pool: &PoolConfig,
    raw: &RawPool,
    b: &Builder,
    pool_keys: &Keys,
) -> Result<(), ConfigError> {
    let keys = Keys(pool_keys.key("overload"));
    let overload = &raw.overload;
    let policy_place = (span_of(&overload.policy), keys.key("policy"));
    let zero = |value: Duration, span, field: &str, policy: &str| {
        (value == Duration::ZERO).then(|| {
            let places = vec![(span, keys.key(field)), policy_place.clone()];
            rule_error(
                b,
                places,
                policy_place.clone(),
                format!("policy = \"{policy}\" needs {field} > 0s"),
            )
        })
    };
    let failure = match pool.overload.policy {
        OverloadPolicy::None => None,
        OverloadPolicy::Deadline => zero(
            pool.overload.max_queue_wait,
            span_of(&overload.max_queue_wait),
            "max_queue_wait",
            "deadline",
        ),
        OverloadPolicy::Codel => zero(
            pool.overload.target,
            span_of(&overload.target),
            "target",
            "codel",
        )
        .or_else(|| {
            zero(
                pool.overload.interval,
                span_of(&overload.interval),
                "interval",
                "codel",
            )
        }),
    };
    failure.map_or(Ok(()), Err)
}

/// Whether two addresses cannot both be bound.
fn clash(a: &ListenAddress, b: &ListenAddress) -> bool {
    match (a, b) {
        (ListenAddress::Tcp(a), ListenAddress::Tcp(b)) => tcp_clash(*a, *b),
        _ => a == b,
    }
}

/// Same port and the same IP, or a wildcard that covers the other (`[::]` covers IPv4 too on
/// Linux's default dual-stack sockets). Port 0 asks the kernel for a free port: never a clash.
fn tcp_clash(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let covers = |w: SocketAddr, other: SocketAddr| {
        w.ip().is_unspecified() && (w.is_ipv6() || other.is_ipv4())
    };
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

/// Rules between pools, and between pools and the status listener.
pub(crate) fn cross_pool_rules(
    global: &GlobalConfig,
    pools: &[PoolConfig],
    raw: &RawFile,
    b: &Builder,
) -> Result<(), ConfigError> {
    for (i, pool) in pools.iter().enumerate() {
        let raw_pool = &raw.pool.0[i].1;
        let key = format!("pool.{}.listen.address", key_segment(&pool.name));
        let span = span_of(&raw_pool.listen.address)
            .or_else(|| super::locate::key_span(b.doc, &["pool", &pool.name]));
        let address = &pool.listen.address;
        if let Some(earlier) = pools[..i]
            .iter()
            .find(|p| clash(&p.listen.address, address))
        {
            let message = format!(
                "{address} clashes with {} of pool {:?}; two pools may not share an address",
                earlier.listen.address, earlier.name
            );
            return Err(b.site.at(span, key, ConfigErrorKind::Rule, message));
        }
        if let (Some(status), ListenAddress::Tcp(tcp)) = (global.status_listen, address) {
            if tcp_clash(status, *tcp) {
                let message = format!("{address} clashes with global.status_listen ({status})");
                return Err(b.site.at(span, key, ConfigErrorKind::Rule, message));
            }
        }
    }
    Ok(())
}
