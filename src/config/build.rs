//! From the file as written (`raw`) to the effective `Config`: applies DESIGN.md §3's defaults,
//! parses words, durations, modes, addresses and IPs, resolves relative paths against the
//! config's directory, and checks single values. Rules between values live in `validate`.

use std::net::SocketAddr;
use std::time::Duration;

use super::broker::{parse_broker, BrokerUrl};
use super::build_app::build_app;
use super::build_listen::build_listen;
use super::builder::{span_of, Builder, Keys};
use super::defaults;
use super::enums::{AcceptLock, LogFormat, LogLevel, OverloadPolicy, PmKind, WorkerKind};
use super::error::{ConfigError, ConfigErrorKind};
use super::locate::{is_bare_key, key_segment, key_span};
use super::logs::{build_global_logs, build_pool_logs};
use super::raw::{RawFile, RawGlobal, RawOverload, RawPool};
use super::runtime_dir;
use super::types::{Config, ConfigSource, GlobalConfig, OverloadConfig, PoolConfig};
use super::validate;

/// Build and check the whole configuration.
pub(crate) fn build(
    raw: RawFile,
    b: &Builder,
    source: ConfigSource,
) -> Result<Config, ConfigError> {
    let global = build_global(&raw.global, b)?;
    if raw.pool.0.is_empty() {
        return Err(b.site.at(
            key_span(b.doc, &["pool"]),
            "pool",
            ConfigErrorKind::Rule,
            "at least one pool is required: add a [pool.NAME] table",
        ));
    }
    let mut pools = Vec::with_capacity(raw.pool.0.len());
    for (name, raw_pool) in &raw.pool.0 {
        let pool = build_pool(name, raw_pool, &global, b)?;
        validate::pool_rules(&pool, raw_pool, b)?;
        pools.push(pool);
    }
    validate::cross_pool_rules(&global, &pools, &raw, b)?;
    Ok(Config {
        source,
        global,
        pools,
    })
}

fn build_global(raw: &RawGlobal, b: &Builder) -> Result<GlobalConfig, ConfigError> {
    let keys = Keys("global".into());
    let status_listen = match &raw.status_listen {
        Some(v) if v.get_ref().is_empty() => None,
        field => {
            let text = Builder::text(field, defaults::STATUS_LISTEN);
            let addr = text.parse::<SocketAddr>().map_err(|_| {
                let message = format!(
                    "{text:?} is not an IP:PORT address (e.g. \"127.0.0.1:9180\"; \"\" = off)"
                );
                b.site.at(
                    span_of(field),
                    keys.key("status_listen"),
                    ConfigErrorKind::InvalidValue,
                    message,
                )
            })?;
            Some(addr)
        }
    };
    let configured = match &raw.runtime_dir {
        None => None,
        field => Some(b.resolve(&b.required_text(field, keys.key("runtime_dir"), "")?)),
    };
    let systemd = std::env::var_os(runtime_dir::RUNTIME_DIRECTORY_ENV);
    let xdg = std::env::var_os("XDG_RUNTIME_DIR");
    let (runtime_dir, runtime_dir_source) = runtime_dir::choose(
        configured,
        &runtime_dir::RuntimeDirInputs {
            runtime_directory: systemd.as_deref(),
            xdg_runtime_dir: xdg.as_deref(),
            euid: nix::unistd::geteuid().as_raw(),
        },
    );
    Ok(GlobalConfig {
        log_level: b.word(&raw.log_level, keys.key("log_level"), LogLevel::Info)?,
        log_format: b.word(&raw.log_format, keys.key("log_format"), LogFormat::Text)?,
        status_listen,
        runtime_dir,
        runtime_dir_source,
        shutdown_timeout: b.duration(
            &raw.shutdown_timeout,
            keys.key("shutdown_timeout"),
            defaults::SHUTDOWN_TIMEOUT,
        )?,
        pid_file: Builder::optional(&raw.pid_file).map(|p| b.resolve(&p)),
        broker: match &raw.broker {
            None => BrokerUrl::Memory,
            Some(v) => parse_broker(v.get_ref(), |p| b.resolve(p))
                .map_err(|m| b.invalid(v, keys.key("broker"), m))?,
        },
        logs: build_global_logs(raw, b, &keys)?,
    })
}

fn build_pool(
    name: &str,
    raw: &RawPool,
    global: &GlobalConfig,
    b: &Builder,
) -> Result<PoolConfig, ConfigError> {
    let keys = Keys(format!("pool.{}", key_segment(name)));
    if !is_bare_key(name) {
        return Err(b.site.at(
            key_span(b.doc, &["pool", name]),
            keys.0,
            ConfigErrorKind::InvalidValue,
            format!("pool name {name:?} may only contain letters, digits, '_' and '-' (it is used in socket paths and status URLs)"),
        ));
    }
    Ok(PoolConfig {
        name: name.to_string(),
        workers: b.word(&raw.workers, keys.key("workers"), WorkerKind::Process)?,
        accept_lock: b.word(&raw.accept_lock, keys.key("accept_lock"), AcceptLock::None)?,
        pm: b.word(&raw.pm, keys.key("pm"), PmKind::Static)?,
        max_children: b.number(
            &raw.max_children,
            keys.key("max_children"),
            defaults::MAX_CHILDREN,
            1,
        )?,
        start_servers: b.number(
            &raw.start_servers,
            keys.key("start_servers"),
            defaults::START_SERVERS,
            0,
        )?,
        min_spare_servers: b.number(
            &raw.min_spare_servers,
            keys.key("min_spare_servers"),
            defaults::MIN_SPARE_SERVERS,
            0,
        )?,
        max_spare_servers: b.number(
            &raw.max_spare_servers,
            keys.key("max_spare_servers"),
            defaults::MAX_SPARE_SERVERS,
            0,
        )?,
        idle_timeout: b.duration(
            &raw.idle_timeout,
            keys.key("idle_timeout"),
            defaults::IDLE_TIMEOUT,
        )?,
        max_requests: raw.max_requests.as_ref().map_or(0, |v| *v.get_ref()),
        max_connections: b.number(
            &raw.max_connections,
            keys.key("max_connections"),
            defaults::MAX_CONNECTIONS,
            1,
        )?,
        request_timeout: b.duration(
            &raw.request_timeout,
            keys.key("request_timeout"),
            Duration::ZERO,
        )?,
        slow_request: b.duration(&raw.slow_request, keys.key("slow_request"), Duration::ZERO)?,
        client_timeout: b.duration_in(
            &raw.client_timeout,
            keys.key("client_timeout"),
            defaults::CLIENT_TIMEOUT,
            defaults::MIN_CLIENT_TIMEOUT..=defaults::MAX_CLIENT_TIMEOUT,
        )?,
        max_params: b.size(
            &raw.max_params,
            keys.key("max_params"),
            defaults::MAX_PARAMS,
            defaults::MIN_MAX_PARAMS,
        )?,
        max_body: b.size(&raw.max_body, keys.key("max_body"), defaults::MAX_BODY, 0)?,
        status_path: b.url_path(
            &raw.status_path,
            keys.key("status_path"),
            defaults::STATUS_PATH,
        )?,
        ping_path: b.url_path(&raw.ping_path, keys.key("ping_path"), defaults::PING_PATH)?,
        ping_response: Builder::text(&raw.ping_response, defaults::PING_RESPONSE),
        user: Builder::optional(&raw.user),
        group: Builder::optional(&raw.group),
        listen: build_listen(name, &raw.listen, global, b, &Keys(keys.key("listen")))?,
        app: build_app(&raw.app, b, &Keys(keys.key("app")))?,
        overload: build_overload(&raw.overload, b, &Keys(keys.key("overload")))?,
        logs: build_pool_logs(raw, b, &keys)?,
    })
}

fn build_overload(
    raw: &RawOverload,
    b: &Builder,
    keys: &Keys,
) -> Result<OverloadConfig, ConfigError> {
    Ok(OverloadConfig {
        policy: b.word(&raw.policy, keys.key("policy"), OverloadPolicy::None)?,
        max_queue_wait: b.duration(
            &raw.max_queue_wait,
            keys.key("max_queue_wait"),
            Duration::ZERO,
        )?,
        target: b.duration(&raw.target, keys.key("target"), defaults::TARGET)?,
        interval: b.duration(&raw.interval, keys.key("interval"), defaults::INTERVAL)?,
    })
}
