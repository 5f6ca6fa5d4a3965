//! A `NETLINK_SOCK_DIAG` socket kept open for repeated queries (the sampler asks every few
//! milliseconds; opening a socket each time would cost more than the query).
//!
//! One request at a time: each carries a fresh sequence number, and replies with another
//! number (left over from a query that timed out) are skipped.

use std::io;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

/// Replies to a diag query are produced synchronously by the kernel; a reply that takes this
/// long means something is badly wrong, and the sampler must not hang on it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// Large enough for one datagram of a dump (the kernel fills dump datagrams up to 32 KiB).
const RECEIVE_BUFFER: usize = 64 * 1024;

/// Whether a query names one socket or asks for every socket matching a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryKind {
    /// The kernel looks the socket up itself and answers with one message (or an error).
    Exact,
    /// The kernel answers with many messages, then `NLMSG_DONE`.
    Dump,
}

pub struct DiagSocket {
    socket: Socket,
    sequence: u32,
    /// Reused for every reply.
    buffer: Vec<u8>,
}

impl DiagSocket {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let timeout = TimeVal::new(
            REPLY_TIMEOUT.as_secs() as _,
            REPLY_TIMEOUT.subsec_micros() as _,
        );
        setsockopt(&socket, sockopt::ReceiveTimeout, &timeout)?;
        Ok(Self {
            socket,
            sequence: 0,
            buffer: vec![0; RECEIVE_BUFFER],
        })
    }

    /// Send `request` and hand every answer to `on_answer`. For an exact query this returns
    /// after the first answer; for a dump after `NLMSG_DONE`. A kernel error (`ENOENT`: no
    /// such socket) comes back as the matching `io::Error`.
    pub fn query(
        &mut self,
        request: SockDiagMessage,
        kind: QueryKind,
        mut on_answer: impl FnMut(SockDiagMessage),
    ) -> io::Result<()> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = match kind {
            QueryKind::Exact => NLM_F_REQUEST,
            QueryKind::Dump => NLM_F_REQUEST | NLM_F_DUMP,
        };
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, request.into());
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;

        loop {
            let mut window = &mut self.buffer[..];
            let size = self.socket.recv(&mut window, 0)?;
            if size > self.buffer.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "sock_diag reply larger than the receive buffer",
                ));
            }
            let mut offset = 0;
            while offset < size {
                let message =
                    NetlinkMessage::<SockDiagMessage>::deserialize(&self.buffer[offset..size])
                        .map_err(|e| {
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("bad sock_diag reply: {e}"),
                            )
                        })?;
                let length = message.header.length as usize;
                if length == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "sock_diag reply with length 0",
                    ));
                }
                offset += nlmsg_align(length);
                if message.header.sequence_number != self.sequence {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::InnerMessage(answer) => {
                        on_answer(answer);
                        if kind == QueryKind::Exact {
                            return Ok(());
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(error) => {
                        if error.code.is_some() {
                            return Err(error.to_io());
                        }
                        // An acknowledgement (code 0): the answer, if any, came before it.
                        return Ok(());
                    }
                    NetlinkPayload::Noop => {}
                    NetlinkPayload::Overrun(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "sock_diag overrun",
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Netlink messages start on 4-byte boundaries.
fn nlmsg_align(length: usize) -> usize {
    (length + 3) & !3
}
