//! The instance's waiting subscribers per channel, and local delivery: a [`Hub`] maps each
//! channel to the held requests waiting on it; [`Hub::deliver`] hands one published message to
//! all of them at once. The brokers ([`super::broker`]) decide ids and history and call
//! `deliver`; the holder awaits [`Subscription::recv`].
//!
//! Cost per held request, since tens of thousands wait at once (DESIGN §8): one
//! [`Subscription`] (a few words, owned by the holder's task), one shared `Slot` (the answer and
//! its waker, ~64 bytes) and one map entry per channel it waits on (~40 bytes). Channel names
//! are stored once per channel (`Arc<str>`), not once per subscriber. The wake-up is an
//! `AtomicWaker` polled through [`Subscription::poll_recv`] rather than a `Notify`: a `Notify`
//! costs its waiter list here and a `Notified` future (~80 bytes) in every waiting task.
//!
//! One mutex guards the whole map. A publish to 10,000 subscribers holds it for one pass over
//! them (setting each answer); the wake-ups happen after it is released.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::message::SharedMessage;

/// Every waiting subscription of this instance, by channel.
pub struct Hub {
    inner: Mutex<Inner>,
}

struct Inner {
    /// Channels with at least one waiter; an entry goes when its last waiter does.
    channels: HashMap<Arc<str>, Channel>,
    /// Gives each subscription its key in the channels' waiter maps.
    next_key: u64,
    /// Subscriptions registered and not answered yet.
    waiting: usize,
    /// Per pool: channels where at least one of its subscriptions waits (status' `channels`).
    /// Grows if a pool index beyond the one given at start shows up, rather than panicking.
    channels_per_pool: Vec<usize>,
}

/// The waiters of one channel.
struct Channel {
    /// Each waiter's answer slot by subscription key, so a dropped subscription leaves in
    /// O(1) per channel.
    waiters: HashMap<u64, Arc<Slot>>,
    /// Per pool, how many of `waiters` belong to it (to keep `channels_per_pool` exact).
    per_pool: Vec<u32>,
}

/// Where a subscription's one answer lands: set once (by the first delivery on any of its
/// channels) under the hub's lock, then the holder's task is woken.
struct Slot {
    message: OnceLock<SharedMessage>,
    /// The waiting task's waker. It registers before it looks at `message`, and delivery sets
    /// `message` before it wakes, so a wake-up is never lost.
    waker: AtomicWaker,
}

/// One held request's registration on its channels. Dropping it (answered, timed out, client
/// gone) removes it from every channel at once.
pub struct Subscription {
    hub: Arc<Hub>,
    key: u64,
    pool: usize,
    /// The channels it waits on, deduplicated; the `Arc`s are the hub's own names.
    channels: Box<[Arc<str>]>,
    slot: Arc<Slot>,
}

impl Hub {
    /// A hub for `pools` pools (indices `0..pools`; a larger index is accepted too).
    pub fn new(pools: usize) -> Arc<Hub> {
        Arc::new(Hub {
            inner: Mutex::new(Inner {
                channels: HashMap::new(),
                next_key: 0,
                waiting: 0,
                channels_per_pool: vec![0; pools],
            }),
        })
    }

    /// The map, even if a thread panicked while holding it: every update below leaves it
    /// consistent before anything that could panic, and status must keep working.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Register one held request (of pool `pool`) on these channels; it gets the first message
    /// delivered on any of them, once. A channel named twice counts once.
    pub fn subscribe(self: &Arc<Self>, pool: usize, channels: &[String]) -> Subscription {
        let slot = Arc::new(Slot {
            message: OnceLock::new(),
            waker: AtomicWaker::new(),
        });
        let mut guard = self.lock();
        let inner = &mut *guard;
        let key = inner.next_key;
        inner.next_key += 1;
        inner.waiting += 1;
        if inner.channels_per_pool.len() <= pool {
            inner.channels_per_pool.resize(pool + 1, 0);
        }
        let mut names: Vec<Arc<str>> = Vec::with_capacity(channels.len());
        for name in channels {
            if names.iter().any(|n| **n == **name) {
                continue;
            }
            let name: Arc<str> = match inner.channels.get_key_value(name.as_str()) {
                Some((existing, _)) => existing.clone(),
                None => {
                    let name: Arc<str> = Arc::from(name.as_str());
                    inner.channels.insert(
                        name.clone(),
                        Channel {
                            waiters: HashMap::new(),
                            per_pool: Vec::new(),
                        },
                    );
                    name
                }
            };
            let channel = inner.channels.get_mut(&name).expect("inserted above");
            channel.waiters.insert(key, slot.clone());
            if channel.per_pool.len() <= pool {
                channel.per_pool.resize(pool + 1, 0);
            }
            channel.per_pool[pool] += 1;
            if channel.per_pool[pool] == 1 {
                inner.channels_per_pool[pool] += 1;
            }
            names.push(name);
        }
        drop(guard);
        Subscription {
            hub: self.clone(),
            key,
            pool,
            channels: names.into_boxed_slice(),
            slot,
        }
    }

    /// Give `m` to every subscription waiting on `m.channel` (each one answered once: one
    /// already answered on another of its channels is passed over); returns how many were
    /// answered. Every waiter leaves the channel either way.
    pub fn deliver(&self, m: SharedMessage) -> usize {
        let mut answered: Vec<Arc<Slot>> = Vec::new();
        {
            let mut guard = self.lock();
            let Inner {
                channels,
                waiting,
                channels_per_pool,
                ..
            } = &mut *guard;
            let Some(channel) = channels.remove(&*m.channel) else {
                return 0;
            };
            for (pool, count) in channel.per_pool.iter().enumerate() {
                if *count > 0 {
                    channels_per_pool[pool] -= 1;
                }
            }
            answered.reserve(channel.waiters.len());
            for (_, slot) in channel.waiters {
                if slot.message.set(m.clone()).is_ok() {
                    *waiting -= 1;
                    answered.push(slot);
                }
            }
        }
        for slot in &answered {
            slot.waker.wake();
        }
        answered.len()
    }

    /// Wake every waiting subscription's task without answering it (the holder's graceful
    /// stop: each task then sees the stop and answers as on its timeout).
    pub fn wake_all(&self) {
        let slots: Vec<Arc<Slot>> = {
            let inner = self.lock();
            inner
                .channels
                .values()
                .flat_map(|c| c.waiters.values().cloned())
                .collect()
        };
        for slot in slots {
            slot.waker.wake();
        }
    }

    /// Subscriptions registered and not answered yet.
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// Channels with at least one waiting subscription.
    pub fn channels(&self) -> usize {
        self.lock().channels.len()
    }

    /// Per pool index: channels with at least one subscription of that pool.
    pub fn channels_per_pool(&self) -> Vec<usize> {
        self.lock().channels_per_pool.clone()
    }
}

impl Subscription {
    /// The message that answers this subscription. Cancel-safe (for `select!` with a timeout
    /// and the client's hang-up): the answer stays in the subscription, so a later call returns
    /// it at once, as does every call after the first answer.
    pub async fn recv(&mut self) -> SharedMessage {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Self::recv`] for a hand-written future: ready with the answer, or pending with `cx`'s
    /// waker registered (replacing any earlier one), woken by the delivery or [`Hub::wake_all`].
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<SharedMessage> {
        if let Some(m) = self.slot.message.get() {
            return Poll::Ready(m.clone());
        }
        self.slot.waker.register(cx.waker());
        match self.slot.message.get() {
            Some(m) => Poll::Ready(m.clone()),
            None => Poll::Pending,
        }
    }

    /// The pool index it was registered for.
    pub fn pool(&self) -> usize {
        self.pool
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut guard = self.hub.lock();
        let inner = &mut *guard;
        for name in self.channels.iter() {
            let Some(channel) = inner.channels.get_mut(name) else {
                continue; // a delivery on it took every waiter already
            };
            if channel.waiters.remove(&self.key).is_some() {
                channel.per_pool[self.pool] -= 1;
                if channel.per_pool[self.pool] == 0 {
                    inner.channels_per_pool[self.pool] -= 1;
                }
            }
            if channel.waiters.is_empty() {
                inner.channels.remove(name);
            }
        }
        if self.slot.message.get().is_none() {
            inner.waiting -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hold::message::{HttpResponse, Message};
    use std::time::Duration;

    fn msg(channel: &str, id: u64) -> SharedMessage {
        Arc::new(Message {
            channel: channel.into(),
            id,
            response: HttpResponse::ok(format!("m{id}").into_bytes(), None),
        })
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_multi_channel_subscription_is_answered_once() {
        let hub = Hub::new(2);
        let mut sub = hub.subscribe(1, &names(&["a", "b", "a"]));
        assert_eq!(hub.channels_per_pool(), vec![0, 2]);
        assert_eq!(hub.waiting(), 1);
        assert_eq!(hub.deliver(msg("b", 7)), 1);
        assert_eq!(hub.waiting(), 0);
        // Still listed on "a" until dropped, but a second message does not answer it again.
        assert_eq!(hub.deliver(msg("a", 1)), 0);
        let got = sub.recv().await;
        assert_eq!((got.channel.as_str(), got.id), ("b", 7));
        // recv after the answer gives the same answer (cancel-safe, idempotent).
        assert_eq!(sub.recv().await.id, 7);
        drop(sub);
        assert_eq!(hub.channels(), 0);
        assert_eq!(hub.channels_per_pool(), vec![0, 0]);
    }

    #[tokio::test]
    async fn dropping_removes_from_every_channel() {
        let hub = Hub::new(1);
        let keep = hub.subscribe(0, &names(&["a"]));
        let gone = hub.subscribe(0, &names(&["a", "b", "c"]));
        assert_eq!((hub.waiting(), hub.channels()), (2, 3));
        drop(gone);
        assert_eq!((hub.waiting(), hub.channels()), (1, 1));
        assert_eq!(hub.channels_per_pool(), vec![1]);
        assert_eq!(hub.deliver(msg("b", 1)), 0);
        drop(keep);
        assert_eq!((hub.waiting(), hub.channels()), (0, 0));
        assert_eq!(hub.channels_per_pool(), vec![0]);
    }

    #[tokio::test]
    async fn a_pool_index_beyond_the_start_count_is_counted_not_a_panic() {
        let hub = Hub::new(1);
        let sub = hub.subscribe(3, &names(&["x"]));
        assert_eq!(hub.channels_per_pool(), vec![0, 0, 0, 1]);
        drop(sub);
        assert_eq!(hub.channels_per_pool(), vec![0, 0, 0, 0]);
    }

    #[test]
    fn wake_all_wakes_a_waiting_task_without_answering_it() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        use std::task::{Wake, Waker};
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, SeqCst);
            }
        }
        let hub = Hub::new(1);
        let sub = hub.subscribe(0, &names(&["a"]));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(sub.poll_recv(&mut cx).is_pending());
        hub.wake_all();
        assert_eq!(count.0.load(SeqCst), 1);
        assert!(sub.poll_recv(&mut cx).is_pending(), "woken, not answered");
        assert_eq!(hub.waiting(), 1);
        assert_eq!(hub.deliver(msg("a", 4)), 1);
        assert_eq!(count.0.load(SeqCst), 2);
        match sub.poll_recv(&mut cx) {
            Poll::Ready(m) => assert_eq!(m.id, 4),
            Poll::Pending => panic!("delivered but pending"),
        }
    }

    #[tokio::test]
    async fn recv_waits_for_a_later_delivery_and_survives_cancellation() {
        let hub = Hub::new(1);
        let mut sub = hub.subscribe(0, &names(&["a"]));
        // Cancelled recv (timeout) before anything is delivered.
        assert!(tokio::time::timeout(Duration::from_millis(20), sub.recv())
            .await
            .is_err());
        let publisher = {
            let hub = hub.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                hub.deliver(msg("a", 3))
            })
        };
        let got = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("delivered");
        assert_eq!(got.id, 3);
        assert_eq!(publisher.await.unwrap(), 1);
    }
}
