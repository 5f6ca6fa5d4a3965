//! Which listen backlog a pool gets: `--backlog` > `LISTENQ` env > config `backlog` > 511
//! (DESIGN.md §2; `LISTENQ` as in UNIX Network Programming's `Listen()` wrapper). Pure.

use std::fmt;

use super::defaults::MAX_BACKLOG;

/// The classic default (nginx, redis, php-fpm for years).
pub const DEFAULT_BACKLOG: u32 = 511;

/// Where the effective backlog came from (shown by `fastpm check` and the startup log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BacklogSource {
    /// `fastpm run --backlog N`.
    Cli,
    /// The `LISTENQ` environment variable.
    ListenqEnv,
    /// The pool's `listen.backlog`.
    Config,
    /// Nothing set: [`DEFAULT_BACKLOG`].
    Default,
}

impl fmt::Display for BacklogSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cli => "--backlog",
            Self::ListenqEnv => "LISTENQ",
            Self::Config => "config",
            Self::Default => "default",
        })
    }
}

/// A backlog override that cannot be used (exit code 2).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BacklogError {
    /// `LISTENQ` is set but not an integer in 1..=MAX_BACKLOG.
    #[error("LISTENQ={value:?} is not a valid listen backlog: expected a positive integer up to {MAX_BACKLOG}")]
    Listenq {
        /// The variable's value as found.
        value: String,
    },
    /// `--backlog` is 0 or above what `listen()` takes.
    #[error("--backlog {value} is not a valid listen backlog: expected 1 to {MAX_BACKLOG}")]
    Cli {
        /// The value given.
        value: u32,
    },
}

/// The effective backlog and where it came from. `config` is the pool's `listen.backlog`
/// (already checked at load). Only decimal digits are accepted in `LISTENQ`.
pub fn effective_backlog(
    cli: Option<u32>,
    listenq_env: Option<&str>,
    config: Option<u32>,
) -> Result<(u32, BacklogSource), BacklogError> {
    let in_range = |n: u32| (1..=MAX_BACKLOG).contains(&n);
    if let Some(value) = cli {
        return if in_range(value) {
            Ok((value, BacklogSource::Cli))
        } else {
            Err(BacklogError::Cli { value })
        };
    }
    if let Some(text) = listenq_env {
        let parsed = Some(text)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|n| in_range(*n));
        return parsed
            .map(|n| (n, BacklogSource::ListenqEnv))
            .ok_or_else(|| BacklogError::Listenq {
                value: text.to_string(),
            });
    }
    Ok(match config {
        Some(value) => (value, BacklogSource::Config),
        None => (DEFAULT_BACKLOG, BacklogSource::Default),
    })
}
