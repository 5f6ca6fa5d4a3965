//! `php_children = "shared"`: one php-cgi parent per pool, started and restarted by the master.
//!
//! php-cgi with `PHP_FCGI_CHILDREN=N` sets PHP up (extensions, php.ini, opcache's shared memory)
//! and then forks N children that accept on its socket, as php-fpm's master forks its children:
//! the children share one opcache. With a php-cgi per worker each has its own, N× the memory
//! (docs/BENCHMARKS.md: 2.5× php-fpm's PSS on DokuWiki) and a cold cache after every restart.
//!
//! Who does what:
//!
//! - The master (`SharedPhp`, one per pool, for thread and process workers alike) binds
//!   `<runtime_dir>/<pool>/php-shared-<key>.sock`, hands it to the pool's user, starts php-cgi on
//!   it as that user with `PHP_FCGI_CHILDREN = max_children`, writes the parent's pid next to it
//!   (`.pid`), and starts it again when it ends (its leftover children are killed first: they
//!   hold the old socket). The parent leads a process group (what a kill reaches) inside
//!   fastpm's session, so the whole pool is one scheduling group with fastpm, as php-fpm's
//!   children are with php-fpm (`kernel.sched_autogroup_enabled` makes each session one: a
//!   session of its own would give the pool's PHP a share of the CPU beside fastpm's, which
//!   php-fpm does not get; docs/BENCHMARKS.md). Its parent-death signal is TERM, on which
//!   php-cgi kills its children before leaving. The key names the settings that shape the php-cgi command line
//!   (`php_cgi`, `php_ini`, `ini`, `env`, `clear_env`, `user`, `group`, `max_children`): a reload that
//!   changes one starts a new parent on a new socket while the old generation of workers still
//!   uses the old one (`crate::master::apps::PoolPhp`).
//! - php-cgi's parent replaces a child that ends (killed for `request_timeout`, recycled after
//!   `max_requests`, crashed). Its children get `PHP_FCGI_MAX_REQUESTS=0`: a child that closed
//!   its kept connection by itself after its last request would race with the worker's next
//!   request, sent before the close arrives (the request would be lost with a 502). The worker
//!   counts instead and kills its child after `max_requests` answers on its connection.
//! - Each fastpm worker keeps one connection to the socket (a child serves one connection at a
//!   time, so N workers meet N children), reconnects when it breaks, and finds the child it
//!   talks to through the socket's peer (`peer`) to kill it on `request_timeout`.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

use super::child::{ChildSpec, PhpChild};
use crate::config::PoolConfig;

/// A parent that ran at least this long before it ended is restarted at once; one that ended
/// sooner counts as a failed start, and failed starts back off (`restart_delay`).
const STABLE_RUN: Duration = Duration::from_secs(5);
/// The first and the longest wait before starting a parent that failed.
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// How long to wait before start number `failures + 1` after `failures` failed ones in a row.
/// Pure (table-tested): 0 after a parent that ran well, then 100 ms doubling up to 5 s.
pub fn restart_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    crate::master::pm::doubling(FIRST_DELAY, MAX_DELAY, failures)
}

/// FNV-1a, 64 bits: a stable hash (the same in the master and in every worker process built
/// from the same source), for the socket name only.
fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash
}

/// The settings that shape a pool's php-cgi parent, hashed: equal keys, same command line.
pub fn key(pool: &PoolConfig) -> String {
    let app = &pool.app;
    let mut hash = 0xcbf2_9ce4_8422_2325;
    let mut add = |part: &str| {
        // Each part ends with a NUL, which no part contains: ("ab","c") ≠ ("a","bc").
        hash = fnv1a(part.as_bytes(), hash);
        hash = fnv1a(&[0], hash);
    };
    add(&app.php_cgi);
    add(&format!("php_ini {:?}", app.php_ini));
    for (name, value) in &app.ini {
        add(&format!("ini {name}={value}"));
    }
    for (name, value) in &app.env {
        add(&format!("env {name}={value}"));
    }
    add(&format!("clear_env {}", app.clear_env));
    add(&format!("user {:?}", pool.user));
    add(&format!("group {:?}", pool.group));
    add(&format!("children {}", pool.max_children));
    format!("{hash:016x}")
}

/// Where the pool's shared php-cgi listens (in the pool's private directory).
pub fn socket_path(pool: &PoolConfig, runtime_dir: &Path) -> PathBuf {
    crate::config::runtime_dir::pool_dir(runtime_dir, &pool.name)
        .join(format!("php-shared-{}.sock", key(pool)))
}

/// The file that names the parent listening on `socket`.
pub fn pid_path(socket: &Path) -> PathBuf {
    socket.with_extension("pid")
}

/// The pid written in a pid file, if it holds one.
pub fn read_pid(pid_file: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// What the supervisor and its owner share.
#[derive(Debug, Default)]
struct State {
    /// Set once by `Drop`: no restart after this.
    stopping: bool,
    /// The running parent, not yet reaped (so its pid and process group cannot be reused).
    pid: Option<u32>,
    /// The inode of the socket file the last parent was started on: only that file is removed
    /// at the end (after a binary upgrade the new master may have bound its own at the path).
    socket_inode: Option<u64>,
    /// The first start was tried (`start` waits for it, so the socket exists before workers).
    first_tried: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pool's php-cgi parent and the thread that keeps it running. Dropping it kills the parent
/// and its children: drop it after the pool's workers have finished.
pub struct SharedPhp {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    socket: PathBuf,
}

impl SharedPhp {
    /// Start the parent described by `spec` (its `socket_path`, `children` and `credentials`
    /// set) and the thread that restarts it. Returns once the first start was tried: its socket
    /// exists unless php-cgi could not start (logged, then retried with back-off).
    pub fn start(spec: ChildSpec) -> io::Result<SharedPhp> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let socket = spec.socket_path.clone();
        let pid_file = pid_path(&socket);
        let thread = {
            let shared = Arc::clone(&shared);
            let pid_file = pid_file.clone();
            // The parent's parent-death signal fires when this thread ends: it lives until
            // `Drop`, which kills the parent first.
            std::thread::Builder::new()
                .name(format!("php-shared-{}", spec.pool))
                .spawn(move || supervise(&spec, &pid_file, &shared))?
        };
        let mut state = shared.lock();
        while !state.first_tried {
            state = shared
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        drop(state);
        Ok(SharedPhp {
            shared,
            thread: Some(thread),
            socket,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for SharedPhp {
    fn drop(&mut self) {
        let inode = {
            let mut state = self.shared.lock();
            state.stopping = true;
            if let Some(pid) = state.pid {
                // Not reaped yet (the supervisor waits with WNOWAIT): the group is still ours.
                let _ = kill(Pid::from_raw(-(pid as i32)), Signal::SIGKILL);
            }
            state.socket_inode
        };
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if inode.is_some()
            && std::fs::symlink_metadata(&self.socket)
                .ok()
                .map(|m| m.ino())
                == inode
        {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

/// The supervisor thread: start the parent, wait for it to end, kill what it left, start it
/// again (backing off after quick failures), until `stopping`.
fn supervise(spec: &ChildSpec, pid_file: &Path, shared: &Shared) {
    let pool = &spec.pool;
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let spawned = PhpChild::spawn(spec);
        let mut state = shared.lock();
        state.first_tried = true;
        shared.changed.notify_all();
        let mut parent = match spawned {
            Ok(parent) => parent,
            Err(e) => {
                tracing::error!(pool = %pool, error = %e, "php-cgi cannot start");
                failures += 1;
                if wait_or_stop(shared, state, restart_delay(failures)) {
                    return;
                }
                continue;
            }
        };
        let pid = parent.pid();
        if state.stopping {
            drop(state);
            parent.kill();
            return;
        }
        state.pid = Some(pid);
        state.socket_inode = std::fs::symlink_metadata(&spec.socket_path)
            .ok()
            .map(|m| m.ino());
        drop(state);
        if let Err(e) = write_pid(pid_file, pid) {
            tracing::error!(pool = %pool, error = %e, "cannot write {}; request_timeout cannot find the php-cgi child to kill", pid_file.display());
        }
        tracing::info!(pool = %pool, pid, children = spec.children, "php-cgi started; its children share one opcache");
        // Wait without reaping: until the pid is cleared below, `Drop` may still signal its group.
        while let Err(nix::errno::Errno::EINTR) = waitid(
            Id::Pid(Pid::from_raw(pid as i32)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {}
        let mut state = shared.lock();
        state.pid = None;
        let stopping = state.stopping;
        drop(state);
        // Its children (same process group) are orphans now, still accepting on the socket.
        let status = parent.kill();
        if stopping {
            if read_pid(pid_file) == Some(pid) {
                let _ = std::fs::remove_file(pid_file);
            }
            return;
        }
        let ran = started.elapsed();
        failures = if ran >= STABLE_RUN { 0 } else { failures + 1 };
        let delay = restart_delay(failures);
        let status = status.map(|s| s.to_string()).unwrap_or_default();
        tracing::warn!(pool = %pool, pid, status, ran_ms = ran.as_millis() as u64, "php-cgi (the pool's shared parent) ended; its children were killed; starting it again in {} ms", delay.as_millis());
        if wait_or_stop(shared, shared.lock(), delay) {
            return;
        }
    }
}

/// Wait `delay` unless stopped first; true when stopping.
fn wait_or_stop(shared: &Shared, mut state: MutexGuard<'_, State>, delay: Duration) -> bool {
    let until = Instant::now() + delay;
    loop {
        if state.stopping {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        state = shared
            .changed
            .wait_timeout(state, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Write `pid` to `path` whole (a reader never sees half a file): a temporary file, renamed.
/// The directory belongs to the pool's user while the master writes as root: the temporary
/// file is created new (`O_EXCL`, which never follows a symlink planted at its name), and
/// `rename` replaces whatever is at `path` without following it.
fn write_pid(path: &Path, pid: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("pid.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    file.write_all(format!("{pid}\n").as_bytes())?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delay_table() {
        let ms = Duration::from_millis;
        for (failures, want) in [
            (0, ms(0)),
            (1, ms(100)),
            (2, ms(200)),
            (3, ms(400)),
            (6, ms(3200)),
            (7, ms(5000)),
            (40, ms(5000)),
        ] {
            assert_eq!(restart_delay(failures), want, "{failures}");
        }
    }

    #[test]
    fn the_key_follows_what_shapes_the_command_line() {
        let config = crate::config::load_embedded().unwrap();
        let pool = config.pools[0].clone();
        let base = key(&pool);
        assert_eq!(base.len(), 16);
        assert_eq!(key(&pool), base, "stable");
        let changed = |edit: &dyn Fn(&mut PoolConfig)| {
            let mut p = pool.clone();
            edit(&mut p);
            key(&p)
        };
        assert_ne!(changed(&|p| p.max_children += 1), base);
        assert_ne!(changed(&|p| p.user = Some("www-data".into())), base);
        assert_ne!(
            changed(&|p| {
                p.app.ini.insert("memory_limit".into(), "64M".into());
            }),
            base
        );
        assert_ne!(
            changed(&|p| {
                p.app.env.insert("A".into(), "1".into());
            }),
            base
        );
        assert_ne!(changed(&|p| p.app.clear_env = !p.app.clear_env), base);
        assert_ne!(changed(&|p| p.app.php_cgi = "/opt/php-cgi".into()), base);
        // What the workers do with php-cgi's answers does not restart php-cgi.
        assert_eq!(changed(&|p| p.max_requests = 7), base);
        assert_eq!(
            changed(&|p| p.request_timeout = Duration::from_secs(3)),
            base
        );
        // ("ab", "c") and ("a", "bc") differ.
        let a = changed(&|p| {
            p.app.ini.insert("x".into(), "ab".into());
        });
        let b = changed(&|p| {
            p.app.ini.insert("xa".into(), "b".into());
        });
        assert_ne!(a, b);
    }

    #[test]
    fn pid_files_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("php-shared-x.pid");
        assert_eq!(read_pid(&path), None);
        write_pid(&path, 4242).unwrap();
        assert_eq!(read_pid(&path), Some(4242));
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(read_pid(&path), None);
    }
}
