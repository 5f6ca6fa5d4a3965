//! A php-cgi process: started in FastCGI mode on a private unix socket (the listening socket is
//! its fd 0, as php-cgi expects), in its own process group, killed with the thread that started
//! it; its own stderr is copied into fastpm's log with pool and pid. Either one worker's own
//! php-cgi (`children = 0`, one connection at a time) or a pool's shared parent, which forks
//! `children` processes that accept on the same socket (see `shared`).

use std::io::{self, BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::PhpIni;
use crate::sys::child::ChildSetup;
use crate::sys::privileges::Credentials;

/// How to start a php-cgi.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Pool name, for log lines.
    pub pool: String,
    /// The php-cgi binary (a name looked up on PATH, or a path).
    pub php_cgi: String,
    /// `<runtime_dir>/<pool>/php-<worker>.sock` (or `shared::socket_path`): private because the
    /// master made that directory 0700 for the pool's user (`master::runtime_dir::pool_dir`;
    /// anyone who can reach php-cgi can make it run any file as PHP, so never an abstract socket).
    pub socket_path: PathBuf,
    /// `PHP_FCGI_CHILDREN`: 0 for a worker's own php-cgi (it serves one connection at a time
    /// itself); N for a pool's shared parent, which forks N children once PHP is set up.
    pub children: u32,
    /// `-d NAME=VALUE` arguments, in order.
    pub ini: Vec<(String, String)>,
    /// Which php.ini (`-n`, `-c PATH`, or PHP's own search).
    pub php_ini: PhpIni,
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
        match &self.php_ini {
            PhpIni::Search => {}
            PhpIni::None => {
                cmd.arg("-n");
            }
            PhpIni::Path(path) => {
                cmd.arg("-c").arg(path);
            }
        }
        for (name, value) in &self.ini {
            cmd.arg("-d").arg(format!("{name}={value}"));
        }
        if self.clear_env {
            cmd.env_clear();
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // fastpm recycles by max_requests itself: php-cgi closing a kept connection on its own
        // after its last request would race with the worker's next request (see `shared`).
        cmd.env("PHP_FCGI_CHILDREN", self.children.to_string())
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
    /// accepts it when it is ready: no polling for readiness. A shared parent's socket
    /// (`children > 0`) stays for every worker to connect to: it is handed to the pool's user
    /// (worker processes run as them).
    pub fn spawn(spec: &ChildSpec) -> io::Result<PhpChild> {
        let _ = std::fs::remove_file(&spec.socket_path);
        let cannot_bind = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot bind {}: {e}", spec.socket_path.display()),
            )
        };
        let listener = UnixListener::bind(&spec.socket_path).map_err(cannot_bind)?;
        if spec.children > 0 {
            share_socket(spec).map_err(cannot_bind)?;
        }
        let mut cmd = spec.command();
        cmd.stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // A process group, not a session: the pool's php-cgi stay in fastpm's scheduling
        // group, as php-fpm's children stay in php-fpm's (see `shared`, `ChildSetup`).
        let mut setup = ChildSetup::new()
            .run_as(spec.credentials.clone())
            .own_process_group();
        if spec.children > 0 {
            // On SIGTERM a php-cgi parent kills its children and leaves; SIGKILL would leave
            // them orphaned, accepting on a socket nobody reaches.
            setup = setup.death_signal(Signal::SIGTERM);
        }
        setup.apply(&mut cmd);
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
            // A shared socket is not this child's to use up or remove (see `shared`).
            socket_path: (spec.children == 0).then(|| spec.socket_path.clone()),
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

/// A shared parent's socket: owned by the pool's user, who runs the worker processes that
/// connect to it (connecting takes write permission on the socket file: the owner has it under
/// any sane umask). Who else may connect is settled by the pool's directory, 0700 and the pool
/// user's. The directory is the pool user's, who could have put something else in the socket's
/// place: the socket fastpm bound is opened and checked first, and changed through its
/// descriptor (`listen::unix_path::open_bound_socket`, as the listening sockets are).
fn share_socket(spec: &ChildSpec) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if let Some(creds) = &spec.credentials {
        let bound = crate::listen::unix_path::open_bound_socket(&spec.socket_path)?;
        std::os::unix::fs::chown(
            format!("/proc/self/fd/{}", bound.as_raw_fd()),
            Some(creds.uid),
            Some(creds.gid),
        )?;
    }
    Ok(())
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
            children: 3,
            ini: vec![
                ("memory_limit".into(), "64M".into()),
                ("a.b".into(), "1".into()),
            ],
            env: vec![("APP_ENV".into(), "dev".into())],
            clear_env: true,
            php_ini: crate::config::PhpIni::Search,
            credentials: None,
        };
        let cmd = spec.command();
        let args: Vec<&OsStr> = cmd.get_args().collect();
        assert_eq!(args, ["-d", "memory_limit=64M", "-d", "a.b=1"]);
        let envs: Vec<(&OsStr, Option<&OsStr>)> = cmd.get_envs().collect();
        for (k, v) in [
            ("APP_ENV", "dev"),
            ("PHP_FCGI_CHILDREN", "3"),
            ("PHP_FCGI_MAX_REQUESTS", "0"),
        ] {
            assert!(
                envs.contains(&(OsStr::new(k), Some(OsStr::new(v)))),
                "{k} in {envs:?}"
            );
        }
    }
}
