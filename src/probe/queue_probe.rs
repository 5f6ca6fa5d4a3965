//! The queue probe of one pool: picks how to ask the kernel about the pool's own listening
//! socket and keeps what it needs (a netlink socket, the listener's inode) between reads.
//!
//! The listener is identified by the inode of the *socket* (`fstat(fd).st_ino`), which is what
//! `sock_diag` reports; the inode of a unix socket's file on disk is a different number.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use super::inet_diag::InetDiagProbe;
use super::tcp_info::TcpInfoProbe;
use super::unix_diag::UnixDiagProbe;
use super::QueueReading;
use crate::listen::Listener;

/// How a probe reads the queue (for logs and the status page's honesty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeMethod {
    /// `unix_diag` with `UDIAG_SHOW_RQLEN`.
    UnixDiag,
    /// `inet_diag` with `SK_MEMINFO` (queue, backlog and drops).
    InetDiag,
    /// `getsockopt(TCP_INFO)` (queue and backlog, no drops).
    TcpInfo,
}

impl fmt::Display for ProbeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnixDiag => "unix_diag",
            Self::InetDiag => "inet_diag",
            Self::TcpInfo => "TCP_INFO",
        })
    }
}

pub struct QueueProbe {
    inner: Inner,
}

enum Inner {
    Unix(UnixDiagProbe),
    Inet(InetDiagProbe),
    TcpInfo(TcpInfoProbe),
}

impl QueueProbe {
    /// The best probe for `listener`: `sock_diag`, and for TCP `TCP_INFO` when `sock_diag`
    /// does not answer. The probe is read once here so that a probe that cannot work fails now,
    /// at start-up, and not silently in the sampler.
    pub fn for_listener(listener: &Listener) -> io::Result<Self> {
        match Self::sock_diag(listener) {
            Ok(probe) => Ok(probe),
            Err(e) if !listener.is_unix() => {
                tracing::warn!(error = %e, "inet_diag does not answer for this listener; reading its queue with TCP_INFO (no drop count)");
                Self::tcp_info(listener)
            }
            Err(e) => Err(e),
        }
    }

    /// A `sock_diag` probe (`unix_diag` or `inet_diag`), without fallback.
    pub fn sock_diag(listener: &Listener) -> io::Result<Self> {
        let inode = socket_inode(listener.as_fd())?;
        let inner = match listener {
            Listener::Unix(_) => Inner::Unix(UnixDiagProbe::new(listener.as_fd(), inode)?),
            Listener::Tcp(tcp) => Inner::Inet(InetDiagProbe::new(tcp.local_addr()?, inode)?),
        };
        Self::checked(inner)
    }

    /// A `TCP_INFO` probe (TCP listeners only). Holds a duplicate of the listening descriptor.
    pub fn tcp_info(listener: &Listener) -> io::Result<Self> {
        match listener {
            Listener::Tcp(tcp) => {
                let fd = tcp.as_fd().try_clone_to_owned()?;
                Self::checked(Inner::TcpInfo(TcpInfoProbe::new(fd)))
            }
            Listener::Unix(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TCP_INFO exists only for TCP sockets",
            )),
        }
    }

    fn checked(inner: Inner) -> io::Result<Self> {
        let mut probe = Self { inner };
        probe.read()?;
        Ok(probe)
    }

    pub fn method(&self) -> ProbeMethod {
        match self.inner {
            Inner::Unix(_) => ProbeMethod::UnixDiag,
            Inner::Inet(_) => ProbeMethod::InetDiag,
            Inner::TcpInfo(_) => ProbeMethod::TcpInfo,
        }
    }

    /// Ask the kernel now.
    pub fn read(&mut self) -> io::Result<QueueReading> {
        match &mut self.inner {
            Inner::Unix(p) => p.read(),
            Inner::Inet(p) => p.read(),
            Inner::TcpInfo(p) => p.read(),
        }
    }

    /// What the sampler reads each tick; `None`: no sample this tick. For a unix listener the
    /// kernel is asked only when the queue is not seen empty (and, while connections wait, no
    /// more often than the walk's cost allows), after [`Self::forget`], or at least every
    /// [`super::unix_diag::REFRESH`], since `unix_diag`'s lookup walks every unix socket
    /// ([`UnixDiagProbe::sample`]); TCP lookups are hash lookups and ask every time.
    pub fn sample(&mut self) -> io::Result<Option<QueueReading>> {
        match &mut self.inner {
            Inner::Unix(p) => p.sample(),
            _ => self.read().map(Some),
        }
    }

    /// The listener's backlog was set again (`listen()`): the next [`Self::sample`] asks the
    /// kernel instead of repeating the last answer's backlog.
    pub fn forget(&mut self) {
        if let Inner::Unix(p) = &mut self.inner {
            p.forget();
        }
    }

    /// `sock_diag` queries a unix probe has sent (`None` for TCP probes): how often the
    /// sampler really walked the unix sockets.
    pub fn unix_diag_asks(&self) -> Option<u64> {
        match &self.inner {
            Inner::Unix(p) => Some(p.asks()),
            _ => None,
        }
    }
}

/// The socket's own inode, as `sock_diag` reports it (sockfs inodes fit in 32 bits).
pub fn socket_inode(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let stat = nix::sys::stat::fstat(fd.as_raw_fd())?;
    u32::try_from(stat.st_ino).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "socket inode {} does not fit sock_diag's 32 bits",
                stat.st_ino
            ),
        )
    })
}
