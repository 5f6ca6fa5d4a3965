//! The master's holder (DESIGN.md §8): one reader task per pool takes held requests off the
//! pool's SEQPACKET link ([`super::wire`]), and one small task per held request waits for the
//! first of: a message on its channel(s), its timeout, its client leaving, or the master's
//! graceful stop. It answers on the request's own FastCGI connection (STDOUT + END_REQUEST with
//! the request's id) and then gives a kept connection (FCGI_KEEP_CONN) back to a worker of the
//! pool, or closes it.
//!
//! Why a task per held request: its state is the connection (an `AsyncFd`, no buffer while it
//! waits), a subscription entry and a timer; tokio keeps the three in one allocation, a few
//! hundred bytes. Nothing is read from a held connection except to notice its end: nginx
//! never sends ABORT_REQUEST, it closes (a FastCGI client sends nothing else on a connection
//! whose request is unanswered). Bytes that do arrive (a pipelining client) are kept, to go
//! back with the connection; an ABORT_REQUEST among them is not looked for.
//!
//! Counters go to the pool's scoreboard header, where every status reader sees them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{recv, send, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::broker::{Broker, BrokerError, Subscribed, Want};
use super::longpoll;
use super::message::{valid_channel, HttpResponse, Publication, SharedMessage};
use super::wire::{self, Ask, Back, HoldMsg, ToMaster, MAX_DATAGRAM, MAX_PENDING};
use crate::fastcgi::encode_whole_response;
use crate::scoreboard::Scoreboard;
use crate::sys::asyncfd;
use crate::sys::fdpass::{recv_with_fd, send_with_fd, Received};

/// How long the holder keeps trying to write an answer to a client that does not read.
const WRITE_DEADLINE: Duration = Duration::from_secs(30);
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

struct Pool {
    index: usize,
    name: String,
    link: AsyncFd<OwnedFd>,
    /// `max_held` and `hold_timeout` (ms), as the config says now: a reload changes them.
    max_held: AtomicUsize,
    hold_timeout_ms: AtomicU64,
    held: AtomicUsize,
}

/// The holder of one master: its broker, its pools, and the stop signal its tasks watch.
pub struct Holder {
    broker: Broker,
    scoreboard: Arc<Scoreboard>,
    pools: Vec<Arc<Pool>>,
    /// Becomes true on a graceful stop: every held request is answered as on its timeout.
    stopping: watch::Sender<bool>,
    /// Held requests (tasks) alive, for the stop to wait on.
    live: Arc<AtomicU64>,
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
                }))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let (stopping, _) = watch::channel(false);
        let holder = Arc::new(Holder {
            broker,
            scoreboard,
            pools,
            stopping,
            live: Arc::new(AtomicU64::new(0)),
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
        let deadline = tokio::time::Instant::now() + within;
        while self.live.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Held requests alive now (all pools).
    pub fn held(&self) -> u64 {
        self.live.load(Relaxed)
    }

    /// Publish through the broker (the master's `/publish/`, `fastpm publish`).
    pub async fn publish(
        &self,
        items: Vec<Publication>,
    ) -> Result<Vec<super::broker::Published>, BrokerError> {
        self.broker.publish(items).await
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
                Ok(ToMaster::Hold(msg)) => {
                    self.live.fetch_add(1, Relaxed);
                    tokio::spawn(Arc::clone(&self).serve(Arc::clone(&pool), fd, msg));
                }
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
                self.scoreboard.pool(pool.index).held_channels.store(n as u64, Relaxed);
            }
        }
    }

    /// One held request, from arrival to answer (and the connection given back or closed).
    async fn serve(self: Arc<Self>, pool: Arc<Pool>, fd: OwnedFd, msg: HoldMsg) {
        struct Live(Arc<AtomicU64>);
        impl Drop for Live {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Relaxed);
            }
        }
        let _live = Live(Arc::clone(&self.live));
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
            mut pending,
            ask,
        } = msg;
        let board = self.scoreboard.pool(pool.index);
        let answer = match ask {
            Ask::Pub {
                channel,
                content_type,
                body,
            } => self.publish_one(&pool, channel, content_type, body).await,
            Ask::Sub { channel } => {
                let wants = vec![Want {
                    channel: channel.name,
                    after: channel.after,
                }];
                match self
                    .wait(
                        &pool,
                        &conn,
                        &mut pending,
                        wants,
                        Duration::from_millis(pool.hold_timeout_ms.load(Relaxed)),
                    )
                    .await
                {
                    Waited::Message(m, lost) => longpoll::message_answer(&m, lost),
                    Waited::Timeout => longpoll::timeout_answer(),
                    Waited::Refused(answer) => answer,
                    Waited::Gone => return,
                }
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
                match self.wait(&pool, &conn, &mut pending, wants, timeout).await {
                    Waited::Message(m, lost) => longpoll::grip_answer(&m, lost),
                    Waited::Timeout => response,
                    Waited::Refused(answer) => answer,
                    Waited::Gone => return,
                }
            }
        };
        let mut out = Vec::with_capacity(answer.len() + 64);
        encode_whole_response(&mut out, request_id, &answer);
        drop(answer);
        match tokio::time::timeout(WRITE_DEADLINE, write_all(&conn, &out)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(pool = %pool.name, %error, "holder: client gone before its answer");
                board.held_gone.fetch_add(1, Relaxed);
                return;
            }
            Err(_) => {
                tracing::debug!(pool = %pool.name, "holder: client did not read its answer; closed");
                return;
            }
        }
        if keep_conn && !*self.stopping.borrow() {
            give_back(&pool, conn.into_inner(), pending).await;
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
                let board = self.scoreboard.pool(pool.index);
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

    /// Hold until a message, the timeout, the client's end, or the master's stop.
    async fn wait(
        &self,
        pool: &Pool,
        conn: &AsyncFd<OwnedFd>,
        pending: &mut Vec<u8>,
        wants: Vec<Want>,
        timeout: Duration,
    ) -> Waited {
        let board = self.scoreboard.pool(pool.index);
        for w in &wants {
            if !valid_channel(&w.channel) {
                return Waited::Refused(longpoll::error_answer(400, "invalid channel name"));
            }
        }
        // Counted before the broker is asked: `max_held` bounds what waits, whatever the wait.
        let held = pool.held.fetch_add(1, Relaxed) + 1;
        struct Held<'a>(&'a AtomicUsize, &'a AtomicU64);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                let now = self.0.fetch_sub(1, Relaxed) - 1;
                self.1.store(now as u64, Relaxed);
            }
        }
        let _held = Held(&pool.held, &board.held_requests);
        if held > pool.max_held.load(Relaxed) {
            board.held_refused.fetch_add(1, Relaxed);
            return Waited::Refused(longpoll::unavailable_answer(1));
        }
        board.held_requests.store(held as u64, Relaxed);
        board.max_held_requests.fetch_max(held as u64, Relaxed);
        let mut subscription = match self.broker.subscribe(pool.index, &wants).await {
            Ok(Subscribed::Now { message, lost }) => {
                board.messages_delivered.fetch_add(1, Relaxed);
                return Waited::Message(message, lost);
            }
            Ok(Subscribed::Wait(subscription)) => subscription,
            Err(error) => {
                tracing::debug!(pool = %pool.name, %error, "subscribe refused");
                return Waited::Refused(longpoll::unavailable_answer(1));
            }
        };
        let mut stopping = self.stopping.subscribe();
        if *stopping.borrow_and_update() {
            return Waited::Timeout;
        }
        let sleep = tokio::time::sleep(timeout);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                message = subscription.recv() => {
                    board.messages_delivered.fetch_add(1, Relaxed);
                    return Waited::Message(message, 0);
                }
                () = &mut sleep => {
                    board.held_timeouts.fetch_add(1, Relaxed);
                    return Waited::Timeout;
                }
                _ = stopping.changed() => return Waited::Timeout,
                ready = conn.readable() => {
                    let Ok(mut guard) = ready else { return Waited::Gone };
                    match read_while_held(conn.get_ref(), pending) {
                        Heard::Nothing => guard.clear_ready(),
                        Heard::Bytes => {}
                        Heard::End => {
                            board.held_gone.fetch_add(1, Relaxed);
                            return Waited::Gone;
                        }
                    }
                }
            }
        }
    }
}

/// How a hold ended.
enum Waited {
    Message(SharedMessage, u64),
    Timeout,
    /// Answered without holding (refused, bad input, broker down).
    Refused(Vec<u8>),
    /// The client left: nothing to answer.
    Gone,
}

/// What a read on a held connection found.
enum Heard {
    Nothing,
    Bytes,
    End,
}

/// Read what a held connection's client sent: its end (or a reset) means it left; bytes are
/// kept for when the connection goes back (up to [`MAX_PENDING`]; more ends it).
fn read_while_held(fd: &OwnedFd, pending: &mut Vec<u8>) -> Heard {
    let mut buf = [0u8; 4096];
    match recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
        Ok(0) => Heard::End,
        Ok(n) if pending.len() + n <= MAX_PENDING => {
            pending.extend_from_slice(&buf[..n]);
            Heard::Bytes
        }
        Ok(_) => Heard::End,
        Err(Errno::EAGAIN | Errno::EINTR) => Heard::Nothing,
        Err(_) => Heard::End,
    }
}

/// Write all of `bytes` to a non-blocking connection, waiting for room as needed.
async fn write_all(conn: &AsyncFd<OwnedFd>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let mut guard = conn.writable().await?;
        match send(
            conn.get_ref().as_raw_fd(),
            bytes,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EAGAIN) => guard.clear_ready(),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A kept connection back to a worker of `pool` (any one: the first whose front reads the
/// link). Closed when the link stays full for [`GIVE_BACK_PATIENCE`].
async fn give_back(pool: &Pool, fd: OwnedFd, pending: Vec<u8>) {
    let mut bytes = Vec::with_capacity(pending.len() + 8);
    wire::encode_back(&Back { pending }, &mut bytes);
    let deadline = tokio::time::Instant::now() + GIVE_BACK_PATIENCE;
    loop {
        match send_with_fd(pool.link.get_ref().as_fd(), &bytes, fd.as_fd(), Duration::ZERO) {
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
