//! The accept queue of a unix listening socket through `unix_diag` (what `ss -lx` shows).
//!
//! The kernel looks the socket up by its inode (an exact query, no dump) and with
//! `UDIAG_SHOW_RQLEN` answers, for a listener, (receive queue length, `sk_max_ack_backlog`) =
//! (connections waiting, effective backlog). Unix sockets count no drops: a client refused
//! because the queue is full gets `EAGAIN` and the kernel records nothing.

use std::io;

use netlink_packet_sock_diag::constants::TCP_LISTEN;
use netlink_packet_sock_diag::unix::{ShowFlags, StateFlags, UnixRequest};
use netlink_packet_sock_diag::SockDiagMessage;

use super::diag::{DiagSocket, QueryKind};
use super::QueueReading;

fn not_found(inode: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("unix_diag knows no socket with inode {inode} in this network namespace (closed?)"),
    )
}

/// "No cookie": the kernel then matches on the inode alone.
const NO_COOKIE: [u8; 8] = [0xff; 8];

pub struct UnixDiagProbe {
    socket: DiagSocket,
    /// The listening socket's inode (`fstat(fd).st_ino`, not the socket file's inode).
    inode: u32,
}

impl UnixDiagProbe {
    pub fn new(inode: u32) -> io::Result<Self> {
        Ok(Self {
            socket: DiagSocket::open()?,
            inode,
        })
    }

    pub fn read(&mut self) -> io::Result<QueueReading> {
        let request = SockDiagMessage::UnixRequest(UnixRequest {
            state_flags: StateFlags::LISTEN,
            inode: self.inode,
            show_flags: ShowFlags::RQLEN,
            cookie: NO_COOKIE,
        });
        let inode = self.inode;
        let mut found: Option<io::Result<QueueReading>> = None;
        self.socket
            .query(request, QueryKind::Exact, |answer| {
                if let SockDiagMessage::UnixResponse(response) = answer {
                    if response.header.inode != inode {
                        return;
                    }
                    found = Some(if response.header.state != TCP_LISTEN {
                        Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("unix socket inode {inode} is not listening"),
                        ))
                    } else {
                        match (
                            response.number_of_pending_connection(),
                            response.max_number_of_pending_connection(),
                        ) {
                            (Some(queued), Some(backlog)) => Ok(QueueReading {
                                queued,
                                backlog,
                                drops: None,
                            }),
                            _ => Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "unix_diag answered without UNIX_DIAG_RQLEN",
                            )),
                        }
                    });
                }
            })
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => not_found(inode),
                _ => e,
            })?;
        found.unwrap_or_else(|| Err(not_found(inode)))
    }
}
