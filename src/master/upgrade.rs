//! Binary upgrade on SIGUSR2, keeping the sockets (nginx's way, without a second signal):
//!
//! 1. the running master starts the binary now on disk (`/proc/self/exe` is the old one, so the
//!    path it was started as is used) with the same arguments; the listening sockets and the
//!    status listener are inherited by descriptor number, named in [`INHERIT_ENV`], and the
//!    write end of a pipe in [`READY_ENV`];
//! 2. the new master adopts those sockets instead of binding (so not one connection is refused:
//!    the kernel queue never closes), starts its workers, and writes `ready` on the pipe;
//! 3. the old master then retires its workers (each finishes the connection in hand) and exits,
//!    leaving the socket files to the new master. If the new master dies before it is ready,
//!    the old one says so and keeps serving.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::{Child, Command};

use crate::sys::child::ChildSetup;
use crate::sys::inherit::adopt_inherited_fd;

/// `name=fd,name=fd,…`: pool names (and [`STATUS_NAME`]) to inherited descriptors.
pub const INHERIT_ENV: &str = "FASTPM_INHERIT";
/// The descriptor to write `ready` to once the new master serves.
pub const READY_ENV: &str = "FASTPM_UPGRADE_READY_FD";
/// The status listener's name in [`INHERIT_ENV`] (not a valid pool name: pools are
/// `A-Za-z0-9_-`).
pub const STATUS_NAME: &str = "@status";

/// Pure: parse [`INHERIT_ENV`].
pub fn parse_inherit(value: &str) -> Result<HashMap<String, RawFd>, String> {
    let mut out = HashMap::new();
    for item in value.split(',').filter(|i| !i.is_empty()) {
        let (name, fd) = item
            .split_once('=')
            .ok_or_else(|| format!("{INHERIT_ENV}: {item:?} is not NAME=FD"))?;
        let fd: RawFd = fd
            .parse()
            .ok()
            .filter(|fd| *fd >= 3)
            .ok_or_else(|| format!("{INHERIT_ENV}: {item:?}: bad descriptor"))?;
        if out.insert(name.to_string(), fd).is_some() {
            return Err(format!("{INHERIT_ENV}: {name} given twice"));
        }
    }
    Ok(out)
}

/// What a new master received from the one it replaces.
#[derive(Default)]
pub struct Inherited {
    pub sockets: HashMap<String, OwnedFd>,
    ready: Option<OwnedFd>,
}

impl Inherited {
    /// Read (and clear, so our own children never see them) the upgrade variables.
    pub fn from_env() -> std::io::Result<Self> {
        let mut inherited = Self::default();
        if let Ok(value) = std::env::var(INHERIT_ENV) {
            let named = parse_inherit(&value).map_err(std::io::Error::other)?;
            for (name, fd) in named {
                inherited.sockets.insert(name, adopt_inherited_fd(fd)?);
            }
        }
        if let Ok(value) = std::env::var(READY_ENV) {
            let fd = value
                .parse()
                .map_err(|_| std::io::Error::other(format!("{READY_ENV}={value:?}")))?;
            inherited.ready = Some(adopt_inherited_fd(fd)?);
        }
        std::env::remove_var(INHERIT_ENV);
        std::env::remove_var(READY_ENV);
        Ok(inherited)
    }

    /// Tell the old master we serve.
    pub fn signal_ready(&mut self) {
        if let Some(fd) = self.ready.take() {
            let _ = std::fs::File::from(fd).write_all(b"ready\n");
        }
    }
}

/// An upgrade in progress, seen from the old master.
pub struct Upgrade {
    pub child: Child,
    ready: std::fs::File,
}

/// Where an upgrade stands.
#[derive(Debug, PartialEq, Eq)]
pub enum UpgradeState {
    Pending,
    /// The new master serves: this one should leave.
    Ready,
    /// The new master ended before it was ready.
    Failed(String),
}

/// Start the new master with `sockets` (name → our descriptor) inherited.
pub fn start(sockets: &[(String, RawFd)]) -> std::io::Result<Upgrade> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(
        read_end.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_else(|| "fastpm".into());
    // The binary on disk now: the path we were started as (after an upgrade /proc/self/exe
    // still names the old, deleted file).
    let program = if std::path::Path::new(&program).components().count() > 1 {
        program
    } else {
        std::env::current_exe()?.into_os_string()
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    let named: Vec<String> = sockets.iter().map(|(n, fd)| format!("{n}={fd}")).collect();
    cmd.env(INHERIT_ENV, named.join(","));
    cmd.env(READY_ENV, write_end.as_raw_fd().to_string());
    let mut fds: Vec<RawFd> = sockets.iter().map(|(_, fd)| *fd).collect();
    fds.push(write_end.as_raw_fd());
    ChildSetup::new().new_master().inherit(fds).apply(&mut cmd);
    let child = cmd.spawn()?;
    drop(write_end);
    Ok(Upgrade {
        child,
        ready: std::fs::File::from(read_end),
    })
}

impl Upgrade {
    pub fn poll(&mut self) -> UpgradeState {
        let mut buf = [0u8; 16];
        match self.ready.read(&mut buf) {
            Ok(n) if n > 0 => return UpgradeState::Ready,
            _ => {}
        }
        match self.child.try_wait() {
            Ok(Some(status)) => UpgradeState::Failed(status.to_string()),
            _ => UpgradeState::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherit_table() {
        let ok = parse_inherit("www=5,@status=7").unwrap();
        assert_eq!(ok.get("www"), Some(&5));
        assert_eq!(ok.get(STATUS_NAME), Some(&7));
        assert!(parse_inherit("").unwrap().is_empty());
        for bad in ["www", "www=x", "www=1", "a=5,a=6"] {
            assert!(parse_inherit(bad).is_err(), "{bad}");
        }
    }
}
