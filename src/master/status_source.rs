//! The status listener's view of the pools: a snapshot of each, read from the scoreboard, with
//! the backlog advice measured from the master's history.

use std::sync::Arc;

use crate::hold::holder::Holder;
use crate::hold::publisher::HoldPublisher;
use crate::status::advice::PoolFacts;
use crate::status::history::History;
use crate::status::http::{Publisher, SnapshotSource};
use crate::status::snapshot::BrokerStatus;
use crate::status::PoolSnapshot;
use crate::worker::PoolContext;

/// Every pool of the master, their recent history, and the holder (held requests' broker,
/// and `POST /publish/`), for the HTTP status listener.
pub struct Pools {
    pub pools: Vec<Arc<PoolContext>>,
    pub history: Arc<History>,
    pub holder: Arc<Holder>,
    /// The config's spelling of the broker (`memory`, `redis://…`).
    pub broker: String,
}

impl SnapshotSource for Pools {
    fn snapshots(&self, full: bool) -> Vec<PoolSnapshot> {
        self.pools
            .iter()
            .map(|ctx| {
                let mut snapshot = PoolSnapshot::collect(
                    &ctx.info,
                    ctx.board(),
                    ctx.scoreboard.slots(ctx.index),
                    full,
                );
                // The history is the master's: only its status carries the backlog advice.
                // The client_timeout in force (a reload may have changed it).
                let client_timeout = ctx.board().client_timeout_or(ctx.config.client_timeout);
                let facts = PoolFacts::of(client_timeout, &snapshot);
                snapshot.backlog_advice = self.history.advise(ctx.index, facts);
                snapshot
            })
            .collect()
    }

    fn history(&self) -> Option<&History> {
        Some(&self.history)
    }

    fn broker(&self) -> Option<BrokerStatus> {
        Some(BrokerStatus {
            broker: self.broker.clone(),
            connected: self.holder.broker().status().connected,
            messages_published: self.holder.published(),
        })
    }

    fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        Some(Arc::new(HoldPublisher(Arc::clone(&self.holder))))
    }
}
