//! Binding a pool's listening socket: `unix:PATH`, `IP:PORT`, `[IPV6]:PORT`, with the backlog
//! passed to `listen()` exactly as configured (the kernel clamps it to somaxconn; see
//! `somaxconn.rs` for the warning), and the accepted connections that come out of it.
//!
//! Sockets are close-on-exec (a worker process receives the one it needs explicitly) and
//! blocking (worker threads block in `accept()`; async workers switch to non-blocking).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::sys::socket::{
    bind as sys_bind, getsockname, getsockopt, setsockopt, socket, sockopt, AddressFamily,
    SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrLike, SockaddrStorage, UnixAddr,
};

use super::stream::{Peer, Stream};
use super::unix_path::{apply_permissions, clear_for_bind};
use super::{ListenAddress, ListenError};
use crate::sys::sockopt::listen;

/// How to set up a listening socket (the `[pool.NAME.listen]` keys other than the address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindOptions {
    /// Passed to `listen()` as given; the kernel clamps it to `net.core.somaxconn`.
    pub backlog: u32,
    /// Unix socket permissions (nginx must be able to connect); ignored for TCP.
    pub mode: u32,
    /// Unix socket owner (user name or numeric uid); `None` or empty = leave as created.
    pub owner: Option<String>,
    /// Unix socket group (group name or numeric gid); `None` or empty = leave as created.
    pub group: Option<String>,
}

impl Default for BindOptions {
    /// The classic backlog 511 and mode 0660 (DESIGN.md §3).
    fn default() -> Self {
        Self {
            backlog: 511,
            mode: 0o660,
            owner: None,
            group: None,
        }
    }
}

/// A pool's listening socket.
#[derive(Debug)]
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Bind `address` and start listening with `options.backlog`.
pub fn bind(address: &ListenAddress, options: &BindOptions) -> Result<Listener, ListenError> {
    match address {
        ListenAddress::Unix(path) => bind_unix(address, path, options),
        ListenAddress::Tcp(addr) => bind_tcp(address, *addr, options.backlog),
        // The socket unit owns backlog, mode and owner of a passed socket (see systemd.rs).
        ListenAddress::Systemd(name) => {
            super::systemd::take_listener(name).map_err(|e| ListenError::Bind {
                address: address.clone(),
                cause: io::Error::new(io::ErrorKind::NotFound, e),
            })
        }
    }
}

/// Call `listen()` again on a listening socket: the kernel replaces its backlog (used when a
/// reload changes `backlog`; the socket and its queued connections stay).
pub fn relisten(listener: &Listener, backlog: u32) -> io::Result<()> {
    listen(listener.as_fd(), backlog)
}

fn bind_unix(
    address: &ListenAddress,
    path: &Path,
    options: &BindOptions,
) -> Result<Listener, ListenError> {
    clear_for_bind(address, path)?;
    let sockaddr = UnixAddr::new(path).map_err(|e| bind_error(address, e.into()))?;
    let fd = new_socket(address, AddressFamily::Unix)?;
    sys_bind(fd.as_raw_fd(), &sockaddr).map_err(|e| bind_error(address, e.into()))?;
    // Permissions before listen(): until listen() every connect() is refused, so no client can
    // slip in while the mode is still the umask's.
    let finish = || -> Result<(), ListenError> {
        apply_permissions(
            address,
            path,
            options.mode,
            non_empty(&options.owner),
            non_empty(&options.group),
        )?;
        listen_as_configured(address, fd.as_fd(), options.backlog)
    };
    if let Err(e) = finish() {
        // The file is ours (we just bound it): leave nothing half-configured behind.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(Listener::Unix(UnixListener::from(fd)))
}

fn bind_tcp(
    address: &ListenAddress,
    addr: SocketAddr,
    backlog: u32,
) -> Result<Listener, ListenError> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = new_socket(address, family)?;
    // SO_REUSEADDR: a restarted server can bind while old connections sit in TIME_WAIT.
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| socket_error(address, e.into()))?;
    let bound = match addr {
        SocketAddr::V4(v4) => sys_bind(fd.as_raw_fd(), &SockaddrIn::from(v4)),
        SocketAddr::V6(v6) => {
            // `[::]:9000` means IPv6 only, as written; IPv4 needs its own address.
            setsockopt(&fd, sockopt::Ipv6V6Only, &true)
                .map_err(|e| socket_error(address, e.into()))?;
            sys_bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))
        }
    };
    bound.map_err(|e| bind_error(address, e.into()))?;
    listen_as_configured(address, fd.as_fd(), backlog)?;
    Ok(Listener::Tcp(TcpListener::from(fd)))
}

fn new_socket(address: &ListenAddress, family: AddressFamily) -> Result<OwnedFd, ListenError> {
    socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| socket_error(address, e.into()))
}

fn listen_as_configured(
    address: &ListenAddress,
    fd: BorrowedFd<'_>,
    backlog: u32,
) -> Result<(), ListenError> {
    listen(fd, backlog).map_err(|cause| ListenError::Listen {
        address: address.clone(),
        backlog,
        cause,
    })
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|s| !s.is_empty())
}

fn socket_error(address: &ListenAddress, cause: io::Error) -> ListenError {
    ListenError::Socket {
        address: address.clone(),
        cause,
    }
}

fn bind_error(address: &ListenAddress, cause: io::Error) -> ListenError {
    ListenError::Bind {
        address: address.clone(),
        cause,
    }
}

impl Listener {
    /// Take the next connection off the accept queue (blocks unless non-blocking). TCP
    /// connections get `TCP_NODELAY`: FastCGI records are small and answered at once.
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Self::Unix(l) => {
                let (stream, _) = l.accept()?;
                Ok((Stream::Unix(stream), Peer::Unix))
            }
            Self::Tcp(l) => {
                let (stream, peer) = l.accept()?;
                // A failure here means the connection is already dead; the first read reports
                // that properly, so the accept itself still succeeds.
                let _ = stream.set_nodelay(true);
                Ok((Stream::Tcp(stream), Peer::Tcp(peer)))
            }
        }
    }

    /// A connection of this listener that came back from another process (SCM_RIGHTS): the
    /// same kind of stream `accept` gives, blocking as accepted sockets are.
    pub fn adopt_stream(&self, fd: std::os::fd::OwnedFd) -> io::Result<(Stream, Peer)> {
        match self {
            Self::Unix(_) => {
                let stream = std::os::unix::net::UnixStream::from(fd);
                stream.set_nonblocking(false)?;
                Ok((Stream::Unix(stream), Peer::Unix))
            }
            Self::Tcp(_) => {
                let stream = std::net::TcpStream::from(fd);
                stream.set_nonblocking(false)?;
                let peer = stream.peer_addr()?;
                Ok((Stream::Tcp(stream), Peer::Tcp(peer)))
            }
        }
    }

    /// The address as the kernel holds it (the real port when port 0 was configured).
    pub fn address(&self) -> io::Result<ListenAddress> {
        match self {
            Self::Unix(l) => {
                let addr = l.local_addr()?;
                let path = addr.as_pathname().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "unix listener has no path")
                })?;
                Ok(ListenAddress::Unix(path.to_path_buf()))
            }
            Self::Tcp(l) => Ok(ListenAddress::Tcp(l.local_addr()?)),
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Self::Unix(_))
    }

    /// A second handle on the same socket (e.g. one per worker thread).
    pub fn try_clone(&self) -> io::Result<Listener> {
        Ok(match self {
            Self::Unix(l) => Self::Unix(l.try_clone()?),
            Self::Tcp(l) => Self::Tcp(l.try_clone()?),
        })
    }

    /// Async workers wait with epoll and accept without blocking.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Self::Unix(l) => l.set_nonblocking(nonblocking),
            Self::Tcp(l) => l.set_nonblocking(nonblocking),
        }
    }

    /// Adopt a listening socket inherited as a file descriptor (a re-executed worker or a new
    /// master after a binary upgrade). Refuses a descriptor that is not a listening stream
    /// socket, so a wrong fd number fails loudly instead of blocking forever in accept().
    pub fn from_inherited(fd: OwnedFd) -> io::Result<Listener> {
        let listening = getsockopt(&fd, sockopt::AcceptConn)?;
        let kind = getsockopt(&fd, sockopt::SockType)?;
        if !listening || kind != SockType::Stream {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "descriptor {} is not a listening stream socket",
                    fd.as_raw_fd()
                ),
            ));
        }
        let local: SockaddrStorage = getsockname(fd.as_raw_fd())?;
        match local.family() {
            Some(AddressFamily::Unix) => Ok(Self::Unix(UnixListener::from(fd))),
            Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                Ok(Self::Tcp(TcpListener::from(fd)))
            }
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "descriptor {} has unsupported address family {other:?}",
                    fd.as_raw_fd()
                ),
            )),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Unix(l) => l.as_fd(),
            Self::Tcp(l) => l.as_fd(),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl From<Listener> for OwnedFd {
    fn from(listener: Listener) -> OwnedFd {
        match listener {
            Listener::Unix(l) => l.into(),
            Listener::Tcp(l) => l.into(),
        }
    }
}
