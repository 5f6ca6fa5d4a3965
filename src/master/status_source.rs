//! The status listener's view of the pools: a snapshot of each, read from the scoreboard.

use std::sync::Arc;

use crate::status::history::History;
use crate::status::http::SnapshotSource;
use crate::status::PoolSnapshot;
use crate::worker::PoolContext;

/// Every pool of the master, and their recent history, for the HTTP status listener.
pub struct Pools(pub Vec<Arc<PoolContext>>, pub Arc<History>);

impl SnapshotSource for Pools {
    fn snapshots(&self, full: bool) -> Vec<PoolSnapshot> {
        self.0
            .iter()
            .map(|ctx| {
                PoolSnapshot::collect(
                    &ctx.info,
                    ctx.board(),
                    ctx.scoreboard.slots(ctx.index),
                    full,
                )
            })
            .collect()
    }

    fn history(&self) -> Option<&History> {
        Some(&self.1)
    }
}
