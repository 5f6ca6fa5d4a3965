//! `php_children = "embedded"`: the worker process runs PHP itself (`sys::php_embed`), as a
//! php-fpm child does — no php-cgi, no second process, no relay. What stays fastpm's: which
//! script runs (`script`, the same checks as the php-cgi layouts), the FastCGI answer, status,
//! queue wait and shedding (the worker's, before the app). `request_timeout` is the worker
//! process's watchdog (`worker::watchdog`: 504, then the process is replaced, as php-fpm's
//! `request_terminate_timeout` kills its child).
//!
//! $_SERVER holds the process environment as php-fpm makes it (`clear_env`, the default: the
//! pool's `env` only; otherwise the worker's own plus `env`) and then the request's params,
//! with SCRIPT_FILENAME set to the resolved script and the path
//! info split off an Apache proxy SCRIPT_FILENAME as in the other layouts. PHP's error messages
//! go to fastpm's log and, as "PHP message: …" on STDERR, to the web server (php-fpm's way:
//! nginx logs "FastCGI sent in stderr").

use std::io;
use std::path::PathBuf;

use super::{
    find_script, replaced_params, script_params, ScriptCache, FAILED_APP_STATUS,
    MAX_FORWARDED_STDERR,
};
use crate::app::{plain_response, App};
use crate::config::PoolConfig;
use crate::fastcgi::{Request, ResponseWriter};
use crate::sys::php_embed::{Interpreter, PhpRequest, Ran, Sink};

/// One worker process's PHP.
pub struct EmbeddedPhp {
    pool: String,
    /// `document_root`, canonical (see `PhpSettings::document_root`).
    document_root: PathBuf,
    limit_extensions: Vec<String>,
    /// The process environment (see [`php_environment`]), as php-fpm's: in $_SERVER below the
    /// params.
    env: Vec<(Vec<u8>, Vec<u8>)>,
    /// PHP, or why it could not start (logged once; every request then gets 503, as when
    /// php-cgi cannot start).
    php: Result<Interpreter, String>,
    /// Scripts resolved recently (see `cache`).
    scripts: ScriptCache,
}

impl EmbeddedPhp {
    /// The app of a worker forked from the pool's php parent: it takes over the PHP the parent
    /// started (`worker::php_parent`).
    pub fn new(pool: &PoolConfig) -> Self {
        let app = &pool.app;
        let php = Interpreter::take_parked().map_err(|e| {
            tracing::error!(pool = %pool.name, "no PHP in this worker: {e}");
            e.to_string()
        });
        Self {
            pool: pool.name.clone(),
            document_root: super::canonical_document_root(pool),
            limit_extensions: app.limit_extensions.clone(),
            env: php_environment(pool),
            php,
            scripts: ScriptCache::default(),
        }
    }
}

/// Make this process's environment what php-fpm gives a child (`clear_env`: empty, then
/// `env`; otherwise the worker's own plus `env`), so that getenv() falls back on nothing else;
/// and return it for $_SERVER (php-fpm imports the environment there too). Called on the
/// worker's only thread (PHP's start-up, in the php parent, read PHPRC / PHP_INI_SCAN_DIR).
pub fn php_environment(pool: &PoolConfig) -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::os::unix::ffi::OsStringExt;
    if pool.app.clear_env {
        for (name, _) in std::env::vars_os() {
            std::env::remove_var(name);
        }
    }
    for (name, value) in &pool.app.env {
        std::env::set_var(name, value);
    }
    std::env::vars_os()
        .map(|(k, v)| (k.into_vec(), v.into_vec()))
        .collect()
}

/// Where PHP's output goes during one request.
struct Answer<'o, 'w> {
    out: &'o mut ResponseWriter<'w>,
    pool: &'o str,
    /// "PHP message: …" lines for the web server, sent after the output (bounded).
    stderr: Vec<u8>,
    /// The first failed write: the client is gone; the request's result is this error.
    client_error: Option<io::Error>,
}

impl<'w> Answer<'_, 'w> {
    /// `write` to the answer, unless an earlier write failed (the client is gone: PHP is told
    /// to stop writing); false once one has.
    fn write(&mut self, write: impl FnOnce(&mut ResponseWriter<'w>) -> io::Result<()>) -> bool {
        if self.client_error.is_some() {
            return false;
        }
        match write(self.out) {
            Ok(()) => true,
            Err(e) => {
                self.client_error = Some(e);
                false
            }
        }
    }
}

impl Sink for Answer<'_, '_> {
    fn stdout(&mut self, bytes: &[u8]) -> bool {
        self.write(|out| out.stdout(bytes))
    }

    fn flush(&mut self) -> bool {
        self.write(|out| out.flush())
    }

    fn finish(&mut self) -> bool {
        let stderr = std::mem::take(&mut self.stderr);
        self.write(|out| {
            if !stderr.is_empty() {
                out.stderr(&stderr)?;
            }
            // php-fpm ends every request with app status 0.
            out.end_early(0)
        })
    }

    fn message(&mut self, text: &[u8]) {
        for line in crate::logs::stderr_lines(text) {
            tracing::warn!(pool = %self.pool, "php: {}", crate::logs::bounded(line));
        }
        if self.stderr.len() < MAX_FORWARDED_STDERR {
            self.stderr.extend_from_slice(b"PHP message: ");
            self.stderr.extend_from_slice(text);
            self.stderr.push(b'\n');
        }
    }
}

impl App for EmbeddedPhp {
    fn handle(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> io::Result<u32> {
        let php = match &mut self.php {
            Ok(php) => php,
            Err(why) => {
                let body = format!("PHP cannot start: {why}\n");
                plain_response(out, "503 Service Unavailable", &body)?;
                return Ok(FAILED_APP_STATUS);
            }
        };
        let Some(script) = find_script(
            &mut self.scripts,
            &self.document_root,
            &self.limit_extensions,
            request,
            out,
        )?
        else {
            return Ok(0);
        };
        let replaced = replaced_params(request, &script);
        let mut params: Vec<(&[u8], &[u8])> =
            Vec::with_capacity(self.env.len() + request.params.len() + replaced.len() + 1);
        params.extend(self.env.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        params.extend(script_params(request, &script, &replaced));

        let mut answer = Answer {
            out,
            pool: &self.pool,
            stderr: Vec::new(),
            client_error: None,
        };
        let ran = php.run(
            &PhpRequest {
                params: &params,
                script: &script.path,
                body: &request.stdin,
            },
            &mut answer,
        );
        let Answer {
            out,
            stderr,
            client_error,
            ..
        } = answer;
        if let Some(e) = client_error {
            return Err(e);
        }
        if !stderr.is_empty() {
            out.stderr(&stderr)?;
        }
        match ran {
            // php-fpm ends every request with app status 0, whatever the script's exit code.
            Ran::Finished(_) => Ok(0),
            Ran::NotStarted => {
                tracing::error!(pool = %self.pool, "PHP could not start a request");
                plain_response(
                    out,
                    "500 Internal Server Error",
                    "PHP could not start the request.\n",
                )?;
                Ok(FAILED_APP_STATUS)
            }
        }
    }
}
