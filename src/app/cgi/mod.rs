//! `kind = "cgi"`: fork/exec the script per request as RFC 3875 says — environment from the
//! request's params, body on stdin, headers parsed (`Status`, `Location`, `Content-Type`),
//! output streamed, the process group killed at `request_timeout`. No shell in between; the
//! script must be an executable regular file inside `document_root` (the same rule as php,
//! Apache's `proxy:fcgi://` SCRIPT_FILENAME included).

mod headers;
mod run;

pub use headers::{parse_header_block, HeaderBlock};
pub use run::{run, Pipes, RunEnd, MAX_HEADER_BYTES};

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::php::{path_info_params, resolve, Refusal, Resolved};
use super::{plain_response, App};
use crate::config::PoolConfig;
use crate::fastcgi::{Request, ResponseWriter};
use crate::sys::child::ChildSetup;
use crate::sys::privileges::Credentials;

/// PATH given to scripts started with a cleared environment that set none (so `#!/bin/sh`
/// scripts find the usual tools).
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// app_status when the script could not give a response.
const FAILED_APP_STATUS: u32 = 1;

/// What every worker of a cgi pool shares.
#[derive(Debug, Clone)]
pub struct CgiSettings {
    /// Pool name, for log lines.
    pub pool: String,
    /// `document_root`, canonical.
    pub document_root: PathBuf,
    /// `request_timeout`; zero = off.
    pub request_timeout: Duration,
    /// `env`: added to every script's environment.
    pub env: Vec<(String, String)>,
    /// `clear_env`: start from an empty environment instead of fastpm's.
    pub clear_env: bool,
    /// The pool's `user`/`group` when scripts are started by a worker *thread* (inside the root
    /// master); `None` in a worker process, which already runs as them.
    pub credentials: Option<Credentials>,
}

impl CgiSettings {
    pub fn from_pool(pool: &PoolConfig) -> Self {
        let root = &pool.app.document_root;
        let document_root = std::fs::canonicalize(root).unwrap_or_else(|e| {
            tracing::error!(pool = %pool.name, "document_root {}: {e}; every request will get 404", root.display());
            root.clone()
        });
        Self {
            pool: pool.name.clone(),
            document_root,
            request_timeout: pool.request_timeout,
            env: pool
                .app
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            clear_env: pool.app.clear_env,
            credentials: None,
        }
    }
}

/// Whether a FastCGI param becomes an environment variable of the script: a name without `=`
/// or NUL and a value without NUL — and never `HTTP_PROXY`, which is the client's `Proxy:`
/// header, not a proxy setting ("httpoxy": HTTP libraries in the script would obey it).
pub fn env_pair_ok(name: &[u8], value: &[u8]) -> bool {
    !name.is_empty()
        && !name.contains(&b'=')
        && !name.contains(&0)
        && !value.contains(&0)
        && name != b"HTTP_PROXY"
}

/// One worker's CGI runner.
pub struct Cgi {
    settings: CgiSettings,
}

impl Cgi {
    pub fn new(settings: CgiSettings) -> Self {
        Self { settings }
    }

    fn command(&self, request: &Request, resolved: &Resolved) -> Command {
        let script = resolved.path.as_path();
        let mut cmd = Command::new(script);
        if self.settings.clear_env {
            cmd.env_clear();
            if !self.settings.env.iter().any(|(k, _)| k == "PATH") {
                cmd.env("PATH", DEFAULT_PATH);
            }
        }
        cmd.envs(self.settings.env.iter().map(|(k, v)| (k, v)));
        cmd.env("GATEWAY_INTERFACE", "CGI/1.1");
        for (name, value) in request.params.iter() {
            if env_pair_ok(name, value) {
                cmd.env(OsStr::from_bytes(name), OsStr::from_bytes(value));
            }
        }
        if let Some(info) = &resolved.path_info {
            for (name, value) in path_info_params(request, info) {
                if env_pair_ok(name, &value) {
                    cmd.env(OsStr::from_bytes(name), OsStr::from_bytes(&value));
                }
            }
        }
        cmd.env("SCRIPT_FILENAME", script);
        if let Some(dir) = script.parent() {
            cmd.current_dir(dir);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ChildSetup::new()
            .own_process_group()
            .run_as(self.settings.credentials.clone())
            .apply(&mut cmd);
        cmd
    }
}

impl App for Cgi {
    fn handle(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> io::Result<u32> {
        let pool = &self.settings.pool;
        let resolved = match resolve(
            &self.settings.document_root,
            request.params.get("SCRIPT_FILENAME"),
            request.params.get("SCRIPT_NAME"),
            request.params.get("REQUEST_URI"),
            &[],
        ) {
            Ok(resolved) => resolved,
            Err(Refusal::NotFound) => {
                plain_response(out, "404 Not Found", "File not found.\n")?;
                return Ok(0);
            }
            Err(Refusal::Forbidden) => {
                plain_response(out, "403 Forbidden", "Access denied.\n")?;
                return Ok(0);
            }
        };
        let script = resolved.path.clone();
        let executable =
            std::fs::metadata(&script).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
        if !executable {
            plain_response(out, "403 Forbidden", "Access denied.\n")?;
            return Ok(0);
        }
        let deadline = (!self.settings.request_timeout.is_zero())
            .then(|| Instant::now() + self.settings.request_timeout);
        let mut child = match self.command(request, &resolved).spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(pool = %pool, script = %script.display(), error = %e, "cannot start the CGI script");
                plain_response(
                    out,
                    "500 Internal Server Error",
                    "The script cannot start.\n",
                )?;
                return Ok(FAILED_APP_STATUS);
            }
        };
        let pid = child.id();
        let pipes = Pipes {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        };
        let mut log_stderr = |line: &[u8]| {
            tracing::warn!(pool = %pool, pid, script = %script.display(), "cgi: {}", crate::logs::bounded(line.trim_ascii_end()));
        };
        let mut client_error = None;
        let end = run(
            &mut child,
            pipes,
            &request.stdin,
            deadline,
            out,
            &mut log_stderr,
            &mut client_error,
        );
        let end = match end {
            Ok(end) => end,
            Err(e) => {
                run::kill_group(&child);
                let _ = child.wait();
                return Err(e);
            }
        };
        let app_status = match end {
            RunEnd::Complete(status) => status.and_then(|s| s.code()).unwrap_or(0) as u32,
            RunEnd::NoHeaders(status) => {
                tracing::error!(pool = %pool, pid, script = %script.display(), status = ?status, "CGI script ended before sending its headers");
                plain_response(out, "502 Bad Gateway", "The script sent no response.\n")?;
                FAILED_APP_STATUS
            }
            RunEnd::BadHeaders(why) => {
                tracing::error!(pool = %pool, pid, script = %script.display(), "CGI script sent bad headers: {why}");
                plain_response(out, "502 Bad Gateway", "The script sent a bad response.\n")?;
                FAILED_APP_STATUS
            }
            RunEnd::TimedOut { headers_sent } => {
                tracing::warn!(pool = %pool, pid, script = %script.display(), "CGI script exceeded request_timeout ({} ms); killed", self.settings.request_timeout.as_millis());
                if !headers_sent {
                    plain_response(out, "504 Gateway Timeout", "The request took too long.\n")?;
                }
                FAILED_APP_STATUS
            }
        };
        match client_error {
            Some(e) => Err(e),
            None => Ok(app_status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs() {
        let table: [(&[u8], &[u8], bool); 7] = [
            (b"HTTP_PROXY", b"http://evil:1", false),
            (b"QUERY_STRING", b"a=1", true),
            (b"HTTP_X", b"", true),
            (b"", b"x", false),
            (b"A=B", b"x", false),
            (b"A\0", b"x", false),
            (b"A", b"x\0y", false),
        ];
        for (name, value, want) in table {
            assert_eq!(env_pair_ok(name, value), want, "{name:?}={value:?}");
        }
    }
}
