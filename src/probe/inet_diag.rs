//! The accept queue of a TCP listening socket through `inet_diag` (what `ss -lnt` shows).
//!
//! For a listener the kernel reports `idiag_rqueue` = `sk_ack_backlog` (connections waiting)
//! and `idiag_wqueue` = `sk_max_ack_backlog` (effective backlog); with the `SK_MEMINFO`
//! extension also `SK_MEMINFO_DROPS` = `sk_drops`, which `tcp_listendrop()` raises for every
//! SYN or handshake turned away because the queue was full (and for other failures to create
//! the connection, which are just as much a lost client).
//!
//! Lookup: first an exact query by the listener's local address and port (cheap: one hash
//! lookup in the kernel); the answer is accepted only if its inode is ours. If it is not (e.g.
//! `SO_REUSEPORT` siblings share the address) the probe switches for good to a dump of the
//! listening sockets of the family, matched by inode.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, TCP_LISTEN};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags,
};
use netlink_packet_sock_diag::SockDiagMessage;

use super::diag::{DiagSocket, QueryKind};
use super::QueueReading;

/// `INET_DIAG_NOCOOKIE`: do not check the socket cookie.
const NO_COOKIE: [u8; 8] = [0xff; 8];

pub struct InetDiagProbe {
    socket: DiagSocket,
    /// The listener's local address (port included), for the exact lookup.
    local: SocketAddr,
    /// The listening socket's inode (`fstat(fd).st_ino`): the identity every answer is checked
    /// against.
    inode: u32,
    /// Set once the exact lookup found another socket; from then on every read dumps.
    dump_only: bool,
}

impl InetDiagProbe {
    pub fn new(local: SocketAddr, inode: u32) -> io::Result<Self> {
        Ok(Self {
            socket: DiagSocket::open()?,
            local,
            inode,
            dump_only: false,
        })
    }

    /// Whether the probe fell back to dumping (exposed for tests and logs).
    pub fn dumps(&self) -> bool {
        self.dump_only
    }

    pub fn read(&mut self) -> io::Result<QueueReading> {
        if !self.dump_only {
            match self.read_with(QueryKind::Exact) {
                Ok(Some(reading)) => return Ok(reading),
                // Another socket answered for our address, or the kernel could not find it by
                // address (ENOENT/ESTALE): look for our inode among all listeners instead.
                Ok(None) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESTALE)) => {}
                Err(e) => return Err(e),
            }
            self.dump_only = true;
            tracing::debug!(local = %self.local, inode = self.inode, "inet_diag exact lookup found another socket; dumping listeners from now on");
        }
        self.read_with(QueryKind::Dump)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "inet_diag has no listening socket with inode {} ({})",
                    self.inode, self.local
                ),
            )
        })
    }

    fn read_with(&mut self, kind: QueryKind) -> io::Result<Option<QueueReading>> {
        let request = SockDiagMessage::InetRequest(self.request(kind));
        let inode = self.inode;
        let mut found = None;
        self.socket.query(request, kind, |answer| {
            if let SockDiagMessage::InetResponse(response) = answer {
                if response.header.inode == inode && response.header.state == TCP_LISTEN {
                    found = Some(reading_of(&response));
                }
            }
        })?;
        Ok(found)
    }

    fn request(&self, kind: QueryKind) -> InetRequest {
        let (family, any) = match self.local {
            SocketAddr::V4(_) => (AF_INET, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            SocketAddr::V6(_) => (AF_INET6, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        };
        let (source_address, source_port) = match kind {
            QueryKind::Exact => (self.local.ip(), self.local.port()),
            QueryKind::Dump => (any, 0),
        };
        InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::SKMEMINFO,
            states: StateFlags::LISTEN,
            socket_id: SocketId {
                source_port,
                destination_port: 0,
                source_address,
                destination_address: any,
                interface_id: 0,
                cookie: NO_COOKIE,
            },
        }
    }
}

fn reading_of(response: &InetResponse) -> QueueReading {
    let drops = response.nlas.iter().find_map(|nla| match nla {
        Nla::MemInfo(info) => Some(u64::from(info.drops)),
        _ => None,
    });
    QueueReading {
        queued: response.header.recv_queue,
        backlog: response.header.send_queue,
        drops,
    }
}
