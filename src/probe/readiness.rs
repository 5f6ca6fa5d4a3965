//! Whether a listening socket has a connection waiting, in O(1): an epoll set of its own that
//! watches the listener, asked with a zero timeout.
//!
//! Why: `unix_diag` finds a socket by inode by walking every unix socket of the network
//! namespace (`unix_lookup_by_ino` in `net/unix/diag.c`; the kernel keeps no index by inode,
//! and a dump filtered to listeners walks them all too), so each lookup costs in proportion to
//! the unix sockets that exist — two per held request, plus every other process's. The kernel
//! makes a unix listener readable (`EPOLLIN`) exactly while its queue of pending connections
//! is non-empty (`unix_poll`), so an empty queue can be known without the walk.
//!
//! An epoll registration does not keep the socket open (the kernel drops it when the last
//! descriptor of the socket closes), so a pool's listener closes when the pool drops it, as
//! with the `sock_diag` probes alone; a closed listener then simply never looks readable,
//! which is why the probe still asks `unix_diag` now and then ([`super::unix_diag`]).

use std::io;
use std::os::fd::BorrowedFd;

use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

/// An epoll set watching one listener for waiting connections (level-triggered).
pub struct Readiness {
    epoll: Epoll,
}

impl Readiness {
    /// Watch `listener`. The set is close-on-exec: worker processes must not inherit it.
    pub fn watch(listener: BorrowedFd<'_>) -> io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(listener, EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
        Ok(Self { epoll })
    }

    /// Whether a connection is waiting now: true for `EPOLLIN` and for any other event the
    /// kernel reports on it (an error, a hang-up), so that the caller asks the kernel for the
    /// details. Never blocks.
    pub fn waiting(&self) -> io::Result<bool> {
        let mut events = [EpollEvent::empty()];
        let n = self.epoll.wait(&mut events, PollTimeout::ZERO)?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn readable_exactly_while_a_connection_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let readiness = Readiness::watch(listener.as_fd()).unwrap();
        assert!(!readiness.waiting().unwrap(), "nothing connected yet");
        let first = UnixStream::connect(&path).unwrap();
        let second = UnixStream::connect(&path).unwrap();
        assert!(readiness.waiting().unwrap(), "two waiting");
        let (a, _) = listener.accept().unwrap();
        assert!(readiness.waiting().unwrap(), "one still waiting");
        let (b, _) = listener.accept().unwrap();
        assert!(!readiness.waiting().unwrap(), "queue empty again");
        drop((first, second, a, b));
        assert!(
            !readiness.waiting().unwrap(),
            "closed connections are no new ones"
        );
    }
}
