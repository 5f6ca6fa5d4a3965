//! What `fastpm check` and `fastpm run` both refuse before anything is bound or started: the
//! facts a config names but cannot vouch for by itself (a user that exists, a php-cgi on PATH,
//! an exec program that can be started). Every app kind, `longpoll` included, is built in.
//!
//! Why one function for both: `check` used to load the config only, so it said "ok" to a
//! config that `run` then refused (and `run` exited 1, as for a runtime failure). Now both ask
//! [`check`], and a refusal is a [`PreflightError`], which the command line maps to exit 2.
//!
//! What stays a runtime failure (exit 1): what depends on the moment, not on the config — an
//! address already in use, a full disk, a php-cgi that crashes.

use crate::config::{find_executable, AppKind, Config, PoolConfig};
use crate::sys::privileges::{self, PrivilegeError};

use super::apps::{self, AppError};

/// One reason a config cannot run on this machine.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// `kind` not runnable here (php-cgi missing).
    #[error(transparent)]
    App(#[from] AppError),
    /// `user`/`group` that do not resolve.
    #[error("pool {pool}: user/group: {source}")]
    Credentials {
        pool: String,
        #[source]
        source: PrivilegeError,
    },
    /// An exec pool's program is not an executable file (as a path or on PATH).
    #[error("pool {pool}: exec command {program:?} is not an executable on PATH (set [pool.{pool}.app] command to a program that exists)")]
    ExecMissing { pool: String, program: String },
}

/// Every refusal `run` would make from the config alone, for every pool; the first one found.
pub fn check(config: &Config) -> Result<(), PreflightError> {
    for pool in &config.pools {
        check_pool(config, pool)?;
    }
    Ok(())
}

fn check_pool(config: &Config, pool: &PoolConfig) -> Result<(), PreflightError> {
    apps::choose_for(config, pool)?;
    privileges::resolve(pool.user.as_deref(), pool.group.as_deref()).map_err(|source| {
        PreflightError::Credentials {
            pool: pool.name.clone(),
            source,
        }
    })?;
    if pool.app.kind == AppKind::Exec {
        // An empty command is refused by the config itself (file:line:column).
        if let Some(program) = pool.app.command.first() {
            let path = std::env::var_os("PATH");
            if find_executable(program, path.as_deref()).is_none() {
                return Err(PreflightError::ExecMissing {
                    pool: pool.name.clone(),
                    program: program.clone(),
                });
            }
        }
    }
    Ok(())
}
