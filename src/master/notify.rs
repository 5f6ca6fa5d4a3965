//! `sd_notify`: telling systemd (a `Type=notify` service) that the master is ready, reloading or
//! stopping, and a one-line status for `systemctl status`.
//!
//! The protocol is one unix datagram of `KEY=VALUE` lines sent to `$NOTIFY_SOCKET` — a path, or
//! an abstract socket name written with a leading `@`. Without `$NOTIFY_SOCKET` (not started by
//! systemd) every call is a no-op, so the master can call it unconditionally.
//!
//! Children must not inherit `NOTIFY_SOCKET`: `sys::child::ChildSetup` removes it (and the
//! `LISTEN_*` variables) from the environment of every child but a new master after an upgrade.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Where `$NOTIFY_SOCKET` points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifyTarget {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract socket (`@name` in the variable; the name without the `@`).
    Abstract(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={0:?} is neither an absolute path nor an @abstract name")]
    BadAddress(String),
    #[error("cannot send to NOTIFY_SOCKET {target}: {cause}")]
    Send { target: String, cause: io::Error },
    #[error("cannot create a socket for sd_notify: {0}")]
    Socket(io::Error),
}

/// Parse the value of `$NOTIFY_SOCKET`. `Ok(None)` when it is empty (treated as unset).
pub fn parse_notify_socket(value: &str) -> Result<Option<NotifyTarget>, NotifyError> {
    if value.is_empty() {
        return Ok(None);
    }
    if let Some(name) = value.strip_prefix('@') {
        if name.is_empty() {
            return Err(NotifyError::BadAddress(value.to_string()));
        }
        return Ok(Some(NotifyTarget::Abstract(name.as_bytes().to_vec())));
    }
    if value.starts_with('/') {
        return Ok(Some(NotifyTarget::Path(PathBuf::from(value))));
    }
    Err(NotifyError::BadAddress(value.to_string()))
}

/// Sends state changes to systemd; does nothing when not run under systemd.
#[derive(Debug)]
pub struct Notifier {
    /// `None` when `$NOTIFY_SOCKET` is unset or empty.
    target: Option<(UnixDatagram, SocketAddr, String)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (unset or empty: a disabled notifier).
    pub fn from_env() -> Result<Self, NotifyError> {
        Self::from_value(&std::env::var(NOTIFY_SOCKET_ENV).unwrap_or_default())
    }

    /// From a `$NOTIFY_SOCKET`-style value (tests, or a caller that read the variable itself).
    pub fn from_value(value: &str) -> Result<Self, NotifyError> {
        let Some(target) = parse_notify_socket(value)? else {
            return Ok(Self::disabled());
        };
        let addr = match &target {
            NotifyTarget::Path(path) => SocketAddr::from_pathname(path),
            NotifyTarget::Abstract(name) => SocketAddr::from_abstract_name(name),
        }
        .map_err(|_| NotifyError::BadAddress(value.to_string()))?;
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        Ok(Self {
            target: Some((socket, addr, value.to_string())),
        })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self { target: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1` with our pid: startup finished (sockets bound, workers started).
    pub fn ready(&self) -> Result<(), NotifyError> {
        self.send(&format!("READY=1\nMAINPID={}", std::process::id()))
    }

    /// `RELOADING=1`: a `HUP` reload began (send [`Notifier::ready`] when it is done).
    pub fn reloading(&self) -> Result<(), NotifyError> {
        self.send("RELOADING=1")
    }

    /// `STOPPING=1`: a graceful or immediate stop began.
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1")
    }

    /// `STATUS=…`: one line shown by `systemctl status` (newlines become spaces, so the text
    /// cannot smuggle in other variables).
    pub fn status(&self, text: &str) -> Result<(), NotifyError> {
        self.send(&format!("STATUS={}", one_line(text)))
    }

    /// Send `state` (newline-separated `KEY=VALUE` lines) as one datagram.
    pub fn send(&self, state: &str) -> Result<(), NotifyError> {
        let Some((socket, addr, shown)) = &self.target else {
            return Ok(());
        };
        socket
            .send_to_addr(state.as_bytes(), addr)
            .map(|_| ())
            .map_err(|cause| NotifyError::Send {
                target: shown.clone(),
                cause,
            })
    }
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect()
}
