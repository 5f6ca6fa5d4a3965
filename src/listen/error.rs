//! Why a listening socket could not be set up, as one line an operator can act on.
//!
//! Every message names the address (`cannot bind unix:/run/x.sock: Permission denied (os error
//! 13)`). The operating-system error is part of the message and deliberately *not* exposed as
//! `source()`: `main` prints the cause chain, and exposing it twice would repeat it on the line.
//! [`ListenError::os_error`] gives it back to code that wants to inspect it.

use std::io;

use super::ListenAddress;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot create a socket for {address}: {cause}")]
    Socket {
        address: ListenAddress,
        cause: io::Error,
    },
    #[error("cannot bind {address}: {cause}")]
    Bind {
        address: ListenAddress,
        cause: io::Error,
    },
    #[error("cannot listen on {address} with backlog {backlog}: {cause}")]
    Listen {
        address: ListenAddress,
        backlog: u32,
        cause: io::Error,
    },
    /// A server answers on the socket path: replacing its socket would silently steal its
    /// clients, so fastpm refuses.
    #[error("cannot bind {address}: another server is listening on {path} (a connection to it succeeded); stop it or choose another path")]
    InUse {
        address: ListenAddress,
        path: std::path::PathBuf,
    },
    /// Something that is not a socket sits at the path; fastpm never deletes a regular file.
    #[error("cannot bind {address}: {path} exists and is not a socket; refusing to remove it")]
    NotASocket {
        address: ListenAddress,
        path: std::path::PathBuf,
    },
    #[error("cannot bind {address}: cannot check the existing socket file {path}: {cause}")]
    CheckExisting {
        address: ListenAddress,
        path: std::path::PathBuf,
        cause: io::Error,
    },
    #[error("cannot bind {address}: cannot remove the stale socket file {path}: {cause}")]
    RemoveStale {
        address: ListenAddress,
        path: std::path::PathBuf,
        cause: io::Error,
    },
    #[error("cannot set mode {mode:04o} on {address}: {cause}")]
    Chmod {
        address: ListenAddress,
        mode: u32,
        cause: io::Error,
    },
    #[error("cannot set owner of {address}: no user named {user:?}")]
    UnknownUser {
        address: ListenAddress,
        user: String,
    },
    #[error("cannot set group of {address}: no group named {group:?}")]
    UnknownGroup {
        address: ListenAddress,
        group: String,
    },
    #[error("cannot set owner of {address}: cannot look up {name:?}: {cause}")]
    Lookup {
        address: ListenAddress,
        name: String,
        cause: io::Error,
    },
    #[error("cannot change owner/group of {address}: {cause}")]
    Chown {
        address: ListenAddress,
        cause: io::Error,
    },
}

impl ListenError {
    /// The operating-system error behind this failure, when there is one.
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            Self::Socket { cause, .. }
            | Self::Bind { cause, .. }
            | Self::Listen { cause, .. }
            | Self::CheckExisting { cause, .. }
            | Self::RemoveStale { cause, .. }
            | Self::Chmod { cause, .. }
            | Self::Lookup { cause, .. }
            | Self::Chown { cause, .. } => Some(cause),
            Self::InUse { .. }
            | Self::NotASocket { .. }
            | Self::UnknownUser { .. }
            | Self::UnknownGroup { .. } => None,
        }
    }
}
