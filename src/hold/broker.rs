//! The broker: gives each published message its channel's next id, keeps each channel's last
//! `history` messages for resumes, and gets every message to the instances holding its
//! channel. Two kinds behind one handle: [`memory`](super::memory) (one fastpm) and
//! [`redis`](super::redis) (several fastpm sharing ids and history in Redis, DESIGN §8). Both
//! deliver locally through the same [`Hub`].

use std::sync::Arc;

use super::channels::{Hub, Subscription};
use super::memory::Memory;
use super::message::{valid_channel, Publication, SharedMessage};
use super::redis::RedisBroker;

/// One channel a held request waits on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub channel: String,
    /// Resume: the last id the client has; a retained message after it answers at once.
    pub after: Option<u64>,
}

impl Want {
    pub fn new(channel: impl Into<String>, after: Option<u64>) -> Want {
        Want {
            channel: channel.into(),
            after,
        }
    }
}

/// What [`Broker::subscribe`] found.
pub enum Subscribed {
    /// A retained message newer than a want's `after` (the next one after it). `lost`: how
    /// many ids between `after` and it are no longer retained (a gap past the history).
    Now { message: SharedMessage, lost: u64 },
    /// Nothing to answer yet: wait on the subscription.
    Wait(Subscription),
}

/// One publication's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub channel: String,
    /// The id the broker gave it.
    pub id: u64,
    /// Memory: subscriptions answered. Redis: fastpm instances whose pub/sub link received it
    /// (PUBLISH's reply; each delivers to its own waiters, the publisher included). How many
    /// held requests that makes across instances is not known at publish time.
    pub subscribers: usize,
}

/// For status: the broker kind and whether it can publish now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokerStatus {
    /// "memory" or "redis".
    pub kind: &'static str,
    /// Memory: always. Redis: connected and subscribed to the pub/sub channel.
    pub connected: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Redis is down or did not answer in time: a publish answers 503.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The `broker` setting is not `memory`, `redis://HOST:PORT[/DB]` or `unix:PATH`.
    #[error("bad broker address {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// A channel name that [`valid_channel`] refuses (nothing was published).
    #[error("invalid channel name {0:?}")]
    InvalidChannel(String),
    /// [`Broker::redis`] called outside a tokio runtime.
    #[error("the Redis broker needs a tokio runtime")]
    NoRuntime,
}

/// The broker handle: cheap to clone (an `Arc` inside), shared by the holder and publishers.
#[derive(Clone)]
pub struct Broker {
    backend: Arc<Backend>,
    hub: Arc<Hub>,
}

enum Backend {
    Memory(Memory),
    Redis(RedisBroker),
}

impl Broker {
    /// One instance's broker: ids, history and delivery in this process.
    pub fn memory(pools: usize, history: usize) -> Broker {
        let hub = Hub::new(pools);
        Broker {
            backend: Arc::new(Backend::Memory(Memory::new(hub.clone(), history))),
            hub,
        }
    }

    /// Ids and history in Redis at `url` (`redis://HOST:PORT[/DB]` or `unix:PATH`). Call inside
    /// a tokio runtime: spawns the connection task and returns at once (it connects in the
    /// background; [`Broker::status`] says when it is up).
    pub fn redis(url: &str, pools: usize, history: usize) -> Result<Broker, BrokerError> {
        let hub = Hub::new(pools);
        let redis = RedisBroker::start(url, hub.clone(), history)?;
        Ok(Broker {
            backend: Arc::new(Backend::Redis(redis)),
            hub,
        })
    }

    /// Publish every item, in order (each gets its channel's next id). A bad channel name
    /// refuses them all before any is published.
    pub async fn publish(&self, items: Vec<Publication>) -> Result<Vec<Published>, BrokerError> {
        if let Some(bad) = items.iter().find(|p| !valid_channel(&p.channel)) {
            return Err(BrokerError::InvalidChannel(bad.channel.clone()));
        }
        match &*self.backend {
            Backend::Memory(memory) => Ok(memory.publish(items)),
            Backend::Redis(redis) => redis.publish(items).await,
        }
    }

    /// Answer at once from history (the first want with a retained message after its `after`
    /// wins), or register a subscription on every wanted channel. No message published while
    /// this runs is missed.
    pub async fn subscribe(&self, pool: usize, wants: &[Want]) -> Result<Subscribed, BrokerError> {
        if let Some(bad) = wants.iter().find(|w| !valid_channel(&w.channel)) {
            return Err(BrokerError::InvalidChannel(bad.channel.clone()));
        }
        match &*self.backend {
            Backend::Memory(memory) => Ok(memory.subscribe(pool, wants)),
            Backend::Redis(redis) => Ok(redis.subscribe(pool, wants).await),
        }
    }

    pub fn status(&self) -> BrokerStatus {
        match &*self.backend {
            Backend::Memory(_) => BrokerStatus {
                kind: "memory",
                connected: true,
            },
            Backend::Redis(redis) => BrokerStatus {
                kind: "redis",
                connected: redis.connected(),
            },
        }
    }

    /// This instance's waiting subscriptions (for status counts).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

/// Ids a resume skips: the client has `after`, the next retained message is `found` (> after);
/// ids are given without holes, so each id in between was trimmed from the history.
pub(crate) fn lost_between(after: u64, found: u64) -> u64 {
    found.saturating_sub(after).saturating_sub(1)
}

/// Channel names of `wants`, in order (what the hub registers).
pub(crate) fn channel_names(wants: &[Want]) -> Vec<String> {
    wants.iter().map(|w| w.channel.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_counts_the_trimmed_ids_in_between() {
        for (after, found, lost) in [(0, 1, 0), (4, 5, 0), (4, 9, 4), (0, 101, 100), (7, 7, 0)] {
            assert_eq!(
                lost_between(after, found),
                lost,
                "after {after}, found {found}"
            );
        }
    }
}
