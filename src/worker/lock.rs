//! The accept lock: only the holder waits for and accepts a connection, so one connection wakes
//! one worker and the others sleep on the lock instead of racing for the socket.
//!
//! It is held around the wait + accept and never while a request runs. Thread workers share an
//! in-process mutex; `none` lets every worker wait on the socket (Linux wakes them all on poll,
//! and the losers see EAGAIN). The cross-process kinds (`mutex` in shared memory, `fcntl`,
//! `flock`) come with worker processes.

use std::sync::{Mutex, MutexGuard};

use crate::config::AcceptLock as LockKind;

/// Why a lock kind cannot be used for a pool.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("accept_lock = \"{0}\" needs workers = \"process\", which this build does not have yet; use \"mutex\" or \"none\" with thread workers")]
    NeedsProcessWorkers(String),
}

/// One pool's accept lock.
pub enum AcceptLock {
    /// In-process mutex shared by a pool's thread workers.
    ThreadMutex(Mutex<()>),
    /// No lock: every worker waits on the socket.
    None,
}

/// Held while waiting for and accepting one connection.
pub struct LockGuard<'a> {
    _guard: Option<MutexGuard<'a, ()>>,
}

impl AcceptLock {
    /// The lock for a pool of thread workers.
    pub fn for_threads(kind: LockKind) -> Result<Self, LockError> {
        match kind {
            LockKind::Mutex => Ok(Self::ThreadMutex(Mutex::new(()))),
            LockKind::None => Ok(Self::None),
            other => Err(LockError::NeedsProcessWorkers(other.to_string())),
        }
    }

    /// Block until this worker may accept.
    pub fn acquire(&self) -> LockGuard<'_> {
        match self {
            // A worker that panicked while holding the lock left no state behind it: the lock
            // guards nothing but the turn to accept, so a poisoned lock is simply taken.
            Self::ThreadMutex(m) => LockGuard {
                _guard: Some(m.lock().unwrap_or_else(|p| p.into_inner())),
            },
            Self::None => LockGuard { _guard: None },
        }
    }
}
