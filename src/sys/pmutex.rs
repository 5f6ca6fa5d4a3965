//! A robust, process-shared pthread mutex living in a memfd mapping of its own: the `mutex`
//! accept lock between worker *processes*.
//!
//! Why a mapping of its own (not a slot in the scoreboard): the lock must be attachable by a
//! re-executed worker from one inherited descriptor, and its lifetime (one per pool) differs from
//! the scoreboard's layout. Why robust: a worker killed while it waits in `accept()` holds the
//! lock; without `PTHREAD_MUTEX_ROBUST` every other worker of the pool would block forever. With
//! it the next locker gets `EOWNERDEAD`, marks the mutex consistent, logs one warning and goes on
//! (the lock guards no data, only the turn to accept, so nothing needs repairing).
//!
//! The mutex is never destroyed: other processes may still hold the mapping, and the memory goes
//! away with the last descriptor/mapping of the memfd.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use super::shm::{SharedMapping, ZeroValidAtomic};

/// Written after the mutex is initialised; a worker checks it so that a wrong descriptor fails
/// loudly instead of locking garbage ("fastpmmx" in ASCII).
const MAGIC: u64 = 0x6661_7374_706d_6d78;

/// The bytes of the mapping: a magic word, then room for a `pthread_mutex_t`.
///
/// The mutex storage is declared as atomics so the mapping can be viewed through
/// [`SharedMapping::slice_at`]; atomics contain `UnsafeCell`, so handing their address to
/// pthread (which writes it) through a shared reference is sound.
#[repr(C)]
struct MutexPage {
    magic: AtomicU64,
    mutex: [AtomicU64; 8],
}

// SAFETY: every field is an atomic integer or an array of them, and zero bytes are a valid value.
unsafe impl ZeroValidAtomic for MutexPage {}

const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= 8 * 8);
const _: () = assert!(std::mem::align_of::<libc::pthread_mutex_t>() <= 8);

/// A robust `PTHREAD_PROCESS_SHARED` mutex in shared memory.
pub struct ProcessMutex {
    mapping: SharedMapping,
}

impl std::fmt::Debug for ProcessMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessMutex")
            .field("memfd", &self.raw_fd())
            .finish()
    }
}

/// Holds a [`ProcessMutex`]; unlocks on drop.
pub struct ProcessMutexGuard<'a> {
    mutex: &'a ProcessMutex,
    recovered: bool,
}

impl ProcessMutexGuard<'_> {
    /// True when the previous owner died holding the lock and this locker recovered it.
    pub fn recovered_owner_death(&self) -> bool {
        self.recovered
    }
}

impl Drop for ProcessMutexGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard exists only while this thread holds the mutex, which was initialised
        // by `create` (checked by the magic word in `from_fd`) and lives as long as `mapping`.
        let rc = unsafe { libc::pthread_mutex_unlock(self.mutex.raw()) };
        if rc != 0 {
            tracing::error!(
                "accept lock: pthread_mutex_unlock failed: {}",
                io::Error::from_raw_os_error(rc)
            );
        }
    }
}

impl ProcessMutex {
    /// Create and initialise a new mutex in a fresh memfd (the master, once per pool).
    pub fn create() -> io::Result<Self> {
        let mapping =
            SharedMapping::create("fastpm-accept-lock", std::mem::size_of::<MutexPage>())?;
        let page = &mapping.slice_at::<MutexPage>(0, 1)[0];
        let raw = page.mutex.as_ptr() as *mut libc::pthread_mutex_t;
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is initialised by pthread_mutexattr_init before any other use and
        // destroyed once below; `raw` points into our own fresh mapping, zeroed, aligned (checked
        // by slice_at and the const asserts) and large enough for a pthread_mutex_t; nobody else
        // can see the mapping yet, so initialising it cannot race.
        unsafe {
            check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            let result = (|| {
                check(libc::pthread_mutexattr_setpshared(
                    attr.as_mut_ptr(),
                    libc::PTHREAD_PROCESS_SHARED,
                ))?;
                check(libc::pthread_mutexattr_setrobust(
                    attr.as_mut_ptr(),
                    libc::PTHREAD_MUTEX_ROBUST,
                ))?;
                check(libc::pthread_mutex_init(raw, attr.as_ptr()))
            })();
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
            result?;
        }
        page.magic.store(MAGIC, Ordering::Release);
        Ok(Self { mapping })
    }

    /// Attach to a mutex created by [`ProcessMutex::create`] in another process (a worker after
    /// exec, given the memfd). Refuses a descriptor that is too small or not initialised.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let size = nix::sys::stat::fstat(fd.as_raw_fd())?.st_size;
        let needed = std::mem::size_of::<MutexPage>();
        if size < needed as libc::off_t {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("accept lock descriptor holds {size} bytes, a mutex needs {needed}"),
            ));
        }
        let mapping = SharedMapping::map(fd, needed)?;
        let page = &mapping.slice_at::<MutexPage>(0, 1)[0];
        if page.magic.load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "accept lock descriptor does not hold an initialised fastpm mutex",
            ));
        }
        Ok(Self { mapping })
    }

    /// The memfd to hand to a worker process (close-on-exec: the spawner must pass it on
    /// explicitly, e.g. with `dup2` to a known number).
    pub fn raw_fd(&self) -> RawFd {
        self.mapping.raw_fd()
    }

    /// A new descriptor of the memfd (close-on-exec), to hand to a worker process.
    pub fn clone_fd(&self) -> io::Result<OwnedFd> {
        // SAFETY: the memfd is owned by `self.mapping` and stays open while `self` is borrowed;
        // the borrowed descriptor is only used to duplicate it.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.mapping.raw_fd()) };
        fd.try_clone_to_owned()
    }

    /// Block until this thread holds the mutex. When the previous owner died holding it, the
    /// mutex is made consistent, one warning is logged and the guard reports the recovery.
    pub fn lock(&self) -> io::Result<ProcessMutexGuard<'_>> {
        loop {
            // SAFETY: `raw()` points to a mutex initialised by `create` that lives as long as
            // `self.mapping`.
            let rc = unsafe { libc::pthread_mutex_lock(self.raw()) };
            match rc {
                0 => {
                    return Ok(ProcessMutexGuard {
                        mutex: self,
                        recovered: false,
                    })
                }
                libc::EOWNERDEAD => {
                    // SAFETY: we hold the mutex (EOWNERDEAD returns with it locked), which is the
                    // precondition of pthread_mutex_consistent.
                    let rc = unsafe { libc::pthread_mutex_consistent(self.raw()) };
                    // Build the guard first so the mutex is unlocked even if we return an error.
                    let guard = ProcessMutexGuard {
                        mutex: self,
                        recovered: true,
                    };
                    check(rc)?;
                    tracing::warn!(
                        "accept lock: the previous holder died holding it; recovered and continuing"
                    );
                    return Ok(guard);
                }
                libc::EINTR | libc::EAGAIN => continue,
                other => return Err(io::Error::from_raw_os_error(other)),
            }
        }
    }

    fn raw(&self) -> *mut libc::pthread_mutex_t {
        let page = &self.mapping.slice_at::<MutexPage>(0, 1)[0];
        page.mutex.as_ptr() as *mut libc::pthread_mutex_t
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}
