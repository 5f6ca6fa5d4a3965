//! Lock files: the `fcntl` and `flock` accept locks.
//!
//! Both kinds of lock belong to an *open file description*, so every worker — thread or process —
//! opens the lock file itself ([`LockFile::open`]); two workers sharing one description would
//! both "hold" the lock at once.
//!
//! `fcntl` uses `F_OFD_SETLKW` (open-file-description record locks, Linux 3.15+) rather than
//! classic `F_SETLKW`. Classic POSIX record locks belong to the *process*: two threads of one
//! process never exclude each other, and closing *any* descriptor of the file drops the process's
//! lock. OFD locks keep the `fcntl` semantics between processes (Apache's default mutex, the same
//! byte-range write lock) and also work between threads, so one code path serves both worker
//! kinds. `EINTR` is retried.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Which system call locks the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileLockKind {
    /// `fcntl(F_OFD_SETLKW)` write lock on the whole file.
    Fcntl,
    /// `flock(LOCK_EX)`.
    Flock,
}

/// One worker's own open of a pool's lock file.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    kind: FileLockKind,
    /// Kept for error messages.
    path: PathBuf,
}

/// Holds a [`LockFile`] locked; unlocks on drop.
pub struct FileLockGuard<'a> {
    lock: &'a LockFile,
}

impl LockFile {
    /// Open (creating it `0600` if needed) the lock file at `path`. Each worker calls this for
    /// itself. The descriptor is close-on-exec: children of a worker (php-cgi) never hold it.
    /// `O_NOFOLLOW`: a symlink planted at the path is refused (`ELOOP`), never followed to
    /// create or open a file elsewhere as root; anything but a regular file is refused too.
    pub fn open(path: &Path, kind: FileLockKind) -> io::Result<Self> {
        let context = |e: io::Error| {
            let why = if e.raw_os_error() == Some(libc::ELOOP) {
                format!("{e}: it is a symlink; refusing to follow it")
            } else {
                e.to_string()
            };
            io::Error::new(e.kind(), format!("lock file {}: {why}", path.display()))
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(context)?;
        if !file.metadata().map_err(context)?.is_file() {
            return Err(context(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        Ok(Self {
            file,
            kind,
            path: path.to_path_buf(),
        })
    }

    /// Adopt a lock file a parent opened for this worker (its own open file description, passed
    /// at exec). This is how a worker that dropped privileges locks a file in the master's
    /// private runtime dir, which it could not open itself.
    pub fn from_fd(fd: OwnedFd, kind: FileLockKind) -> io::Result<Self> {
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "descriptor {} is not a regular file, so not a lock file",
                    file.as_raw_fd()
                ),
            ));
        }
        let path = PathBuf::from(format!("inherited lock file (fd {})", file.as_raw_fd()));
        Ok(Self { file, kind, path })
    }

    /// The open file itself, to hand to a worker process.
    pub fn into_fd(self) -> OwnedFd {
        self.file.into()
    }

    pub fn kind(&self) -> FileLockKind {
        self.kind
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Block until this open file description holds the lock exclusively.
    pub fn lock(&self) -> io::Result<FileLockGuard<'_>> {
        loop {
            let rc = match self.kind {
                FileLockKind::Fcntl => self.ofd_setlk(libc::F_OFD_SETLKW, libc::F_WRLCK),
                // SAFETY: flock takes a descriptor we own (alive for `&self`) and an integer.
                FileLockKind::Flock => unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_EX) },
            };
            if rc == 0 {
                return Ok(FileLockGuard { lock: self });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(io::Error::new(
                    err.kind(),
                    format!("cannot lock {}: {err}", self.path.display()),
                ));
            }
        }
    }

    fn unlock(&self) -> io::Result<()> {
        let rc = match self.kind {
            FileLockKind::Fcntl => self.ofd_setlk(libc::F_OFD_SETLK, libc::F_UNLCK),
            // SAFETY: as in `lock`.
            FileLockKind::Flock => unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) },
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `fcntl(cmd)` with a whole-file lock of type `kind`; returns the raw result (errno set).
    fn ofd_setlk(&self, cmd: libc::c_int, kind: libc::c_int) -> libc::c_int {
        // SAFETY: an all-zero `struct flock` is valid (l_whence = SEEK_SET, start 0, len 0 = whole
        // file, and l_pid must be 0 for OFD locks); we then set the type.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: the descriptor is ours and alive; `fl` is a valid flock that outlives the call.
        unsafe { libc::fcntl(self.file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) }
    }
}

impl Drop for FileLockGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.lock.unlock() {
            tracing::error!("cannot unlock {}: {e}", self.lock.path.display());
        }
    }
}
