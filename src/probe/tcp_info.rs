//! The accept queue of a TCP listener through `getsockopt(TCP_INFO)`: the fallback when
//! `sock_diag` is unavailable (e.g. a kernel without `inet_diag`). On a listener the kernel
//! fills `tcpi_unacked` with the queue depth and `tcpi_sacked` with the effective backlog. It
//! reports no drops.
//!
//! This probe holds a duplicate of the listening descriptor (it needs one to ask); the
//! `sock_diag` probes hold none, so dropping a pool's listener really closes it.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use super::QueueReading;
use crate::sys::sockopt::tcp_info_accept_queue;

pub struct TcpInfoProbe {
    fd: OwnedFd,
}

impl TcpInfoProbe {
    pub fn new(fd: OwnedFd) -> Self {
        Self { fd }
    }

    pub fn read(&mut self) -> io::Result<QueueReading> {
        let (queued, backlog) = tcp_info_accept_queue(self.fd.as_fd())?;
        Ok(QueueReading {
            queued,
            backlog,
            drops: None,
        })
    }
}
