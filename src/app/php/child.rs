//! One worker's php-cgi process: started in FastCGI mode on a private unix socket (the
//! listening socket is its fd 0, as php-cgi expects), in its own process group, killed with
//! its worker; its own stderr is copied into fastpm's log with pool and pid.

use std::io::{self, BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::sys::child::ChildSetup;
use crate::sys::privileges::Credentials;

/// How to start one worker's php-cgi.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Pool name, for log lines.
    pub pool: String,
    /// The php-cgi binary (a name looked up on PATH, or a path).
    pub php_cgi: String,
    /// `<runtime_dir>/<pool>/php-<worker>.sock`: private because the master made that directory
    /// 0700 for the pool's user (`master::runtime_dir::pool_dir`; anyone who can reach php-cgi can
    /// make it run any file as PHP, so never an abstract socket).
    pub socket_path: PathBuf,
    /// `-d NAME=VALUE` arguments, in order.
    pub ini: Vec<(String, String)>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Start from an empty environment (php-fpm's `clear_env`).
    pub clear_env: bool,
    /// The pool's `user`/`group` when php-cgi is started by a worker *thread* (inside the root
    /// master); `None` in a worker process, which already runs as them.
    pub credentials: Option<Credentials>,
}

impl ChildSpec {
    /// The command line, without spawning (what the log and tests show).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.php_cgi);
        for (name, value) in &self.ini {
            cmd.arg("-d").arg(format!("{name}={value}"));
        }
        if self.clear_env {
            cmd.env_clear();
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // One process serving one connection at a time; fastpm recycles by max_requests.
        cmd.env("PHP_FCGI_CHILDREN", "0")
            .env("PHP_FCGI_MAX_REQUESTS", "0");
        cmd
    }
}

/// A running php-cgi; killed (with its whole process group) and reaped when dropped.
pub struct PhpChild {
    child: Child,
    /// Already reaped: nothing left to kill.
    reaped: Option<ExitStatus>,
    /// The private socket file, until `connect` has used (and removed) it.
    socket_path: Option<PathBuf>,
}

impl PhpChild {
    /// Bind the private socket (replacing a stale one) and start php-cgi on it. The socket is
    /// listening before php-cgi starts, so a later `connect` is queued at once and php-cgi
    /// accepts it when it is ready: no polling for readiness.
    pub fn spawn(spec: &ChildSpec) -> io::Result<PhpChild> {
        let _ = std::fs::remove_file(&spec.socket_path);
        let listener = UnixListener::bind(&spec.socket_path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot bind {}: {e}", spec.socket_path.display()),
            )
        })?;
        let mut cmd = spec.command();
        cmd.stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        ChildSetup::new()
            .own_session()
            .run_as(spec.credentials.clone())
            .apply(&mut cmd);
        let spawned = cmd.spawn();
        // `cmd` held our copy of the listener; with it gone only php-cgi holds the socket,
        // so connecting to a dead child fails instead of hanging.
        drop(cmd);
        let mut child = spawned.map_err(|e| {
            let _ = std::fs::remove_file(&spec.socket_path);
            io::Error::new(e.kind(), format!("cannot start {}: {e}", spec.php_cgi))
        })?;
        let pid = child.id();
        if let Some(stderr) = child.stderr.take() {
            let pool = spec.pool.clone();
            let _ = std::thread::Builder::new()
                .name(format!("php-stderr-{pid}"))
                .spawn(move || log_stderr(&pool, pid, stderr));
        }
        Ok(PhpChild {
            child,
            reaped: None,
            socket_path: Some(spec.socket_path.clone()),
        })
    }

    /// The one connection fastpm keeps to this child, made when the first request is about to
    /// be sent, not at start: php-cgi closes a freshly accepted connection on which no request
    /// arrives within 5 s (php's `fcgi_accept_request` polls it with a 5000 ms timeout), so a
    /// connection made at start would be dead in any worker idle that long. Once connected
    /// the socket file is removed: nothing is left to reach php-cgi by. (A kept connection
    /// has no such timeout: between requests php-cgi waits in read() for as long as it takes.)
    pub fn connect(&mut self) -> io::Result<UnixStream> {
        let path = self.socket_path.take().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "php-cgi's socket was already used; the child must be restarted",
            )
        })?;
        let conn = UnixStream::connect(&path);
        let _ = std::fs::remove_file(&path);
        conn
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL the process group, reap, and say how it ended.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            let pid = self.child.id() as i32;
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            self.reaped = self.child.wait().ok();
        }
        if let Some(path) = self.socket_path.take() {
            let _ = std::fs::remove_file(path);
        }
        self.reaped
    }
}

impl Drop for PhpChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copy php-cgi's own stderr (startup warnings, crashes) into the log, line by line.
fn log_stderr(pool: &str, pid: u32, stderr: impl io::Read) {
    for line in BufReader::new(stderr).split(b'\n') {
        let Ok(line) = line else { break };
        if !line.trim_ascii_end().is_empty() {
            tracing::warn!(pool = %pool, pid, "php-cgi: {}", crate::logs::bounded(line.trim_ascii_end()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn command_line_and_environment() {
        let spec = ChildSpec {
            pool: "p".into(),
            php_cgi: "php-cgi".into(),
            socket_path: PathBuf::from("/tmp/x.sock"),
            ini: vec![
                ("memory_limit".into(), "64M".into()),
                ("a.b".into(), "1".into()),
            ],
            env: vec![("APP_ENV".into(), "dev".into())],
            clear_env: true,
            credentials: None,
        };
        let cmd = spec.command();
        let args: Vec<&OsStr> = cmd.get_args().collect();
        assert_eq!(args, ["-d", "memory_limit=64M", "-d", "a.b=1"]);
        let envs: Vec<(&OsStr, Option<&OsStr>)> = cmd.get_envs().collect();
        for (k, v) in [
            ("APP_ENV", "dev"),
            ("PHP_FCGI_CHILDREN", "0"),
            ("PHP_FCGI_MAX_REQUESTS", "0"),
        ] {
            assert!(
                envs.contains(&(OsStr::new(k), Some(OsStr::new(v)))),
                "{k} in {envs:?}"
            );
        }
    }
}
