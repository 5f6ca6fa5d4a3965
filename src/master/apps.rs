//! Which app a pool runs, decided once at start: a pure choice plus the factory that builds one
//! app value per worker, and the master's share of a php pool (`PoolPhp`: the shared php-cgi
//! parent of `php_children = "shared"`, kept across reloads while old workers still use it).
//!
//! A pool's `user`/`group` reach the apps of worker *threads* here: the php-cgi and CGI
//! processes they start drop to those ids. The built-in apps (hello, echo, sleep, longpoll) of
//! a thread pool have no process of their own: they run inside the master, as root. Use
//! `workers = "process"` for a pool whose own code must not run as root.

use std::path::Path;

use crate::app::php::{shared, SharedPhp};
use crate::app::{App, Cgi, CgiSettings, Echo, EmbeddedPhp, Hello, Php, PhpSettings, Sleep};
use crate::config::{AppKind, PhpChildren, PoolConfig};
use crate::sys::privileges::Credentials;

/// The app a pool's workers will run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Hello,
    Echo,
    Sleep,
    /// A php-cgi child per worker.
    Php,
    /// PHP inside each worker process (`php_children = "embedded"`).
    EmbeddedPhp,
    /// A process per request.
    Cgi,
    /// `command` itself accepts on the pool's socket (spawn-fcgi's model): the master runs
    /// `max_children` copies, no fastpm worker.
    Exec,
    /// Built-in long-polling (DESIGN.md §8): `sub` requests are held by the master's holder,
    /// never by a worker; no document_root, no php.
    Longpoll,
}

/// Why a configured app kind cannot run (every kind is built in; php needs its binary).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppError {
    #[error("pool {pool}: kind = \"php\" needs php-cgi, but \"{php_cgi}\" is not an executable on PATH (install php-cgi, e.g. scripts/deps.sh run, or set php_cgi)")]
    PhpCgiMissing { pool: String, php_cgi: String },
    #[error("pool {pool}: php_children = \"embedded\" cannot run: {why}")]
    EmbedUnavailable { pool: String, why: String },
}

/// The app `pool` runs under `config` (looks for php-cgi on PATH): [`choose`] with the facts
/// filled in. The master and a worker process ask the same question the same way.
pub fn choose_for(
    config: &crate::config::Config,
    pool: &PoolConfig,
) -> Result<(Choice, Option<String>), AppError> {
    if pool.app.kind == AppKind::Php && pool.app.php_children == PhpChildren::Embedded {
        return match crate::sys::php_embed::available() {
            Ok(()) => Ok((Choice::EmbeddedPhp, None)),
            Err(e) => Err(AppError::EmbedUnavailable {
                pool: pool.name.clone(),
                why: e.to_string(),
            }),
        };
    }
    choose(
        &pool.name,
        pool.app.kind,
        &pool.app.php_cgi,
        crate::config::php_cgi_on_path(&pool.app.php_cgi).is_some(),
        matches!(config.source, crate::config::ConfigSource::Embedded),
    )
}

/// Pick the app for `kind`. The embedded default asks for `php` and promises the built-in `hello`
/// when php-cgi cannot be used; `fallback_allowed` says the config is the embedded default.
/// Returns the choice and, when it differs from what was asked, the reason to log.
pub fn choose(
    pool: &str,
    kind: AppKind,
    php_cgi: &str,
    php_cgi_found: bool,
    fallback_allowed: bool,
) -> Result<(Choice, Option<String>), AppError> {
    match kind {
        AppKind::Hello => Ok((Choice::Hello, None)),
        AppKind::Echo => Ok((Choice::Echo, None)),
        AppKind::Sleep => Ok((Choice::Sleep, None)),
        AppKind::Cgi => Ok((Choice::Cgi, None)),
        AppKind::Exec => Ok((Choice::Exec, None)),
        AppKind::Longpoll => Ok((Choice::Longpoll, None)),
        AppKind::Php if php_cgi_found => Ok((Choice::Php, None)),
        AppKind::Php if fallback_allowed => Ok((
            Choice::Hello,
            Some(format!(
                "pool {pool}: serving the built-in hello app: php-cgi (\"{php_cgi}\") is not on PATH"
            )),
        )),
        AppKind::Php => Err(AppError::PhpCgiMissing {
            pool: pool.to_string(),
            php_cgi: php_cgi.to_string(),
        }),
    }
}

/// Build the app of worker number `worker` of `pool` (private files go under `runtime_dir`).
/// `children_as`: the ids the app's child processes (php-cgi, CGI scripts) run as — the pool's
/// credentials for a worker thread, `None` in a worker process (it already runs as them).
pub fn build(
    choice: &Choice,
    pool: &PoolConfig,
    runtime_dir: &Path,
    worker: usize,
    children_as: Option<&Credentials>,
) -> Box<dyn App> {
    match choice {
        Choice::Hello => Box::new(Hello::new(&pool.name)),
        Choice::Echo => Box::new(Echo),
        Choice::Sleep => Box::new(Sleep),
        Choice::Php => {
            let mut settings = PhpSettings::for_worker(pool, runtime_dir, worker);
            settings.child.credentials = children_as.cloned();
            Box::new(Php::new(settings))
        }
        Choice::EmbeddedPhp => Box::new(EmbeddedPhp::new(pool)),
        Choice::Cgi => {
            let mut settings = CgiSettings::from_pool(pool);
            settings.credentials = children_as.cloned();
            Box::new(Cgi::new(settings))
        }
        Choice::Longpoll => crate::app::longpoll_app(pool),
        Choice::Exec => unreachable!("an exec pool runs its command, never fastpm workers"),
    }
}

/// Whether `choice` for `pool` runs one php-cgi parent for the whole pool, started by the master.
pub fn runs_shared_php(choice: &Choice, pool: &PoolConfig) -> bool {
    *choice == Choice::Php && pool.app.php_children == PhpChildren::Shared
}

/// A pool's shared php-cgi parents (`php_children = "shared"`; empty otherwise): the one its
/// current workers use and those that workers of an earlier generation still use after a
/// reload changed what shapes php-cgi (`shared::key`). Dropped after the pool's workers.
#[derive(Default)]
pub struct PoolPhp {
    current: Option<SharedPhp>,
    retired: Vec<SharedPhp>,
}

impl PoolPhp {
    /// Start the pool's php-cgi parent when it runs one, as `credentials` (the pool's
    /// `user`/`group`), on its socket under `runtime_dir` (the pool's directory exists).
    pub fn start(
        choice: &Choice,
        pool: &PoolConfig,
        runtime_dir: &Path,
        credentials: Option<&Credentials>,
    ) -> std::io::Result<PoolPhp> {
        let mut php = PoolPhp::default();
        if runs_shared_php(choice, pool) {
            php.current = Some(start_shared(pool, runtime_dir, credentials)?);
        }
        Ok(php)
    }

    /// After a reload: a pool whose php-cgi settings changed gets a new parent for its new
    /// workers; the old one stays until the old workers have left (`forget_retired`).
    pub fn reload(
        &mut self,
        choice: &Choice,
        pool: &PoolConfig,
        runtime_dir: &Path,
        credentials: Option<&Credentials>,
    ) -> std::io::Result<()> {
        let wanted = runs_shared_php(choice, pool).then(|| shared::socket_path(pool, runtime_dir));
        let current = self.current.as_ref().map(|s| s.socket().to_path_buf());
        if wanted == current {
            return Ok(());
        }
        let next = match wanted {
            Some(_) => Some(start_shared(pool, runtime_dir, credentials)?),
            None => None,
        };
        if let Some(old) = std::mem::replace(&mut self.current, next) {
            tracing::info!(pool = %pool.name, "php-cgi settings changed: a new shared php-cgi serves the new workers; the old one stays until the old workers have left");
            self.retired.push(old);
        }
        Ok(())
    }

    /// Stop the parents only earlier workers used, once none of them runs any more.
    pub fn forget_retired(&mut self, earlier_workers_running: bool) {
        if !earlier_workers_running {
            self.retired.clear();
        }
    }
}

fn start_shared(
    pool: &PoolConfig,
    runtime_dir: &Path,
    credentials: Option<&Credentials>,
) -> std::io::Result<SharedPhp> {
    let (_, mut spec) = crate::app::php::php_cgi_for(pool, runtime_dir, 0);
    spec.credentials = credentials.cloned();
    SharedPhp::start(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_table() {
        let c = |kind, found, embedded| choose("p", kind, "php-cgi", found, embedded);
        assert_eq!(c(AppKind::Hello, false, false), Ok((Choice::Hello, None)));
        assert_eq!(c(AppKind::Sleep, true, true), Ok((Choice::Sleep, None)));
        assert_eq!(c(AppKind::Php, true, true), Ok((Choice::Php, None)));
        assert_eq!(c(AppKind::Php, true, false), Ok((Choice::Php, None)));
        let (choice, why) = c(AppKind::Php, false, true).unwrap();
        assert_eq!(choice, Choice::Hello);
        assert!(why.unwrap().contains("not on PATH"));
        assert!(matches!(
            c(AppKind::Php, false, false),
            Err(AppError::PhpCgiMissing { .. })
        ));
        assert_eq!(c(AppKind::Cgi, false, false), Ok((Choice::Cgi, None)));
        assert_eq!(c(AppKind::Exec, false, false), Ok((Choice::Exec, None)));
        // Built in: needs neither php-cgi nor the embedded default's fallback.
        assert_eq!(
            c(AppKind::Longpoll, false, false),
            Ok((Choice::Longpoll, None))
        );
    }
}
