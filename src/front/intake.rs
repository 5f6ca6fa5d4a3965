//! What happens to a connection right after `accept()` and after each read, the same whether
//! an executor or the front does it: the queue-wait accounting and `allowed_clients` at
//! accept ([`admit`]), then one look at what the socket has ([`look`]): a complete request
//! to run, a connection to park in the front, or one that is over (logged and counted here).

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering::AcqRel;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::{send, MsgFlags};

use super::conn::{End, FrontConn, Step};
use crate::fastcgi::Request;
use crate::listen::{Peer, Stream};
use crate::overload::monotonic_us;
use crate::worker::PoolContext;

/// Read buffer for one look: holds the largest record twice.
pub const SCRATCH: usize = 128 * 1024;

/// Where a connection goes after a look.
pub enum Look {
    /// Its request is complete: run it.
    Run(FrontConn, Request),
    /// Nothing more to read now: the front holds it until it is readable.
    Park(FrontConn),
    /// Over (closed when dropped here).
    Gone,
}

/// A connection just taken off the queue: when it arrived (DESIGN.md §4: the k-th taken off
/// the queue arrived at the first sample where `arrived ≥ k`), and whether its peer may
/// connect at all. `None`: refused, closed.
pub fn admit(ctx: &PoolContext, stream: Stream, peer: Peer) -> Option<FrontConn> {
    let board = ctx.board();
    let accepted_at = monotonic_us();
    let k = board.accept_seq.fetch_add(1, AcqRel) + 1;
    // Recorded in the histogram with the connection's first request (by the executor that
    // runs it, adding any time the complete request then waited in the front's queue), or
    // here for a connection refused at once.
    let queue_wait_us = board.arrivals.wait_us(k, accepted_at);
    if let Peer::Tcp(addr) = &peer {
        if !ctx.clients.allows(&addr.ip()) {
            ctx.metrics.record_queue_wait(queue_wait_us);
            ctx.metrics.refused_clients.increment(1);
            tracing::warn!(pool = %ctx.config.name, peer = %addr, "connection refused: peer is not in allowed_clients");
            return None;
        }
        // The kernel's own measure of the same wait: one getsockopt per TCP connection.
        if let Ok(ms) = crate::sys::sockopt::tcp_last_data_recv_ms(stream.as_fd()) {
            ctx.metrics
                .queue_wait_tcp_info
                .record(std::time::Duration::from_millis(u64::from(ms)));
        }
    }
    Some(FrontConn::new(
        stream,
        peer,
        &ctx.limits,
        queue_wait_us,
        Instant::now(),
    ))
}

/// Read (when `read`) and feed `conn`, send the replies the protocol owes, and say where it
/// goes. `replies` is left empty.
pub fn look(
    ctx: &PoolContext,
    mut conn: FrontConn,
    scratch: &mut [u8],
    replies: &mut Vec<u8>,
    now: Instant,
    read: bool,
) -> Look {
    let step = conn.step(scratch, replies, now, read);
    if !replies.is_empty() {
        let sent = send_all_now(&conn.stream, replies);
        replies.clear();
        if let (Err(e), Step::Wait | Step::Complete(_)) = (sent, &step) {
            tracing::debug!(pool = %ctx.config.name, peer = ?conn.peer, error = %e, "connection ended: cannot send a protocol reply");
            return Look::Gone;
        }
    }
    match step {
        Step::Complete(request) => Look::Run(conn, request),
        Step::Wait => Look::Park(conn),
        Step::Close(end) => {
            log_end(ctx, &conn, end);
            Look::Gone
        }
    }
}

fn log_end(ctx: &PoolContext, conn: &FrontConn, end: End) {
    let pool = &ctx.config.name;
    match end {
        End::PeerClosed | End::Done => {}
        End::Io(e) => {
            // Resets and the like end one connection; they are the client's business.
            tracing::debug!(pool = %pool, peer = ?conn.peer, error = %e, "connection ended");
        }
        End::Protocol(e) => {
            ctx.metrics.protocol_errors.increment(1);
            tracing::warn!(pool = %pool, peer = ?conn.peer, error = %e, "closed connection");
        }
        End::Limit(e) => {
            ctx.metrics.protocol_errors.increment(1);
            tracing::warn!(pool = %pool, peer = ?conn.peer, error = %e, "closed connection");
        }
    }
}

/// Send `bytes` without blocking (protocol replies are small and the socket's buffer empty);
/// a reply that does not fit ends the connection rather than stall the caller.
fn send_all_now(stream: &Stream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match send(
            stream.as_fd().as_raw_fd(),
            bytes,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
