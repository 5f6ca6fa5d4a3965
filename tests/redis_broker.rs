//! The Redis broker against a real `redis-server` (started here on a unix socket in a temporary
//! directory; the test fails when it is not installed): two `Broker::redis` in one runtime are
//! two fastpm instances. A publish on one reaches subscriptions held on the other; a resume on
//! the other instance gets what it missed and counts what history trimmed; Redis going away
//! fails publishes fast and keeps subscriptions held, and its return makes them answerable.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fastpm::hold::broker::{Broker, BrokerError, Published, Subscribed, Want};
use fastpm::hold::channels::Subscription;
use fastpm::hold::message::{HttpResponse, Publication, SharedMessage};
use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use common::redis::RedisServer;

fn publication(channel: &str, body: &[u8]) -> Publication {
    Publication {
        channel: channel.into(),
        response: HttpResponse::ok(body.to_vec(), Some("application/octet-stream")),
    }
}

async fn publish_one(broker: &Broker, channel: &str, body: &[u8]) -> Published {
    let mut out = broker
        .publish(vec![publication(channel, body)])
        .await
        .expect("publish");
    assert_eq!(out.len(), 1);
    out.remove(0)
}

/// Publishes one message expecting `Unavailable`; how long the refusal took.
async fn refused_publish(broker: &Broker, channel: &str) -> Duration {
    let start = Instant::now();
    let failed = broker.publish(vec![publication(channel, b"lost")]).await;
    let took = start.elapsed();
    assert!(
        matches!(failed, Err(BrokerError::Unavailable(_))),
        "{failed:?}"
    );
    took
}

async fn waiting(broker: &Broker, wants: &[Want]) -> Subscription {
    match broker.subscribe(0, wants).await.expect("subscribe") {
        Subscribed::Wait(sub) => sub,
        Subscribed::Now { message, .. } => panic!("expected to wait, got message {}", message.id),
    }
}

async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

async fn connected(broker: &Broker, name: &str) -> Duration {
    until(
        &format!("{name} connected"),
        Duration::from_secs(10),
        || broker.status().connected,
    )
    .await
}

/// Holds `count` subscriptions on `channel`, each in its own task reporting what it got and
/// when.
async fn hold_many(
    broker: &Broker,
    channel: &str,
    count: usize,
) -> mpsc::UnboundedReceiver<(SharedMessage, Instant)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for _ in 0..count {
        let mut sub = waiting(broker, &[Want::new(channel, None)]).await;
        let tx = tx.clone();
        tokio::spawn(async move {
            let m = sub.recv().await;
            let _ = tx.send((m, Instant::now()));
        });
    }
    rx
}

/// Every one of `count` holders answered with message `id`, and when the last one was.
async fn all_answered(
    rx: &mut mpsc::UnboundedReceiver<(SharedMessage, Instant)>,
    count: usize,
    id: u64,
) -> Instant {
    let mut last = None;
    for n in 0..count {
        let (m, at) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {n} of {count} subscriptions answered"))
            .expect("a holder task ended without an answer");
        assert_eq!(m.id, id);
        last = Some(last.map_or(at, |l: Instant| l.max(at)));
    }
    last.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_one_instance_reaches_500_held_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let a = Broker::redis(&redis.url(), 1, 10).unwrap();
    let b = Broker::redis(&redis.url(), 1, 10).unwrap();
    let took = connected(&a, "A").await.max(connected(&b, "B").await);
    println!("redis broker: both instances connected after {took:?}");
    assert_eq!(a.status().kind, "redis");

    let mut held = hold_many(&a, "room", 500).await;
    let mut on_b = waiting(&b, &[Want::new("room", None)]).await;
    assert_eq!(a.hub().waiting(), 500);

    let body: Vec<u8> = (0..=255u8).chain(*b"\0end").collect(); // every byte value
    let start = Instant::now();
    let published = publish_one(&b, "room", &body).await;
    let replied = start.elapsed();
    let last = all_answered(&mut held, 500, published.id).await;
    let all = last.duration_since(start);
    println!(
        "redis broker: publish on B answered in {replied:?}; 500 subscriptions on A all had it \
         after {all:?}"
    );
    assert_eq!(published.id, 1);
    assert_eq!(
        published.subscribers, 2,
        "both instances' pub/sub links received it"
    );
    assert!(
        all < Duration::from_millis(500),
        "500 deliveries took {all:?}"
    );

    // The publisher's own subscriptions are answered through the same pub/sub path.
    let mine = tokio::time::timeout(Duration::from_secs(5), on_b.recv())
        .await
        .expect("B's own subscription answered");
    assert_eq!(mine.response.body, body);
    assert_eq!(
        mine.response.headers,
        vec![("Content-Type".into(), "application/octet-stream".into())]
    );
    until("A's hub empty", Duration::from_secs(1), || {
        a.hub().waiting() == 0
    })
    .await;
    assert_eq!(a.hub().channels(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_the_other_instance_gets_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let a = Broker::redis(&redis.url(), 1, 3).unwrap();
    let b = Broker::redis(&redis.url(), 1, 3).unwrap();
    connected(&a, "A").await;
    connected(&b, "B").await;

    // Ids per channel, from 1, in batch order; every part of the response survives the stream.
    let mut custom = publication("news", b"\xff\x00first");
    custom.response.code = 404;
    custom.response.reason = Some("Not Here".into());
    custom
        .response
        .headers
        .push(("X-Multi".into(), "a: b; c".into()));
    let out = a
        .publish(vec![custom.clone(), publication("other", b"o1")])
        .await
        .unwrap();
    let ids: Vec<(&str, u64)> = out.iter().map(|p| (p.channel.as_str(), p.id)).collect();
    assert_eq!(ids, vec![("news", 1), ("other", 1)]);

    let start = Instant::now();
    let Subscribed::Now { message, lost } =
        b.subscribe(0, &[Want::new("news", Some(0))]).await.unwrap()
    else {
        panic!("message 1 is retained")
    };
    println!(
        "redis broker: resume from history answered in {:?}",
        start.elapsed()
    );
    assert_eq!((message.id, lost), (1, 0));
    assert_eq!(message.response, custom.response);

    // Up to date: wait, and get the next publish from A.
    let mut sub = waiting(
        &b,
        &[Want::new("news", Some(1)), Want::new("quiet", Some(0))],
    )
    .await;
    assert_eq!(publish_one(&a, "news", b"m2").await.id, 2);
    let m2 = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("delivered to B");
    assert_eq!((m2.id, m2.response.body.as_slice()), (2, &b"m2"[..]));
    drop(sub);

    // History 3: after 7 messages, 5..=7 are kept; a client at 2 lost 3 and 4.
    for i in 3..=7 {
        assert_eq!(
            publish_one(&a, "news", format!("m{i}").as_bytes()).await.id,
            i
        );
    }
    for (after, expected) in [
        (2, Some((5, 2))),
        (4, Some((5, 0))),
        (6, Some((7, 0))),
        (7, None),
        (100, None),
    ] {
        let got = match b
            .subscribe(0, &[Want::new("news", Some(after))])
            .await
            .unwrap()
        {
            Subscribed::Now { message, lost } => {
                assert_eq!(
                    message.response.body,
                    format!("m{}", message.id).into_bytes()
                );
                Some((message.id, lost))
            }
            Subscribed::Wait(_) => None,
        };
        assert_eq!(got, expected, "after {after}");
    }
    // Several wants: the first with something retained answers.
    let Subscribed::Now { message, .. } = b
        .subscribe(
            0,
            &[Want::new("news", Some(7)), Want::new("other", Some(0))],
        )
        .await
        .unwrap()
    else {
        panic!("other/1 is retained")
    };
    assert_eq!((message.channel.as_str(), message.id), ("other", 1));
    assert!(matches!(
        a.publish(vec![publication("bad channel", b"")]).await,
        Err(BrokerError::InvalidChannel(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_keeps_requests_held_and_its_return_answers_them() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let url = redis.url();
    let a = Broker::redis(&url, 1, 10).unwrap();
    let b = Broker::redis(&url, 1, 10).unwrap();
    connected(&a, "A").await;
    connected(&b, "B").await;
    let mut held = hold_many(&a, "lobby", 50).await;
    publish_one(&b, "elsewhere", b"before").await;

    redis.kill();
    // Publishing right away, before the link task may have noticed: fails, and fast.
    let first_failure = refused_publish(&b, "lobby").await;
    let noticed = until("A and B see Redis gone", Duration::from_secs(3), || {
        !a.status().connected && !b.status().connected
    })
    .await;
    let later_failure = refused_publish(&b, "lobby").await;
    println!(
        "redis broker: with Redis killed, a publish failed in {first_failure:?} (at once) and \
         {later_failure:?} (once noticed); both instances showed disconnected after {noticed:?}"
    );
    assert!(
        first_failure < Duration::from_millis(1500),
        "{first_failure:?}"
    );
    assert!(
        later_failure < Duration::from_millis(100),
        "{later_failure:?}"
    );

    // Held requests stay held; a resume cannot read history, so it waits too.
    let resumed = waiting(&a, &[Want::new("elsewhere", Some(0))]).await;
    assert_eq!(a.hub().waiting(), 51);
    assert!(
        held.try_recv().is_err(),
        "nothing may answer them while Redis is away"
    );
    drop(resumed);
    tokio::time::sleep(Duration::from_millis(300)).await; // a few reconnect attempts fail

    let redis = RedisServer::start(dir.path());
    let start = Instant::now();
    connected(&a, "A again").await;
    connected(&b, "B again").await;
    let back = start.elapsed();
    // Redis kept nothing (no persistence): ids start again.
    let published = publish_one(&b, "lobby", b"back").await;
    let last = all_answered(&mut held, 50, 1).await;
    println!(
        "redis broker: after the restart both reconnected within {back:?}; the publish reached \
         the 50 still-held subscriptions on A in {:?}",
        last.duration_since(start + back)
    );
    assert_eq!(published.subscribers, 2);
    drop(redis);
}

/// A Redis that stops answering without closing anything (SIGSTOP: a hung server, a lost
/// network) must not hang a publish: it fails within the 1 s command timeout, the link's ping
/// notices, and after SIGCONT the instance connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_fails_publishes_within_a_second() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let a = Broker::redis(&redis.url(), 1, 10).unwrap();
    connected(&a, "A").await;
    let mut held = hold_many(&a, "frozen", 3).await;

    redis.signal(Signal::SIGSTOP);
    let took = refused_publish(&a, "frozen").await;
    assert!(
        took < Duration::from_millis(1500),
        "the publish hung for {took:?}"
    );
    // The failed publish makes the link check itself at once (PING, 1 s timeout).
    let noticed = until(
        "the failed publish's check notices",
        Duration::from_secs(3),
        || !a.status().connected,
    )
    .await;
    println!(
        "redis broker: with Redis frozen, a publish failed after {took:?}; the link was marked \
         down {noticed:?} later"
    );
    assert_eq!(a.hub().waiting(), 3);

    redis.signal(Signal::SIGCONT);
    let back = connected(&a, "A after SIGCONT").await;
    publish_one(&a, "frozen", b"thawed").await;
    all_answered(&mut held, 3, 2).await; // the timed-out publish did happen inside Redis
    println!("redis broker: connected again {back:?} after SIGCONT");
}

/// A clone is the same instance (one hub, one link), and the broker also runs on a
/// current-thread runtime.
#[tokio::test]
async fn clones_share_one_instance() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let a = Broker::redis(&redis.url(), 2, 10).unwrap();
    let a2 = a.clone();
    assert!(Arc::ptr_eq(a.hub(), a2.hub()));
    connected(&a2, "A").await;
    let mut sub = match a.subscribe(1, &[Want::new("c", None)]).await.unwrap() {
        Subscribed::Wait(sub) => sub,
        Subscribed::Now { .. } => panic!("nothing published"),
    };
    assert_eq!(a2.hub().channels_per_pool(), vec![0, 1]);
    publish_one(&a2, "c", b"x").await;
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .unwrap();
    assert_eq!(m.response.body, b"x");
}
