//! One look at a listening socket's accept queue, as the kernel reports it.

/// What the kernel holds for a listening socket at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueReading {
    /// Connections waiting to be accepted (`ss` Recv-Q; kernel `sk_ack_backlog` for TCP, the
    /// receive queue length for unix).
    pub queued: u32,
    /// The backlog the kernel enforces (`ss` Send-Q; `sk_max_ack_backlog`): the configured
    /// value after the somaxconn clamp. The queue holds up to `backlog + 1` connections.
    pub backlog: u32,
    /// Connections the kernel turned away at this listener since it was created
    /// (`SK_MEMINFO_DROPS`, TCP only). `None` when the kernel does not count them: unix
    /// sockets (a refused unix connect is not counted anywhere) and the `TCP_INFO` fallback.
    pub drops: Option<u64>,
}

impl QueueReading {
    /// True when the next connection would be refused (unix: `EAGAIN` to a non-blocking
    /// client) or dropped (TCP). See [`queue_is_full`].
    pub fn is_full(&self) -> bool {
        queue_is_full(self.queued, self.backlog)
    }
}

/// The kernel's own rule, the same for TCP and unix stream sockets:
///
/// - TCP, `include/net/sock.h`: `sk_acceptq_is_full(sk)` is
///   `sk_ack_backlog > sk_max_ack_backlog`, checked before a SYN is answered
///   (`tcp_conn_request`) and before a handshake completes (`tcp_v4_syn_recv_sock`);
/// - unix, `net/unix/af_unix.c`: `unix_recvq_full_lockless(sk)` is
///   `skb_queue_len(&sk->sk_receive_queue) > sk_max_ack_backlog`, checked in
///   `unix_stream_connect`.
///
/// Both compare with `>`, so the queue accepts while `queued <= backlog` and the real capacity
/// is `backlog + 1` (the comment above `sk_acceptq_is_full` keeps `>` on purpose so that
/// backlog 0 still admits one connection). The queue is full exactly when `queued > backlog`.
pub fn queue_is_full(queued: u32, backlog: u32) -> bool {
    queued > backlog
}

#[cfg(test)]
mod tests {
    use super::queue_is_full;

    #[test]
    fn full_only_past_the_backlog() {
        let table: &[(u32, u32, bool)] = &[
            (0, 0, false),
            (1, 0, true),
            (0, 10, false),
            (10, 10, false),
            (11, 10, true),
            (12, 10, true),
            (511, 511, false),
            (512, 511, true),
            (4097, 4096, true),
        ];
        for &(queued, backlog, want) in table {
            assert_eq!(
                queue_is_full(queued, backlog),
                want,
                "queued {queued}, backlog {backlog}"
            );
        }
    }
}
