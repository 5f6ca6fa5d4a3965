//! The accept lock: only the holder accepts a connection. Since the front (`crate::front`)
//! waits for connections with epoll and accepts without blocking, it is held around one
//! non-blocking `accept()` only — never while waiting, never while a request runs — and
//! orders the fronts of a pool's worker processes at the socket. The kinds
//! (`accept_lock`, DESIGN.md §4):
//!
//! - `mutex`: thread workers of [`AcceptLock::for_threads`] share an in-process mutex; workers
//!   built from a [`LockShared`] use a robust process-shared pthread mutex in a memfd
//!   ([`ProcessMutex`]), which works between processes *and* threads and survives a holder's
//!   death.
//! - `fcntl`: an `F_OFD_SETLKW` write lock on `<runtime_dir>/<pool>.lock` (see
//!   [`crate::sys::filelock`] for why OFD locks rather than classic `F_SETLKW`).
//! - `flock`: `flock(LOCK_EX)` on the same file.
//! - `none`: every worker waits on the socket itself.
//!
//! How the pieces fit: the master creates one [`LockShared`] per pool ([`LockShared::create`]).
//! A worker *thread* builds its [`AcceptLock`] from it with [`AcceptLock::for_worker`]. A worker
//! *process* gets a descriptor of its own from [`LockShared::child_fd`] (the mutex memfd, or a
//! fresh open of the lock file — its own open file description), inherited at a number `N` the
//! spawner chooses, plus the [`LockHandoff`] text [`LockShared::handoff`]`(N)` on its command
//! line (`mutex:fd=N`, `fcntl:fd=N`, `flock:fd=N`, `none`); after exec it calls
//! [`AcceptLock::from_handoff`]. Passing the open file rather than its path matters: a worker
//! that dropped privileges could not open a file in the master's private (0700) runtime dir.
//!
//! File locks belong to an open file description, so `for_worker` opens the lock file anew for
//! each worker. One `AcceptLock` may still be shared by several threads: a file lock is then
//! taken behind an in-process mutex, so the threads exclude each other too.

use std::fmt;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::AcceptLock as LockKind;
use crate::sys::filelock::{FileLockGuard, FileLockKind, LockFile};
use crate::sys::inherit::adopt_inherited_fd;
use crate::sys::pmutex::{ProcessMutex, ProcessMutexGuard};

/// Why a lock kind cannot be used for a pool, or could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// `for_threads` builds only the in-process kinds; the file kinds need the runtime dir
    /// ([`LockShared::create`] + [`AcceptLock::for_worker`]).
    #[error("accept_lock = \"{0}\" needs a lock file: build it with LockShared::create and AcceptLock::for_worker (for_threads builds only \"mutex\" and \"none\")")]
    NeedsProcessWorkers(String),
    #[error("cannot create the accept lock ({kind}): {cause}")]
    Create { kind: LockKind, cause: io::Error },
    #[error("cannot attach to the accept lock {handoff}: {cause}")]
    Attach {
        handoff: LockHandoff,
        cause: io::Error,
    },
    #[error(
        "bad accept lock handoff {text:?}: expected mutex:fd=N, fcntl:fd=N, flock:fd=N or none"
    )]
    BadHandoff { text: String },
}

/// What a pool's workers share to build their accept lock; created once per pool by the master
/// and rebuilt by a worker process after exec.
#[derive(Clone, Debug)]
pub enum LockShared {
    /// The robust process-shared mutex (shared by `Arc` between thread workers).
    Mutex(Arc<ProcessMutex>),
    /// A lock file every worker opens for itself.
    File { kind: FileLockKind, path: PathBuf },
    /// No lock.
    None,
}

/// How a worker process finds its pool's lock after exec; `Display` and `FromStr` give the
/// command-line form (`mutex:fd=5`, `fcntl:fd=5`, `flock:fd=5`, `none`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockHandoff {
    /// The mutex memfd, inherited at descriptor `fd`.
    Mutex {
        fd: RawFd,
    },
    /// The worker's own open of the lock file, inherited at `fd`, locked with `fcntl`.
    Fcntl {
        fd: RawFd,
    },
    /// The same, locked with `flock`.
    Flock {
        fd: RawFd,
    },
    None,
}

impl fmt::Display for LockHandoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mutex { fd } => write!(f, "mutex:fd={fd}"),
            Self::Fcntl { fd } => write!(f, "fcntl:fd={fd}"),
            Self::Flock { fd } => write!(f, "flock:fd={fd}"),
            Self::None => f.write_str("none"),
        }
    }
}

impl LockHandoff {
    /// The same lock, inherited at `fd` instead: a worker forked by a php parent
    /// (`worker::php_parent`) got the descriptor at another number than the master's.
    pub fn at(self, fd: RawFd) -> Self {
        match self {
            Self::Mutex { .. } => Self::Mutex { fd },
            Self::Fcntl { .. } => Self::Fcntl { fd },
            Self::Flock { .. } => Self::Flock { fd },
            Self::None => Self::None,
        }
    }
}

impl FromStr for LockHandoff {
    type Err = LockError;

    fn from_str(text: &str) -> Result<Self, LockError> {
        let bad = || LockError::BadHandoff {
            text: text.to_string(),
        };
        if text == "none" {
            return Ok(Self::None);
        }
        let (kind, rest) = text.split_once(':').ok_or_else(bad)?;
        let fd: RawFd = rest
            .strip_prefix("fd=")
            .and_then(|n| n.parse().ok())
            .filter(|fd| *fd >= 3)
            .ok_or_else(bad)?;
        match kind {
            "mutex" => Ok(Self::Mutex { fd }),
            "fcntl" => Ok(Self::Fcntl { fd }),
            "flock" => Ok(Self::Flock { fd }),
            _ => Err(bad()),
        }
    }
}

impl LockShared {
    /// The master's lock for pool `pool`: a new mutex memfd, or the lock file
    /// `<runtime_dir>/<pool>.lock` created 0600 (the runtime dir must exist).
    pub fn create(kind: LockKind, runtime_dir: &Path, pool: &str) -> Result<Self, LockError> {
        let create = |cause| LockError::Create { kind, cause };
        match kind {
            LockKind::Mutex => Ok(Self::Mutex(Arc::new(
                ProcessMutex::create().map_err(create)?,
            ))),
            LockKind::Fcntl | LockKind::Flock => {
                let file_kind = if kind == LockKind::Fcntl {
                    FileLockKind::Fcntl
                } else {
                    FileLockKind::Flock
                };
                let path = lock_file_path(runtime_dir, pool);
                // Open once now so a bad runtime dir fails at start, not in the first worker.
                LockFile::open(&path, file_kind).map_err(create)?;
                Ok(Self::File {
                    kind: file_kind,
                    path,
                })
            }
            LockKind::None => Ok(Self::None),
        }
    }

    /// A descriptor for one worker process to inherit (close-on-exec: the spawner places it
    /// at the number it writes into [`LockShared::handoff`], then drops this copy). `mutex`: a
    /// duplicate of the memfd; file kinds: a fresh open of the lock file, so each worker has its
    /// own open file description (its own lock); `none`: nothing.
    pub fn child_fd(&self) -> Result<Option<OwnedFd>, LockError> {
        match self {
            Self::Mutex(m) => m.clone_fd().map(Some).map_err(|cause| LockError::Create {
                kind: LockKind::Mutex,
                cause,
            }),
            Self::File { kind, path } => LockFile::open(path, *kind)
                .map(|file| Some(file.into_fd()))
                .map_err(|cause| LockError::Create {
                    kind: lock_kind(*kind),
                    cause,
                }),
            Self::None => Ok(None),
        }
    }

    /// The command-line form for a worker process that finds [`LockShared::child_fd`] at
    /// descriptor `child_fd` (ignored for `none`).
    pub fn handoff(&self, child_fd: RawFd) -> LockHandoff {
        match self {
            Self::Mutex(_) => LockHandoff::Mutex { fd: child_fd },
            Self::File {
                kind: FileLockKind::Fcntl,
                ..
            } => LockHandoff::Fcntl { fd: child_fd },
            Self::File {
                kind: FileLockKind::Flock,
                ..
            } => LockHandoff::Flock { fd: child_fd },
            Self::None => LockHandoff::None,
        }
    }
}

fn lock_kind(kind: FileLockKind) -> LockKind {
    match kind {
        FileLockKind::Fcntl => LockKind::Fcntl,
        FileLockKind::Flock => LockKind::Flock,
    }
}

/// `<runtime_dir>/<pool>.lock`: pool names are restricted to letters, digits, `_` and `-`, so the
/// name is a safe file name.
pub fn lock_file_path(runtime_dir: &Path, pool: &str) -> PathBuf {
    runtime_dir.join(format!("{pool}.lock"))
}

/// One worker's accept lock (or one shared by a pool's threads).
#[derive(Debug)]
pub enum AcceptLock {
    /// In-process mutex shared by a pool's thread workers.
    ThreadMutex(Mutex<()>),
    /// Robust process-shared mutex in shared memory.
    Process(Arc<ProcessMutex>),
    /// This worker's own open of the lock file; `threads` serialises threads that share this one
    /// `AcceptLock` (they share the open file description, which the file lock cannot tell apart).
    File { file: LockFile, threads: Mutex<()> },
    /// No lock: every worker waits on the socket.
    None,
}

/// Held while waiting for and accepting one connection.
pub struct LockGuard<'a> {
    // Field order is drop order: the file lock is released before the thread mutex.
    _file: Option<FileLockGuard<'a>>,
    _thread: Option<MutexGuard<'a, ()>>,
    _process: Option<ProcessMutexGuard<'a>>,
    recovered: bool,
}

impl LockGuard<'_> {
    fn empty() -> Self {
        Self {
            _file: None,
            _thread: None,
            _process: None,
            recovered: false,
        }
    }

    /// True when the previous holder of a `mutex` lock died holding it and this acquire
    /// recovered the lock (logged once as a warning).
    pub fn recovered_owner_death(&self) -> bool {
        self.recovered
    }
}

impl AcceptLock {
    /// The lock for a pool of thread workers that share this one value (`mutex` or `none`; the
    /// file kinds need [`LockShared::create`] and [`AcceptLock::for_worker`]).
    pub fn for_threads(kind: LockKind) -> Result<Self, LockError> {
        match kind {
            LockKind::Mutex => Ok(Self::ThreadMutex(Mutex::new(()))),
            LockKind::None => Ok(Self::None),
            other => Err(LockError::NeedsProcessWorkers(other.to_string())),
        }
    }

    /// One worker's lock built from what the pool shares: opens the lock file for this worker
    /// (file kinds), or shares the process mutex.
    pub fn for_worker(shared: &LockShared) -> Result<Self, LockError> {
        match shared {
            LockShared::Mutex(m) => Ok(Self::Process(Arc::clone(m))),
            LockShared::File { kind, path } => {
                let file = LockFile::open(path, *kind).map_err(|cause| LockError::Create {
                    kind: lock_kind(*kind),
                    cause,
                })?;
                Ok(Self::File {
                    file,
                    threads: Mutex::new(()),
                })
            }
            LockShared::None => Ok(Self::None),
        }
    }

    /// A worker process after exec: its lock from the handoff on its command line. Takes
    /// ownership of the inherited descriptor (call it once per handoff). The lock may be shared
    /// by the process's threads.
    pub fn from_handoff(handoff: &LockHandoff) -> Result<Self, LockError> {
        let attach = |cause| LockError::Attach {
            handoff: handoff.clone(),
            cause,
        };
        let file = |fd: RawFd, kind| -> Result<Self, LockError> {
            let fd = adopt_inherited_fd(fd).map_err(attach)?;
            Ok(Self::File {
                file: LockFile::from_fd(fd, kind).map_err(attach)?,
                threads: Mutex::new(()),
            })
        };
        match handoff {
            LockHandoff::Mutex { fd } => {
                let fd = adopt_inherited_fd(*fd).map_err(attach)?;
                Ok(Self::Process(Arc::new(
                    ProcessMutex::from_fd(fd).map_err(attach)?,
                )))
            }
            LockHandoff::Fcntl { fd } => file(*fd, FileLockKind::Fcntl),
            LockHandoff::Flock { fd } => file(*fd, FileLockKind::Flock),
            LockHandoff::None => Ok(Self::None),
        }
    }

    /// Block until this worker may accept.
    ///
    /// A lock that fails with a system error (it should not: `EINTR` is retried, owner death is
    /// recovered) is logged and this turn goes ahead without it: accepting unlocked is still
    /// correct (the kernel hands each connection to one accepter), only less orderly, and a
    /// worker that stopped accepting would be worse.
    pub fn acquire(&self) -> LockGuard<'_> {
        match self.try_acquire() {
            Ok(guard) => guard,
            Err(e) => {
                tracing::error!("accept lock failed, accepting without it this time: {e}");
                LockGuard::empty()
            }
        }
    }

    /// Like [`AcceptLock::acquire`], but reports a failing lock instead of going on unlocked.
    pub fn try_acquire(&self) -> io::Result<LockGuard<'_>> {
        let mut guard = LockGuard::empty();
        match self {
            // A worker that panicked while holding the lock left no state behind it: the lock
            // guards nothing but the turn to accept, so a poisoned lock is simply taken.
            Self::ThreadMutex(m) => {
                guard._thread = Some(m.lock().unwrap_or_else(|p| p.into_inner()))
            }
            Self::Process(m) => {
                let held = m.lock()?;
                guard.recovered = held.recovered_owner_death();
                guard._process = Some(held);
            }
            Self::File { file, threads } => {
                guard._thread = Some(threads.lock().unwrap_or_else(|p| p.into_inner()));
                guard._file = Some(file.lock()?);
            }
            Self::None => {}
        }
        Ok(guard)
    }
}
