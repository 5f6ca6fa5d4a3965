//! The log files the master holds open: `[global] error_log` and each pool's `access_log` and
//! `slowlog`. Everything written to a file goes through here — the master's own tracing
//! output, its worker threads' lines, and the lines relayed from worker processes — and `USR1`
//! reopens them all here.

use std::io::Write;
use std::path::PathBuf;

use super::file::{LogFile, OpenError};
use super::relay::Route;
use crate::config::Config;

/// The master's open log files, by route.
pub struct MasterFiles {
    /// `None`: the error log is the master's stderr.
    error: Option<LogFile>,
    /// By pool index.
    access: Vec<Option<LogFile>>,
    /// By pool index.
    slow: Vec<Option<LogFile>>,
}

/// What a reopen did, file by file.
pub struct Reopened {
    pub reopened: Vec<PathBuf>,
    pub failed: Vec<OpenError>,
}

impl MasterFiles {
    /// Open every configured file (creating it, mode 0600, owned by the master's user).
    pub fn open(config: &Config) -> Result<Self, OpenError> {
        let error = match &config.global.logs.error_log {
            Some(path) => Some(LogFile::open("error_log", path)?),
            None => None,
        };
        let mut access = Vec::new();
        let mut slow = Vec::new();
        for pool in &config.pools {
            let key = |k: &str| format!("pool.{}.{k}", pool.name);
            access.push(match &pool.logs.access_log {
                Some(path) => Some(LogFile::open(key("access_log"), path)?),
                None => None,
            });
            slow.push(match &pool.logs.slowlog {
                Some(path) => Some(LogFile::open(key("slowlog"), path)?),
                None => None,
            });
        }
        Ok(Self {
            error,
            access,
            slow,
        })
    }

    /// Whether any file is configured (else stderr is the only log and nothing is relayed).
    pub fn any(&self) -> bool {
        self.files().next().is_some()
    }

    pub fn has_error_log(&self) -> bool {
        self.error.is_some()
    }

    fn files(&self) -> impl Iterator<Item = &LogFile> {
        self.error
            .iter()
            .chain(self.access.iter().flatten())
            .chain(self.slow.iter().flatten())
    }

    fn file_for(&self, route: Route) -> Option<&LogFile> {
        match route {
            Route::Error => self.error.as_ref(),
            Route::Access(i) => self.access.get(i)?.as_ref(),
            Route::Slow(i) => self.slow.get(i)?.as_ref(),
        }
    }

    /// Append whole `lines` where `route` says. A pool without that file (a reload turned it
    /// on; the master opens files at start) sends them to the error log rather than lose them.
    pub fn write(&self, route: Route, lines: &[u8]) {
        let file = match self.file_for(route) {
            Some(file) => file,
            None if route == Route::Error => return write_stderr(lines),
            None => match &self.error {
                Some(file) => file,
                None => return write_stderr(lines),
            },
        };
        if let Err(e) = file.write_lines(lines) {
            // Said on stderr: the error log itself may be what fails.
            write_stderr(
                format!(
                    "fastpm: cannot write {} {}: {e}\n",
                    file.what(),
                    file.path().display()
                )
                .as_bytes(),
            );
        }
    }

    /// Reopen every file by its path (logrotate renamed them and sent USR1).
    pub fn reopen(&self) -> Reopened {
        let mut done = Reopened {
            reopened: Vec::new(),
            failed: Vec::new(),
        };
        for file in self.files() {
            match file.reopen() {
                Ok(()) => done.reopened.push(file.path().to_path_buf()),
                Err(e) => done.failed.push(e),
            }
        }
        done
    }
}

fn write_stderr(lines: &[u8]) {
    let _ = std::io::stderr().write_all(lines);
}
