//! The master's holder (DESIGN.md §8): one reader task per pool takes held requests off the
//! pool's SEQPACKET link ([`super::wire`]) and starts one task per held request
//! ([`super::held`]), which answers on the request's own FastCGI connection and then gives a
//! kept connection (FCGI_KEEP_CONN) back to a worker of the pool, or closes it. The holder
//! owns what those tasks share: the broker, the pools' links and counters, and the graceful
//! stop.
//!
//! Counters go to the pool's scoreboard header, where every status reader sees them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::broker::{Broker, BrokerError, Want};
use super::held::{run, Answers, Closer, HeldTask, Live, Reply};
use super::longpoll;
use super::message::{valid_channel, HttpResponse, Publication};
use super::wire::{self, Ask, Back, HoldMsg, ToMaster, MAX_DATAGRAM};
use crate::scoreboard::{PoolBoard, Scoreboard};
use crate::sys::asyncfd;
use crate::sys::fdpass::{recv_with_fd, send_with_fd, Received};

/// How long giving a kept connection back may wait for room on the pool's link.
const GIVE_BACK_PATIENCE: Duration = Duration::from_secs(1);
/// Longest GRIP timeout honoured (a day); longer ones are cut to it.
const MAX_GRIP_TIMEOUT: Duration = Duration::from_secs(86_400);

/// One pool as the holder serves it.
pub struct PoolHold {
    /// The pool's position on the scoreboard (and in `Hub` counts).
    pub index: usize,
    pub name: String,
    /// The master's end of the pool's link.
    pub link: OwnedFd,
    /// Held requests of this pool at once; beyond it a request is answered 503.
    pub max_held: usize,
    /// `longpoll` subscribers wait this long (GRIP holds say their own).
    pub hold_timeout: Duration,
}

pub(super) struct Pool {
    pub(super) index: usize,
    pub(super) name: String,
    link: AsyncFd<OwnedFd>,
    /// `max_held` and `hold_timeout` (ms) as the config says now: a reload changes them
    /// ([`Holder::reconfigure`]) for requests held from then on.
    pub(super) max_held: AtomicUsize,
    hold_timeout_ms: AtomicU64,
    /// Held requests of this pool now (what `max_held` bounds).
    pub(super) held: AtomicUsize,
    /// Where the pool's counters are (its header: [`Pool::board`]).
    scoreboard: Arc<Scoreboard>,
}

impl Pool {
    pub(super) fn board(&self) -> &PoolBoard {
        self.scoreboard.pool(self.index)
    }

    fn hold_timeout(&self) -> Duration {
        Duration::from_millis(self.hold_timeout_ms.load(Relaxed))
    }
}

/// The holder of one master: its broker, its pools, and the stop signal its tasks watch.
pub struct Holder {
    broker: Broker,
    pools: Vec<Arc<Pool>>,
    /// Becomes true on a graceful stop: every held request is answered as on its timeout.
    pub(super) stopping: watch::Sender<bool>,
    /// Held requests (tasks) alive, for the stop to wait on ([`Live`] counts them).
    pub(super) live: AtomicU64,
    /// Where answered connections go to be closed.
    pub(super) closer: Closer,
    /// Messages published through the master's `POST /publish/` (`fastpm publish`, GRIP
    /// publishers): the master's `messages published`. Not a pool's: such a publish names
    /// channels, not a pool, and channels are the instance's — one message may reach requests
    /// held by several pools, or none (kept in the history for resume) — so counting it on
    /// the pools holding its channel would count it several times or not at all. Here, not
    /// on the scoreboard: only the master publishes this way and only its status shows it.
    published: AtomicU64,
}

impl Holder {
    /// Start the holder on the current tokio runtime: one reader task per pool.
    pub fn start(
        broker: Broker,
        scoreboard: Arc<Scoreboard>,
        pools: Vec<PoolHold>,
    ) -> io::Result<Arc<Holder>> {
        let pools = pools
            .into_iter()
            .map(|p| {
                Ok(Arc::new(Pool {
                    index: p.index,
                    name: p.name,
                    link: asyncfd::register(p.link)?,
                    max_held: AtomicUsize::new(p.max_held),
                    hold_timeout_ms: AtomicU64::new(p.hold_timeout.as_millis() as u64),
                    held: AtomicUsize::new(0),
                    scoreboard: Arc::clone(&scoreboard),
                }))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let (stopping, _) = watch::channel(false);
        let holder = Arc::new(Holder {
            broker,
            pools,
            stopping,
            live: AtomicU64::new(0),
            closer: Closer::start(),
            published: AtomicU64::new(0),
        });
        for pool in &holder.pools {
            tokio::spawn(Arc::clone(&holder).read_pool(Arc::clone(pool)));
        }
        tokio::spawn(Arc::clone(&holder).count_channels());
        Ok(holder)
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Count `n` messages the broker took from the master's `POST /publish/`.
    pub fn count_published(&self, n: usize) {
        self.published.fetch_add(n as u64, Relaxed);
    }

    /// Messages published through the master's `POST /publish/` since it started.
    pub fn published(&self) -> u64 {
        self.published.load(Relaxed)
    }

    /// A reload's new `max_held` and `hold_timeout` for pool `index` (for requests held from
    /// now on; what is held keeps its deadline).
    pub fn reconfigure(&self, index: usize, max_held: usize, hold_timeout: Duration) {
        if let Some(pool) = self.pools.iter().find(|p| p.index == index) {
            pool.max_held.store(max_held, Relaxed);
            pool.hold_timeout_ms
                .store(hold_timeout.as_millis() as u64, Relaxed);
        }
    }

    /// Graceful stop: answer everything held with its timeout answer, and wait (at most
    /// `within`) until the answers are written.
    pub async fn stop(&self, within: Duration) {
        let _ = self.stopping.send(true);
        self.broker.hub().wake_all();
        let deadline = tokio::time::Instant::now() + within;
        while self.live.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Held requests alive now (all pools).
    pub fn held(&self) -> u64 {
        self.live.load(Relaxed)
    }

    /// Take datagrams off a pool's link until it closes.
    async fn read_pool(self: Arc<Self>, pool: Arc<Pool>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let mut guard = match pool.link.readable().await {
                Ok(guard) => guard,
                Err(error) => {
                    tracing::error!(pool = %pool.name, %error, "holder: cannot wait on the pool's link");
                    return;
                }
            };
            let received = recv_with_fd(pool.link.get_ref().as_fd(), &mut buf);
            let (n, fd) = match received {
                Ok(Received::Empty) => {
                    guard.clear_ready();
                    continue;
                }
                Ok(Received::Closed) => return,
                Ok(Received::Datagram(n, fd)) => (n, fd),
                Err(error) => {
                    tracing::warn!(pool = %pool.name, %error, "holder: a datagram dropped");
                    continue;
                }
            };
            drop(guard);
            let Some(fd) = fd else {
                tracing::warn!(pool = %pool.name, "holder: a request arrived without its connection (out of descriptors?); dropped");
                continue;
            };
            match wire::decode_to_master(&buf[..n]) {
                Ok(ToMaster::Hold(msg)) => self.take(&pool, fd, msg),
                Ok(ToMaster::Pass { pending }) => {
                    // A retiring worker's idle kept connection: on to another worker.
                    give_back(&pool, fd, pending).await;
                }
                Err(error) => {
                    tracing::warn!(pool = %pool.name, %error, "holder: a malformed datagram from a worker; its connection closed");
                }
            }
        }
    }

    /// Once a second: how many channels each pool's held requests wait on.
    async fn count_channels(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut stopping = self.stopping.subscribe();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopping.changed() => return,
            }
            let counts = self.broker.hub().channels_per_pool();
            for pool in &self.pools {
                let n = counts.get(pool.index).copied().unwrap_or(0);
                pool.board().held_channels.store(n as u64, Relaxed);
            }
        }
    }

    /// A held request arrived with its connection: start its task.
    fn take(self: &Arc<Self>, pool: &Arc<Pool>, fd: OwnedFd, msg: HoldMsg) {
        let holder = Live::new(self);
        if let Err(error) = set_nonblocking(&fd) {
            tracing::debug!(pool = %pool.name, %error, "holder: connection unusable");
            return;
        }
        let conn = match asyncfd::register(fd) {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(pool = %pool.name, %error, "holder: cannot register a held connection; closed");
                return;
            }
        };
        let HoldMsg {
            request_id,
            keep_conn,
            pending,
            ask,
        } = msg;
        let reply = Reply {
            holder,
            pool: Arc::clone(pool),
            conn,
            pending,
            request_id,
            keep_conn,
        };
        match ask {
            Ask::Pub {
                channel,
                content_type,
                body,
            } => {
                tokio::spawn(async move {
                    let answer = reply
                        .holder
                        .publish_one(&reply.pool, channel, content_type, body)
                        .await;
                    run(HeldTask::answer(reply, answer)).await
                });
            }
            Ask::Sub { channel } => {
                let wants = vec![Want {
                    channel: channel.name,
                    after: channel.after,
                }];
                let task = HeldTask::hold(reply, wants, pool.hold_timeout(), Answers::Longpoll);
                tokio::spawn(run(task));
            }
            Ask::Grip {
                channels,
                timeout_ms,
                response,
            } => {
                let wants = channels
                    .into_iter()
                    .map(|c| Want {
                        channel: c.name,
                        after: c.after,
                    })
                    .collect();
                let timeout = Duration::from_millis(u64::from(timeout_ms)).min(MAX_GRIP_TIMEOUT);
                let answers = Answers::Grip {
                    timeout_response: response,
                };
                tokio::spawn(run(HeldTask::hold(reply, wants, timeout, answers)));
            }
        }
    }

    /// `longpoll` `pub`: publish the body, answer with its id and how many were waiting.
    async fn publish_one(
        &self,
        pool: &Pool,
        channel: String,
        content_type: Option<String>,
        body: Vec<u8>,
    ) -> Vec<u8> {
        if !valid_channel(&channel) {
            return longpoll::error_answer(400, "invalid channel name");
        }
        let publication = Publication {
            channel,
            response: HttpResponse::ok(body, content_type.as_deref()),
        };
        match self.broker.publish(vec![publication]).await {
            Ok(published) => {
                let board = pool.board();
                board.messages_published.fetch_add(1, Relaxed);
                match published.first() {
                    Some(p) => longpoll::published_answer(p.id, p.subscribers),
                    None => longpoll::error_answer(500, "the broker published nothing"),
                }
            }
            Err(BrokerError::Unavailable(why)) => {
                tracing::debug!(pool = %pool.name, %why, "publish refused: broker unavailable");
                longpoll::unavailable_answer(1)
            }
            Err(error) => longpoll::error_answer(400, &error.to_string()),
        }
    }
}

/// A kept connection back to a worker of `pool` (any one: the first whose front reads the
/// link). Closed when the link stays full for [`GIVE_BACK_PATIENCE`].
pub(super) async fn give_back(pool: &Pool, fd: OwnedFd, pending: Vec<u8>) {
    let mut bytes = Vec::with_capacity(pending.len() + 8);
    wire::encode_back(&Back { pending }, &mut bytes);
    let deadline = tokio::time::Instant::now() + GIVE_BACK_PATIENCE;
    loop {
        match send_with_fd(
            pool.link.get_ref().as_fd(),
            &bytes,
            fd.as_fd(),
            Duration::ZERO,
        ) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                let wait = tokio::time::timeout_at(deadline, pool.link.writable()).await;
                match wait {
                    Ok(Ok(mut guard)) => guard.clear_ready(),
                    _ => {
                        tracing::debug!(pool = %pool.name, "holder: no worker took a kept connection back; closed");
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::debug!(pool = %pool.name, %error, "holder: cannot give a kept connection back; closed");
                return;
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
