//! Which php-cgi child serves a worker's connection, in `php_children = "shared"`.
//!
//! There the worker connects to the pool's php-cgi parent's socket and one of its children
//! accepts; nothing in the protocol says which. The worker needs that child's pid to kill it
//! when a request outlives `request_timeout` (killing the process group would kill every child
//! of the pool), to recycle it after `max_requests`, and to keep it on the worker's CPU (see
//! `affinity`). The kernel knows: `sock_diag` with `UDIAG_SHOW_PEER` names the inode of the
//! connection's other end, and the child that accepted it holds a descriptor
//! `socket:[that inode]`. Only the children of the pool's parent (pid from its pid file, see
//! `shared`) are searched, as the kernel lists them (`/proc/PARENT/task/TID/children`): a few
//! `readlink`s, not every process of the machine.
//!
//! The lookup costs a netlink query and those `readlink`s, so it is made once per connection,
//! after its first answer (the child has accepted it by then), or when a request times out
//! before that.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

use netlink_packet_sock_diag::unix::{ShowFlags, StateFlags, UnixRequest};
use netlink_packet_sock_diag::SockDiagMessage;

use crate::probe::diag::{DiagSocket, QueryKind};

/// "No cookie": the kernel then matches on the inode alone.
const NO_COOKIE: [u8; 8] = [0xff; 8];

/// The inode of the other end of the connected unix socket `conn`.
fn peer_inode(conn: BorrowedFd<'_>) -> io::Result<u32> {
    let inode = crate::probe::socket_inode(conn)?;
    let mut diag = DiagSocket::open()?;
    let request = SockDiagMessage::UnixRequest(UnixRequest {
        state_flags: StateFlags::ESTABLISHED,
        inode,
        show_flags: ShowFlags::PEER,
        cookie: NO_COOKIE,
    });
    let mut peer = None;
    diag.query(request, QueryKind::Exact, |answer| {
        if let SockDiagMessage::UnixResponse(response) = answer {
            if response.header.inode == inode {
                // A peer that was closed is reported as inode 0 (an orphaned socket).
                peer = response.peer().filter(|&p| p != 0);
            }
        }
    })?;
    peer.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("unix socket {inode} has no peer (the other end is closed)"),
        )
    })
}

/// Whether a `/proc/PID/fd/N` link target names socket `inode`.
fn is_socket(link: &[u8], inode: u32) -> bool {
    link.strip_prefix(b"socket:[")
        .and_then(|rest| rest.strip_suffix(b"]"))
        .is_some_and(|number| number == inode.to_string().as_bytes())
}

/// The children of `parent`, as the kernel lists them per thread that forked them
/// (`/proc/PARENT/task/TID/children`; a php-cgi parent has one thread).
fn children_of(proc: &Path, parent: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(proc.join(parent.to_string()).join("task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_ascii_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The child of `parent` that holds socket `inode`, searched under `proc` (`/proc`).
fn holder_among_children(proc: &Path, parent: u32, inode: u32) -> Option<u32> {
    use std::os::unix::ffi::OsStrExt;
    children_of(proc, parent).into_iter().find(|pid| {
        std::fs::read_dir(proc.join(pid.to_string()).join("fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| is_socket(target.as_os_str().as_bytes(), inode))
            })
        })
    })
}

/// The pid of the child of `parent` serving `conn`.
pub fn serving_child(conn: BorrowedFd<'_>, parent: u32) -> io::Result<u32> {
    let peer = peer_inode(conn)?;
    holder_among_children(Path::new("/proc"), parent, peer).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no child of php-cgi {parent} holds socket {peer}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::process::{Command, Stdio};

    #[test]
    fn socket_link_table() {
        let cases: [(&[u8], u32, bool); 6] = [
            (b"socket:[4242]", 4242, true),
            (b"socket:[4242]", 424, false),
            (b"socket:[42420]", 4242, false),
            (b"pipe:[4242]", 4242, false),
            (b"socket:[4242", 4242, false),
            (b"/tmp/socket:[4242]", 4242, false),
        ];
        for (link, inode, want) in cases {
            assert_eq!(
                is_socket(link, inode),
                want,
                "{}",
                String::from_utf8_lossy(link)
            );
        }
    }

    /// A real child holding the other end of a socket pair is found, and only among the
    /// children of the right parent.
    #[test]
    fn the_child_holding_the_peer_is_found() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut child = Command::new("sleep")
            .arg("10")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .spawn()
            .unwrap();
        let found = serving_child(ours.as_fd(), std::process::id());
        let elsewhere = serving_child(ours.as_fd(), child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.unwrap(), child.id());
        assert!(elsewhere.is_err(), "{elsewhere:?}");
    }

    #[test]
    fn a_closed_peer_is_an_error() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        assert!(peer_inode(ours.as_fd()).is_err());
    }
}
