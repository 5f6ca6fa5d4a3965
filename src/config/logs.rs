//! The logging keys (src/logs), kept apart from the rest of the schema: `[global] error_log`,
//! `log_limit`; `[pool.NAME] access_log`, `access_format`, `slowlog` — php-fpm's names
//! (`access.log` and `access.format` written with `_`, as every fastpm key).

use std::path::PathBuf;

use super::builder::{Builder, Keys};
use super::error::ConfigError;
use super::raw::{RawGlobal, RawPool};
use crate::logs::{
    AccessFormat, DEFAULT_ACCESS_FORMAT, DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT, MIN_LOG_LIMIT,
};

/// `[global]`'s logging keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalLogs {
    /// Where the master's and workers' own messages go; `None` = stderr (the default). Absolute.
    pub error_log: Option<PathBuf>,
    /// The longest line an application's stderr (and an access or slow-log line) is logged
    /// with, in bytes; longer ones are cut and end in `...`.
    pub log_limit: usize,
}

impl Default for GlobalLogs {
    fn default() -> Self {
        Self {
            error_log: None,
            log_limit: DEFAULT_LOG_LIMIT,
        }
    }
}

/// A pool's logging keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolLogs {
    /// One line per request; `None` = off (the default, as php-fpm). Absolute.
    pub access_log: Option<PathBuf>,
    /// The line's format (checked when loaded: `crate::logs::AccessFormat`).
    pub access_format: String,
    /// Where requests slower than `slow_request` are named; `None` = the error log only.
    pub slowlog: Option<PathBuf>,
}

impl Default for PoolLogs {
    fn default() -> Self {
        Self {
            access_log: None,
            access_format: DEFAULT_ACCESS_FORMAT.to_string(),
            slowlog: None,
        }
    }
}

pub(crate) fn build_global_logs(
    raw: &RawGlobal,
    b: &Builder,
    keys: &Keys,
) -> Result<GlobalLogs, ConfigError> {
    let limit = b.number(
        &raw.log_limit,
        keys.key("log_limit"),
        DEFAULT_LOG_LIMIT as u32,
        MIN_LOG_LIMIT as u32,
    )?;
    if let Some(field) = raw
        .log_limit
        .as_ref()
        .filter(|_| limit as usize > MAX_LOG_LIMIT)
    {
        return Err(b.invalid(
            field,
            keys.key("log_limit"),
            format!("must be at most {MAX_LOG_LIMIT} (it is {limit}): a worker's log line must fit one atomic pipe write (PIPE_BUF, 4096 bytes)"),
        ));
    }
    Ok(GlobalLogs {
        error_log: Builder::optional(&raw.error_log).map(|p| b.resolve(&p)),
        log_limit: limit as usize,
    })
}

pub(crate) fn build_pool_logs(
    raw: &RawPool,
    b: &Builder,
    keys: &Keys,
) -> Result<PoolLogs, ConfigError> {
    let access_format = Builder::text(&raw.access_format, DEFAULT_ACCESS_FORMAT);
    if let (Some(field), Err(e)) = (&raw.access_format, AccessFormat::parse(&access_format)) {
        return Err(b.invalid(field, keys.key("access_format"), e.0));
    }
    Ok(PoolLogs {
        access_log: Builder::optional(&raw.access_log).map(|p| b.resolve(&p)),
        access_format,
        slowlog: Builder::optional(&raw.slowlog).map(|p| b.resolve(&p)),
    })
}
