//! Passing a connection's descriptor between processes (SCM_RIGHTS) on a pool's
//! `SOCK_SEQPACKET` pair (DESIGN.md §8: a held request goes to the master's holder, a kept one
//! comes back to a worker). Datagrams keep message boundaries; one descriptor per datagram —
//! or, for the php parent of an embedded-PHP pool, the few a new worker is started with.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::cmsg_space;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

/// A pool's pair: `(master's end, workers' end)`, both non-blocking and close-on-exec (the
/// workers' end is passed to worker processes explicitly). The workers' end may send datagrams
/// of `max_datagram` bytes: as root the send buffer is forced that large (SO_SNDBUFFORCE);
/// otherwise it is what `net.core.wmem_max` allows, and bigger publishes are refused by the
/// worker with a clear answer.
pub fn seqpacket_pair(max_datagram: usize) -> io::Result<(OwnedFd, OwnedFd)> {
    let (master, workers) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )?;
    // The kernel doubles the value; ask for the datagram plus headroom.
    let want = max_datagram + 64 * 1024;
    if setsockopt(&workers, sockopt::SndBufForce, &want).is_err() {
        let _ = setsockopt(&workers, sockopt::SndBuf, &want);
    }
    let _ = setsockopt(&master, sockopt::SndBuf, &(256 * 1024));
    Ok((master, workers))
}

/// Send `bytes` with `fd` attached. The socket is non-blocking and shared: when the peer's
/// queue is full, wait for room up to `patience` (then `TimedOut`).
pub fn send_with_fd(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: BorrowedFd<'_>,
    patience: Duration,
) -> io::Result<()> {
    send_with_fds(sock, bytes, &[fd.as_raw_fd()], patience)
}

/// [`send_with_fd`] with several descriptors (at most [`MAX_FDS`]; open ones: the kernel
/// refuses the datagram otherwise), or none.
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[RawFd],
    patience: Duration,
) -> io::Result<()> {
    assert!(
        fds.len() <= MAX_FDS,
        "at most {MAX_FDS} descriptors a datagram"
    );
    let deadline = Instant::now() + patience;
    loop {
        let iov = [IoSlice::new(bytes)];
        let rights = [ControlMessage::ScmRights(fds)];
        // No control message at all when there is nothing to pass.
        let cmsg: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &iov,
            cmsg,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                let mut fds = [PollFd::new(sock, PollFlags::POLLOUT)];
                let wait = PollTimeout::try_from(left.min(Duration::from_millis(100)))
                    .unwrap_or(PollTimeout::ZERO);
                let _ = poll(&mut fds, wait);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What one [`recv_with_fd`] got (`F`: its descriptor, if any), or one [`recv_with_fds`]
/// ([`ReceivedMany`]: every descriptor that came along).
pub enum Received<F = Option<OwnedFd>> {
    /// A datagram of this many bytes, with its descriptor when one came along (none when this
    /// process was out of descriptors: the kernel drops it and says MSG_CTRUNC).
    Datagram(usize, F),
    /// Nothing queued now.
    Empty,
    /// The other end is closed.
    Closed,
}

/// Take one datagram without blocking. A datagram longer than `buf` is an error
/// (`InvalidData`): the sender broke the size contract.
pub fn recv_with_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    Ok(match recv_with_fds(sock, buf)? {
        // One descriptor per datagram: others are closed (dropped) here.
        ReceivedMany::Datagram(n, fds) => Received::Datagram(n, fds.into_iter().next()),
        ReceivedMany::Empty => Received::Empty,
        ReceivedMany::Closed => Received::Closed,
    })
}

/// The most descriptors one datagram carries ([`send_with_fds`]).
pub const MAX_FDS: usize = 8;

/// What one [`recv_with_fds`] got.
pub type ReceivedMany = Received<Vec<OwnedFd>>;

/// [`recv_with_fd`] keeping every descriptor (in the order sent).
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<ReceivedMany> {
    loop {
        let mut space = cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(buf)];
        let result = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let msg = match result {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(ReceivedMany::Empty),
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    for r in raw {
                        // SAFETY: SCM_RIGHTS installed `r` in this process's table just now
                        // and nothing else refers to it: we are its only owner.
                        fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                    }
                }
            }
        }
        let (bytes, truncated) = (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC));
        if bytes == 0 && fds.is_empty() {
            return Ok(ReceivedMany::Closed);
        }
        if truncated {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a datagram longer than the receive buffer",
            ));
        }
        return Ok(ReceivedMany::Datagram(bytes, fds));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_descriptor_travels_with_its_datagram() {
        let (master, workers) = seqpacket_pair(1 << 20).unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        send_with_fd(workers.as_fd(), b"hello", b.as_fd(), Duration::from_secs(1)).unwrap();
        drop(b);
        let mut buf = vec![0; 64];
        let Received::Datagram(n, Some(fd)) = recv_with_fd(master.as_fd(), &mut buf).unwrap()
        else {
            panic!("no datagram with a descriptor");
        };
        assert_eq!(&buf[..n], b"hello");
        let mut b = UnixStream::from(fd);
        b.write_all(b"through").unwrap();
        let mut got = [0u8; 7];
        a.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"through");
        assert!(matches!(
            recv_with_fd(master.as_fd(), &mut buf).unwrap(),
            Received::Empty
        ));
        drop(workers);
        assert!(matches!(
            recv_with_fd(master.as_fd(), &mut buf).unwrap(),
            Received::Closed
        ));
    }

    #[test]
    fn a_megabyte_datagram_fits_as_root() {
        // The size is forced only as root (fastpm's ordinary deployment, and the test suite's).
        let (master, workers) = seqpacket_pair(1 << 20).unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        let big = vec![7u8; 1 << 20];
        send_with_fd(workers.as_fd(), &big, b.as_fd(), Duration::from_secs(1)).unwrap();
        let mut buf = vec![0; (1 << 20) + 1];
        let Received::Datagram(n, Some(_)) = recv_with_fd(master.as_fd(), &mut buf).unwrap() else {
            panic!("no datagram");
        };
        assert_eq!(n, 1 << 20);
    }
}
