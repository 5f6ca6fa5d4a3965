//! The `memory` broker (one fastpm instance): per channel a counter for ids and a ring of the
//! last `history` messages, behind one lock that publish and subscribe both take, so the
//! history check and the hub registration of a subscribe are one step a publish cannot fall
//! between, and deliveries on a channel happen in id order.
//!
//! What bounds memory: the hub holds only channels with waiters; this map holds only channels
//! with retained messages, at most `history` each (each body ≤ [`MAX_BODY`]). A channel that
//! was published once keeps its last messages until fastpm stops: there is no expiry yet, so
//! the bound is (channels ever published) × `history` × message size. With `history = 0` no
//! entry outlives its publish, so a channel's ids start again at 1 on each publish.
//!
//! [`MAX_BODY`]: super::message::MAX_BODY

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::broker::{channel_names, lost_between, Published, Subscribed, Want};
use super::channels::Hub;
use super::message::{Message, Publication, SharedMessage};

pub(crate) struct Memory {
    hub: Arc<Hub>,
    history: usize,
    channels: Mutex<HashMap<String, History>>,
}

/// One channel's ids and retained messages.
#[derive(Default)]
struct History {
    /// The last id given (ids start at 1).
    last_id: u64,
    /// The last `history` messages, oldest first, ids consecutive.
    ring: VecDeque<SharedMessage>,
}

impl History {
    /// The first retained message with id > `after`, and how many ids before it are gone.
    fn next_after(&self, after: u64) -> Option<(SharedMessage, u64)> {
        let first = self.ring.front()?.id;
        let next = after.checked_add(1)?.max(first);
        let m = self.ring.get(usize::try_from(next - first).ok()?)?;
        Some((m.clone(), lost_between(after, m.id)))
    }
}

impl Memory {
    pub(crate) fn new(hub: Arc<Hub>, history: usize) -> Memory {
        Memory {
            hub,
            history,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The map even after a panic elsewhere: it is consistent between statements.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, History>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn publish(&self, items: Vec<Publication>) -> Vec<Published> {
        let mut channels = self.lock();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let history = channels.entry(item.channel.clone()).or_default();
            history.last_id += 1;
            let message = Arc::new(Message {
                channel: item.channel,
                id: history.last_id,
                response: item.response,
            });
            if self.history > 0 {
                while history.ring.len() >= self.history {
                    history.ring.pop_front();
                }
                history.ring.push_back(message.clone());
            }
            let subscribers = self.hub.deliver(message.clone());
            if history.ring.is_empty() {
                channels.remove(&message.channel);
            }
            out.push(Published {
                channel: message.channel.clone(),
                id: message.id,
                subscribers,
            });
        }
        out
    }

    pub(crate) fn subscribe(&self, pool: usize, wants: &[Want]) -> Subscribed {
        let channels = self.lock();
        for want in wants {
            let (Some(after), Some(history)) = (want.after, channels.get(&want.channel)) else {
                continue;
            };
            if let Some((message, lost)) = history.next_after(after) {
                return Subscribed::Now { message, lost };
            }
        }
        // Registered while the lock is held: a publish either came before (and was checked
        // above) or comes after and finds this subscription.
        Subscribed::Wait(self.hub.subscribe(pool, &channel_names(wants)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hold::broker::Broker;
    use crate::hold::message::HttpResponse;
    use std::time::{Duration, Instant};

    fn publication(channel: &str, body: &str) -> Publication {
        Publication {
            channel: channel.into(),
            response: HttpResponse::ok(body.as_bytes().to_vec(), Some("text/plain")),
        }
    }

    async fn publish(broker: &Broker, channel: &str, body: &str) -> Published {
        let mut out = broker
            .publish(vec![publication(channel, body)])
            .await
            .unwrap();
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    /// `(body, lost)` when the subscribe answers at once, `None` when it waits.
    async fn resume(broker: &Broker, wants: &[Want]) -> Option<(String, u64)> {
        match broker.subscribe(0, wants).await.unwrap() {
            Subscribed::Now { message, lost } => Some((
                String::from_utf8(message.response.body.clone()).unwrap(),
                lost,
            )),
            Subscribed::Wait(_) => None,
        }
    }

    #[tokio::test]
    async fn ids_count_per_channel_from_one_in_publish_order() {
        let broker = Broker::memory(1, 10);
        let out = broker
            .publish(vec![
                publication("a", "1"),
                publication("b", "1"),
                publication("a", "2"),
            ])
            .await
            .unwrap();
        let ids: Vec<(&str, u64)> = out.iter().map(|p| (p.channel.as_str(), p.id)).collect();
        assert_eq!(ids, vec![("a", 1), ("b", 1), ("a", 2)]);
        assert_eq!(publish(&broker, "a", "3").await.id, 3);
        assert!(matches!(
            broker
                .publish(vec![publication("a", "x"), publication("bad name", "y")])
                .await,
            Err(crate::hold::broker::BrokerError::InvalidChannel(_))
        ));
        assert_eq!(
            publish(&broker, "a", "4").await.id,
            4,
            "the refused batch took no id"
        );
    }

    #[tokio::test]
    async fn resume_gives_the_next_retained_message_and_counts_the_gap() {
        let broker = Broker::memory(1, 3);
        for i in 1..=5 {
            publish(&broker, "c", &format!("m{i}")).await;
        }
        // Ring holds 3, 4, 5. Each case: the client's last id → (body, lost), or wait.
        type Case = (Option<u64>, Option<(&'static str, u64)>);
        let cases: [Case; 8] = [
            (Some(0), Some(("m3", 2))),
            (Some(1), Some(("m3", 1))),
            (Some(2), Some(("m3", 0))),
            (Some(3), Some(("m4", 0))),
            (Some(4), Some(("m5", 0))),
            (Some(5), None),
            (Some(99), None), // newer than the latest: wait
            (None, None),
        ];
        for (after, expected) in cases {
            let got = resume(&broker, &[Want::new("c", after)]).await;
            let expected = expected.map(|(b, l)| (b.to_string(), l));
            assert_eq!(got, expected, "after {after:?}");
        }
        assert_eq!(
            resume(&broker, &[Want::new("nothing-here", Some(0))]).await,
            None
        );
        // Several wants: the first that has something wins.
        publish(&broker, "d", "d1").await;
        let wants = [
            Want::new("c", Some(5)),
            Want::new("d", Some(0)),
            Want::new("c", Some(0)),
        ];
        assert_eq!(resume(&broker, &wants).await, Some(("d1".into(), 0)));
    }

    #[tokio::test]
    async fn history_zero_keeps_nothing_and_answers_waiters() {
        let broker = Broker::memory(1, 0);
        let Subscribed::Wait(mut sub) = broker.subscribe(0, &[Want::new("z", None)]).await.unwrap()
        else {
            panic!("nothing to resume from")
        };
        assert_eq!(publish(&broker, "z", "x").await.subscribers, 1);
        assert_eq!(sub.recv().await.response.body, b"x");
        assert_eq!(resume(&broker, &[Want::new("z", Some(0))]).await, None);
    }

    #[tokio::test]
    async fn a_waiting_subscription_gets_the_publish_and_leaves_no_trace() {
        let broker = Broker::memory(2, 10);
        let Subscribed::Wait(mut sub) = broker
            .subscribe(1, &[Want::new("a", None), Want::new("b", Some(0))])
            .await
            .unwrap()
        else {
            panic!("nothing published yet")
        };
        assert_eq!(broker.hub().waiting(), 1);
        assert_eq!(broker.hub().channels_per_pool(), vec![0, 2]);
        assert_eq!(publish(&broker, "b", "hi").await.subscribers, 1);
        assert_eq!(publish(&broker, "a", "again").await.subscribers, 0);
        assert_eq!(sub.recv().await.response.body, b"hi");
        drop(sub);
        assert_eq!(broker.hub().waiting(), 0);
        assert_eq!(broker.hub().channels(), 0);
        assert_eq!(broker.hub().channels_per_pool(), vec![0, 0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_publish_answers_ten_thousand_subscriptions_once() {
        const N: usize = 10_000;
        let broker = Broker::memory(1, 10);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..N {
            let Subscribed::Wait(mut sub) = broker
                .subscribe(0, &[Want::new("big", None)])
                .await
                .unwrap()
            else {
                panic!("nothing published yet")
            };
            let done = done_tx.clone();
            tokio::spawn(async move {
                let m = sub.recv().await;
                // A second answer would be a different message; there is none to give.
                done.send(m.id).unwrap();
            });
        }
        drop(done_tx);
        assert_eq!(broker.hub().waiting(), N);
        let start = Instant::now();
        let published = publish(&broker, "big", "all").await;
        let delivered = start.elapsed();
        let mut answered = 0;
        while let Some(id) = done_rx.recv().await {
            assert_eq!(id, 1);
            answered += 1;
        }
        let all_woken = start.elapsed();
        println!(
            "memory broker: publish answered {N} subscriptions in {delivered:?}, \
             all {N} tasks had their message after {all_woken:?}"
        );
        assert_eq!(published.subscribers, N);
        assert_eq!(answered, N);
        assert_eq!(broker.hub().waiting(), 0);
        assert_eq!(broker.hub().channels(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publish_racing_a_subscribe_is_never_lost() {
        // Each round: a publisher and a resuming subscriber start together. Whatever the
        // interleaving, the subscriber gets message `round` (from history or delivered).
        let broker = Broker::memory(1, 4);
        let (mut from_history, mut delivered) = (0, 0);
        for round in 1..=2_000u64 {
            let publisher = {
                let broker = broker.clone();
                tokio::spawn(async move {
                    publish(&broker, "race", &round.to_string()).await;
                })
            };
            let got = match broker
                .subscribe(0, &[Want::new("race", Some(round - 1))])
                .await
                .unwrap()
            {
                Subscribed::Now { message, lost } => {
                    assert_eq!(lost, 0);
                    from_history += 1;
                    message
                }
                Subscribed::Wait(mut sub) => {
                    delivered += 1;
                    tokio::time::timeout(Duration::from_secs(5), sub.recv())
                        .await
                        .unwrap_or_else(|_| panic!("round {round}: the publish was lost"))
                }
            };
            assert_eq!(got.id, round);
            publisher.await.unwrap();
        }
        println!("race: {from_history} rounds answered from history, {delivered} by delivery");
        assert_eq!(broker.hub().waiting(), 0);
    }
}
