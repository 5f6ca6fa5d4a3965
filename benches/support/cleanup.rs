//! Leave nothing behind when the bench is interrupted: a registry of the process groups and
//! temporary directories the bench created, and a SIGINT/SIGTERM watcher that kills those
//! groups and removes those directories before exiting. Normal exit and panics are handled by
//! the owners' `Drop`; this covers the signals that would skip `Drop`.

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::thread;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

/// Process groups (each led by a server the bench started) still running.
static LIVE_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());
/// Temporary directories to remove if a signal ends the bench.
static TEMP_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub fn track_group(leader: i32) {
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(leader);
}

pub fn untrack_group(leader: i32) {
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&g| g != leader);
}

pub fn track_dir(dir: PathBuf) {
    TEMP_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir);
}

/// Installs the watcher. The handlers are registered before this returns, so a signal that
/// arrives while servers start is already caught.
pub fn install_signal_watcher() -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut interrupt, mut terminate) = {
        let _context = runtime.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    thread::Builder::new()
        .name("signal-watcher".into())
        .spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            });
            eprintln!("bench: interrupted, stopping the servers it started");
            for &leader in LIVE_GROUPS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let _ = killpg(Pid::from_raw(leader), Signal::SIGKILL);
            }
            for dir in TEMP_DIRS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let _ = std::fs::remove_dir_all(dir);
            }
            std::process::exit(130);
        })?;
    Ok(())
}
