//! One log file of the master: opened for appending, written whole lines at a time, reopened
//! by path on `USR1` (after logrotate renamed it).
//!
//! Opened as php-fpm opens its logs — `O_WRONLY | O_APPEND | O_CREAT`, mode 0600, by the
//! master, so a new file belongs to the master's user (root in a privileged deployment) and
//! the pool's user cannot read or rewrite what was logged. Symbolic links are followed, as
//! php-fpm does (`access_log = "/proc/self/fd/2"` is a common container setting).
//!
//! A reopen opens the new file first and swaps it in under the same lock every write takes,
//! so each batch of lines lands whole in the old file or whole in the new one; if the open
//! fails the old file stays in use and nothing is lost.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

/// Mode of a log file fastpm creates (php-fpm's `S_IRUSR | S_IWUSR`).
pub const LOG_FILE_MODE: u32 = 0o600;

/// Why a log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open {what} {path}: {source}")]
pub struct OpenError {
    /// The setting it came from (`error_log`, `pool.www.access_log`, ...).
    pub what: String,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(LOG_FILE_MODE)
        .open(path)
}

/// A log file and the path it is reopened from.
pub struct LogFile {
    /// The setting it came from, for messages.
    what: String,
    path: PathBuf,
    file: Mutex<File>,
    /// A write failed (disk full, ...): said once, until one succeeds again.
    failing: AtomicBool,
}

impl LogFile {
    pub fn open(what: impl Into<String>, path: &Path) -> Result<Self, OpenError> {
        let what = what.into();
        let file = open_append(path).map_err(|source| OpenError {
            what: what.clone(),
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            what,
            path: path.to_path_buf(),
            file: Mutex::new(file),
            failing: AtomicBool::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// Append `lines` (whole lines, each ending in `\n`) with one `write` (`O_APPEND`: lines
    /// from two writers never interleave). A failure is returned the first time only, so a
    /// full disk is reported once, not once per request.
    pub fn write_lines(&self, lines: &[u8]) -> Result<(), io::Error> {
        let result = {
            let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
            file.write_all(lines)
        };
        match result {
            Ok(()) => {
                self.failing.store(false, Relaxed);
                Ok(())
            }
            Err(e) if !self.failing.swap(true, Relaxed) => Err(e),
            Err(_) => Ok(()),
        }
    }

    /// Open the path again and write there from now on (logrotate moved the old file away).
    pub fn reopen(&self) -> Result<(), OpenError> {
        let fresh = open_append(&self.path).map_err(|source| OpenError {
            what: self.what.clone(),
            path: self.path.clone(),
            source,
        })?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn lines_follow_the_path_after_a_rename_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = LogFile::open("access_log", &path).unwrap();
        log.write_lines(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        log.write_lines(b"two\n").unwrap();
        log.reopen().unwrap();
        log.write_lines(b"three\n").unwrap();
        let old = std::fs::read_to_string(dir.path().join("access.log.1")).unwrap();
        assert_eq!(old, "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, LOG_FILE_MODE);
    }

    #[test]
    fn a_failed_reopen_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("logs");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("x.log");
        let log = LogFile::open("error_log", &path).unwrap();
        std::fs::rename(&sub, dir.path().join("moved")).unwrap();
        let err = log.reopen().unwrap_err();
        assert!(err.to_string().contains("error_log"), "{err}");
        log.write_lines(b"kept\n").unwrap();
        let kept = std::fs::read_to_string(dir.path().join("moved/x.log")).unwrap();
        assert_eq!(kept, "kept\n");
    }
}
