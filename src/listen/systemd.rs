//! systemd socket activation: `systemd:NAME` addresses take the listening socket systemd passed
//! with `FileDescriptorName=NAME`, instead of binding one.
//!
//! The protocol (sd_listen_fds(3)): systemd leaves the sockets open from descriptor 3 on and sets
//! `LISTEN_PID` (the process they are meant for — a child that inherited the environment must
//! not take them), `LISTEN_FDS` (how many) and `LISTEN_FDNAMES` (their names, `:`-separated;
//! every name is `unknown` when it is unset). Parsing is pure ([`parse_activation`]); taking a
//! socket ([`take_listener`]) adopts the descriptor once, makes it close-on-exec and checks that
//! it really is a listening stream socket. Sockets no pool takes are not closed (the unit owns
//! them) but never reach a child either: the master marks every inherited descriptor
//! close-on-exec at start (`sys::inherit::close_inherited_on_exec`).
//!
//! The socket unit owns the socket's settings: its `Backlog=`, `SocketMode=` and owner are kept
//! as systemd made them (the status page still shows the effective backlog, read from the
//! kernel).

use std::collections::HashSet;
use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;

use super::socket::Listener;
use crate::sys::inherit::adopt_inherited_fd;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// One socket systemd passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassedSocket {
    /// Its `FileDescriptorName=` (`unknown` when systemd gave none).
    pub name: String,
    pub fd: RawFd,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActivationError {
    #[error("not started by systemd socket activation (LISTEN_PID and LISTEN_FDS are not set); start fastpm through its .socket unit, or listen on a unix: or IP:PORT address")]
    NotActivated,
    #[error("LISTEN_PID={listen_pid} is not this process ({ours}): the sockets were meant for another process")]
    WrongPid { listen_pid: u32, ours: u32 },
    #[error("bad {var}={value:?}: expected a number")]
    NotANumber { var: &'static str, value: String },
    #[error("LISTEN_FDNAMES has {names} names for LISTEN_FDS={fds} sockets")]
    NameCount { names: usize, fds: usize },
    #[error("systemd passed no socket named {name:?} (passed: {passed}); set FileDescriptorName={name} in the .socket unit")]
    NameNotFound { name: String, passed: String },
    #[error("the socket named {name:?} was already taken by this process")]
    AlreadyTaken { name: String },
    #[error("the socket named {name:?} (descriptor {fd}) cannot be used: {cause}")]
    Unusable {
        name: String,
        fd: RawFd,
        cause: String,
    },
}

/// The sockets systemd passed, from the values of `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`
/// and our pid. Pure.
pub fn parse_activation(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    our_pid: u32,
) -> Result<Vec<PassedSocket>, ActivationError> {
    let (Some(pid), Some(fds)) = (listen_pid, listen_fds) else {
        return Err(ActivationError::NotActivated);
    };
    let number = |var: &'static str, value: &str| {
        value
            .trim()
            .parse::<u32>()
            .map_err(|_| ActivationError::NotANumber {
                var,
                value: value.to_string(),
            })
    };
    let listen_pid = number("LISTEN_PID", pid)?;
    if listen_pid != our_pid {
        return Err(ActivationError::WrongPid {
            listen_pid,
            ours: our_pid,
        });
    }
    // More than a few thousand descriptors would be nonsense; cap before allocating names.
    let count = number("LISTEN_FDS", fds)?.min(65_536) as usize;
    let names: Vec<String> = match listen_fdnames {
        None => vec!["unknown".to_string(); count],
        Some(list) => {
            let names: Vec<String> = if list.is_empty() && count == 0 {
                Vec::new()
            } else {
                list.split(':').map(str::to_string).collect()
            };
            if names.len() != count {
                return Err(ActivationError::NameCount {
                    names: names.len(),
                    fds: count,
                });
            }
            names
        }
    };
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| PassedSocket {
            name,
            fd: LISTEN_FDS_START + i as RawFd,
        })
        .collect())
}

/// The passed socket named `name`.
pub fn find<'a>(
    passed: &'a [PassedSocket],
    name: &str,
) -> Result<&'a PassedSocket, ActivationError> {
    passed
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ActivationError::NameNotFound {
            name: name.to_string(),
            passed: if passed.is_empty() {
                "none".to_string()
            } else {
                passed
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

/// Descriptors already adopted: a second `OwnedFd` for the same number would close it twice.
static TAKEN: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);

/// Take the listening socket systemd passed as `name`, reading the activation variables of this
/// process. Each name can be taken once per process.
pub fn take_listener(name: &str) -> Result<Listener, ActivationError> {
    let var = |key| std::env::var(key).ok();
    let passed = parse_activation(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )?;
    let socket = find(&passed, name)?;
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    if taken.contains(&socket.fd) {
        return Err(ActivationError::AlreadyTaken {
            name: name.to_string(),
        });
    }
    let unusable = |cause: io::Error| ActivationError::Unusable {
        name: name.to_string(),
        fd: socket.fd,
        cause: cause.to_string(),
    };
    let fd = adopt_inherited_fd(socket.fd).map_err(unusable)?;
    taken.insert(socket.fd);
    // from_inherited refuses (and closes) a descriptor that is not a listening stream socket.
    Listener::from_inherited(fd).map_err(unusable)
}
