//! Passing an idle kept connection on to another worker of the pool, through the master
//! (`hold::wire::ToMaster::Pass` on the pool's holder link): what a retiring worker does with
//! the kept connections it holds, instead of closing them. nginx may be sending its next request
//! on such a connection at this very moment; closed, that request gets a reset, and a POST is
//! not retried (a 502). Passed on, the bytes wait in the socket for the next worker.

use std::os::fd::AsFd;
use std::time::Duration;

use super::conn::FrontConn;
use crate::hold::wire::{encode_to_master, ToMaster};
use crate::sys::fdpass::send_with_fd;
use crate::worker::PoolContext;

/// How long to wait for room in the master's queue before giving up (and closing).
const PATIENCE: Duration = Duration::from_millis(200);

/// Hand `conn` to the master for another worker. Whether it went; when not, the caller closes
/// it (no holder link: a bare worker without a master).
pub fn pass_on(ctx: &PoolContext, conn: &mut FrontConn) -> bool {
    let Some(link) = &ctx.hold_link else {
        return false;
    };
    let mut bytes = Vec::new();
    encode_to_master(
        &ToMaster::Pass {
            pending: conn.take_pending(),
        },
        &mut bytes,
    );
    match send_with_fd(link.as_fd(), &bytes, conn.stream.as_fd(), PATIENCE) {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(pool = %ctx.config.name, %error, "cannot pass a kept connection on; closed");
            false
        }
    }
}
