//! The php-cgi a worker talks to, in either layout (`php_children`): its own process, which it
//! starts, kills and starts again; or whichever child of the pool's shared parent (see
//! `shared`) accepted its connection, which it finds through the socket's peer (see `peer`) and
//! kills only when that child may still be running one of its requests or must be recycled.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::child::{ChildSpec, PhpChild};

/// How long a worker keeps trying to connect to the shared socket while it is missing or
/// refuses (the master is starting the pool's php-cgi again: normally a few milliseconds).
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(1);
/// Between two connection attempts.
const CONNECT_RETRY: Duration = Duration::from_millis(10);

/// Where a worker's php-cgi comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `php_children = "per-worker"`: the worker starts its own php-cgi.
    PerWorker,
    /// `php_children = "shared"`: the pool's php-cgi, started by the master, listens on `socket`;
    /// its pid is in `pid_file`.
    Shared { socket: PathBuf, pid_file: PathBuf },
}

/// Why a worker gives up its php-cgi (per-worker: the process; shared: the connection, and the
/// child too when [`GiveUp::kills_shared_child`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The socket could not be connected to.
    Unreachable,
    /// php-cgi answered before it had read the whole request: the connection is out of step.
    AnsweredEarly,
    /// The kept connection was found closed before a request was sent.
    ExitedIdle,
    /// The connection broke during a request.
    ExitedDuring { response_cut: bool },
    /// The request outlived `request_timeout` (ms).
    TimedOut(u128),
    /// The child served `max_requests` answers on this connection.
    Recycled(u64),
}

impl GiveUp {
    /// What the log says after "php-cgi".
    pub fn text(self) -> String {
        match self {
            Self::Unreachable => "could not be reached".into(),
            Self::AnsweredEarly => "answered before reading the whole request".into(),
            Self::ExitedIdle => "had exited while idle".into(),
            Self::ExitedDuring {
                response_cut: false,
            } => "exited during a request".into(),
            Self::ExitedDuring { response_cut: true } => {
                "exited during a request (response cut short)".into()
            }
            Self::TimedOut(ms) => format!("exceeded request_timeout ({ms} ms)"),
            Self::Recycled(n) => format!("served max_requests ({n})"),
        }
    }

    /// In the shared layout, whether the child must be killed and not just let go: it may still
    /// run the request (a timeout), or it is due for recycling. A child whose connection is
    /// dropped otherwise reads end-of-file and goes back to accepting.
    pub fn kills_shared_child(self) -> bool {
        matches!(self, Self::TimedOut(_) | Self::Recycled(_))
    }

    /// An expected event (logged at debug level), not a problem (a warning).
    pub fn is_routine(self) -> bool {
        matches!(self, Self::Recycled(_))
    }
}

/// A worker's php-cgi.
pub enum Backend {
    /// Its own process.
    Own(PhpChild),
    /// A connection's worth of the pool's shared php-cgi.
    Shared(SharedPeer),
}

/// The child of the pool's shared php-cgi at the other end of a worker's connection.
pub struct SharedPeer {
    socket: PathBuf,
    /// Names the pool's php-cgi parent; read when the child is looked for, after an answer
    /// (right after connecting it could still name the parent before a restart: the socket
    /// is bound before the new parent's pid is written).
    pid_file: PathBuf,
    /// The child serving the connection, once found (`peer`).
    pid: Option<u32>,
    /// The search was made for this connection: not repeated on every request.
    looked_up: bool,
    /// Answers on this connection: recycled after `max_requests`.
    served: u64,
}

impl Backend {
    /// Start a worker's php-cgi (per-worker) or prepare to connect to the pool's (shared).
    pub fn start(layout: &Layout, spec: &ChildSpec) -> io::Result<Backend> {
        match layout {
            Layout::PerWorker => PhpChild::spawn(spec).map(Backend::Own),
            Layout::Shared { socket, pid_file } => Ok(Backend::Shared(SharedPeer {
                socket: socket.clone(),
                pid_file: pid_file.clone(),
                pid: None,
                looked_up: false,
                served: 0,
            })),
        }
    }

    /// The php-cgi process serving this worker, when known (shared: found after the first
    /// answer on a connection).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Backend::Own(child) => Some(child.pid()),
            Backend::Shared(peer) => peer.pid,
        }
    }

    /// The one connection the worker keeps (see `PhpChild::connect` for the per-worker case).
    /// Shared: the socket may be missing or refuse for a moment while the master starts php-cgi
    /// again; tried for [`CONNECT_PATIENCE`] at most, and never past `deadline`.
    pub fn connect(&mut self, deadline: Option<Instant>) -> io::Result<UnixStream> {
        match self {
            Backend::Own(child) => child.connect(),
            Backend::Shared(peer) => {
                let mut give_up = Instant::now() + CONNECT_PATIENCE;
                if let Some(deadline) = deadline {
                    give_up = give_up.min(deadline);
                }
                loop {
                    match UnixStream::connect(&peer.socket) {
                        Ok(conn) => return Ok(conn),
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                            ) && Instant::now() + CONNECT_RETRY < give_up =>
                        {
                            std::thread::sleep(CONNECT_RETRY);
                        }
                        Err(e) => {
                            return Err(io::Error::new(
                                e.kind(),
                                format!("{}: {e}", peer.socket.display()),
                            ))
                        }
                    }
                }
            }
        }
    }

    /// An answer came back whole on `conn`. Shared: counts it, finds the child serving the
    /// connection after its first answer, and says when the child is due for recycling.
    pub fn answered(&mut self, conn: &UnixStream, max_requests: u64) -> Option<GiveUp> {
        let Backend::Shared(peer) = self else {
            return None;
        };
        peer.served += 1;
        if !peer.looked_up {
            peer.find(conn);
        }
        (max_requests > 0 && peer.served >= max_requests).then_some(GiveUp::Recycled(peer.served))
    }

    /// Give this php-cgi up: per-worker, kill it (with its process group); shared, kill the
    /// child serving `conn` when `why` asks for it (found now if it was not yet). The pid and,
    /// when this worker ended it, how it ended.
    pub fn end(
        self,
        conn: Option<&UnixStream>,
        why: GiveUp,
    ) -> (Option<u32>, Option<ExitStatus>, Option<String>) {
        match self {
            Backend::Own(mut child) => {
                let pid = child.pid();
                (Some(pid), child.kill(), None)
            }
            Backend::Shared(mut peer) => {
                if !why.kills_shared_child() {
                    return (peer.pid, None, None);
                }
                if peer.pid.is_none() {
                    if let Some(conn) = conn {
                        peer.find(conn);
                    }
                }
                match peer.pid {
                    Some(pid) => {
                        let problem = kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
                            .err()
                            .map(|e| format!("cannot kill php-cgi {pid}: {e}"));
                        (Some(pid), None, problem)
                    }
                    None => (
                        None,
                        None,
                        Some(
                            "cannot tell which php-cgi child serves this worker; it is let go \
                             and finishes the request on its own"
                                .into(),
                        ),
                    ),
                }
            }
        }
    }
}

impl SharedPeer {
    /// Find the child at the other end of `conn` (once per connection).
    fn find(&mut self, conn: &UnixStream) {
        self.looked_up = true;
        let Some(parent) = super::shared::read_pid(&self.pid_file) else {
            tracing::warn!(
                "{} names no php-cgi; cannot tell which child serves this worker",
                self.pid_file.display()
            );
            return;
        };
        match super::peer::serving_child(conn.as_fd(), parent) {
            Ok(pid) => self.pid = Some(pid),
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell which php-cgi child serves this worker")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn give_up_table() {
        // (why, kills the shared child, routine)
        let cases = [
            (GiveUp::Unreachable, false, false),
            (GiveUp::AnsweredEarly, false, false),
            (GiveUp::ExitedIdle, false, false),
            (
                GiveUp::ExitedDuring {
                    response_cut: false,
                },
                false,
                false,
            ),
            (GiveUp::ExitedDuring { response_cut: true }, false, false),
            (GiveUp::TimedOut(500), true, false),
            (GiveUp::Recycled(100), true, true),
        ];
        for (why, kills, routine) in cases {
            assert_eq!(why.kills_shared_child(), kills, "{why:?}");
            assert_eq!(why.is_routine(), routine, "{why:?}");
            assert!(!why.text().is_empty());
        }
        assert_eq!(
            GiveUp::TimedOut(500).text(),
            "exceeded request_timeout (500 ms)"
        );
    }

    /// Shared: a missing socket is waited for (bounded), then the error names the path.
    #[test]
    fn connecting_to_a_missing_shared_socket_gives_up_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("php-shared-x.sock");
        let layout = Layout::Shared {
            socket: socket.clone(),
            pid_file: dir.path().join("php-shared-x.pid"),
        };
        let spec = ChildSpec {
            pool: "p".into(),
            php_cgi: "php-cgi".into(),
            socket_path: socket.clone(),
            children: 2,
            ini: vec![],
            env: vec![],
            clear_env: true,
            php_ini: crate::config::PhpIni::Search,
            credentials: None,
        };
        let mut backend = Backend::start(&layout, &spec).unwrap();
        assert_eq!(backend.pid(), None);
        let t = Instant::now();
        let e = backend
            .connect(Some(Instant::now() + Duration::from_millis(100)))
            .unwrap_err();
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
        assert!(e.to_string().contains("php-shared-x.sock"), "{e}");
        // A socket that appears while the worker waits is used.
        let listener_path = socket.clone();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::os::unix::net::UnixListener::bind(listener_path).unwrap()
        });
        let conn = backend.connect(None);
        let _listener = late.join().unwrap();
        assert!(conn.is_ok(), "{conn:?}");
    }
}
