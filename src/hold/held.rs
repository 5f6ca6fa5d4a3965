//! One held request's task in the master (DESIGN.md §8), from its arrival to its answer: it
//! subscribes, waits for the first of a message on its channel(s), its timeout, its client
//! leaving or the master's graceful stop, writes the answer on the request's own FastCGI
//! connection (STDOUT + END_REQUEST with the request's id), and says whether the connection is
//! to go back to a worker (FCGI_KEEP_CONN; [`run`] does that).
//!
//! Why a future written out by hand rather than an `async fn`: the task *is* what a held
//! request costs, tens of thousands at once (issue 10: ≤ 2 KB each). As an `async fn` with
//! `select!` over four futures it took 2,096 bytes: rustc keeps an `async fn`'s arguments
//! twice and room for every branch, and each of `select!`'s futures carries a waiter of its
//! own. Written out, a waiting request is its connection, its
//! subscription, a timer and how to answer ([`HeldTask`], under 200 bytes), and waiting needs
//! no future: the message wakes the task through the subscription's slot, the client's end
//! through the connection's registration, the stop through the slot again
//! ([`super::channels::Hub::wake_all`]).
//!
//! Nothing is read from a held connection except to notice its end: nginx never sends
//! ABORT_REQUEST, it closes (a FastCGI client sends nothing else on a connection whose request
//! is unanswered). Bytes that do arrive (a pipelining client) are kept, to go back with the
//! connection; an ABORT_REQUEST among them is not looked for.

use std::future::Future;
use std::io;
use std::ops::Deref;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{recv, send, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::time::Sleep;

use super::broker::{BrokerError, Subscribed, Want};
use super::channels::Subscription;
use super::holder::{give_back, Holder, Pool};
use super::longpoll;
use super::message::{valid_channel, Message, SharedMessage};
use super::wire::MAX_PENDING;
use crate::fastcgi::encode_whole_response;

/// How long an answer may wait for room in a client's socket (from the first time it had
/// to): a client that does not read is closed.
const WRITE_DEADLINE: Duration = Duration::from_secs(30);

/// The holder, with this task counted among its live ones until dropped (a graceful stop waits
/// for the count to reach zero).
pub(super) struct Live(Arc<Holder>);

impl Live {
    pub(super) fn new(holder: &Arc<Holder>) -> Live {
        holder.live.fetch_add(1, Relaxed);
        Live(Arc::clone(holder))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Relaxed);
    }
}

impl Deref for Live {
    type Target = Holder;
    fn deref(&self) -> &Holder {
        &self.0
    }
}

/// What answering a held request needs, for its whole life.
pub(super) struct Reply {
    pub(super) holder: Live,
    pub(super) pool: Arc<Pool>,
    pub(super) conn: AsyncFd<OwnedFd>,
    /// Bytes the client sent past the request (a pipelining client's next one): they go back
    /// to a worker with a kept connection.
    pub(super) pending: Vec<u8>,
    pub(super) request_id: u16,
    pub(super) keep_conn: bool,
}

/// How a hold is answered, by the kind of request that asked for it.
pub(super) enum Answers {
    /// `longpoll` `sub`: the message with its id headers; `204` on timeout.
    Longpoll,
    /// A relayed app's `Grip-Hold`: the message as published; the app's own response on
    /// timeout.
    Grip { timeout_response: Vec<u8> },
}

impl Answers {
    fn message(&self, m: &Message, lost: u64) -> Vec<u8> {
        match self {
            Answers::Longpoll => longpoll::message_answer(m, lost),
            Answers::Grip { .. } => longpoll::grip_answer(m, lost),
        }
    }

    fn timeout(self) -> Vec<u8> {
        match self {
            Answers::Longpoll => longpoll::timeout_answer(),
            Answers::Grip { timeout_response } => timeout_response,
        }
    }
}

/// One request counted in its pool's `held requests` (and against `max_held`) while it waits.
struct Counted(Arc<Pool>);

impl Drop for Counted {
    fn drop(&mut self) {
        let now = self.0.held.fetch_sub(1, Relaxed) - 1;
        self.0.board().held_requests.store(now as u64, Relaxed);
    }
}

type Subscribing = Pin<Box<dyn Future<Output = Result<Subscribed, BrokerError>> + Send>>;

enum Phase {
    /// Not polled yet. Counting and subscribing happen in the task's first poll, together: a
    /// request counted in `held requests` is one a publish reaches (memory broker), so a
    /// status that says N are held means a publish now answers N.
    Start {
        wants: Vec<Want>,
        timeout: Duration,
        answers: Answers,
    },
    /// Asking the broker (Redis: a round trip; memory: done at the first poll).
    Subscribing {
        subscribing: Subscribing,
        timeout: Duration,
        answers: Answers,
        counted: Counted,
    },
    Waiting {
        subscription: Subscription,
        timer: Pin<Box<Sleep>>,
        answers: Answers,
        counted: Counted,
    },
    /// The answer as FastCGI records, `written` bytes of it sent; `deadline` starts the first
    /// time the client's socket is full.
    Writing {
        out: Vec<u8>,
        written: usize,
        deadline: Option<Pin<Box<Sleep>>>,
    },
    /// Between polls only while a phase is taken out and put back; a poll that finds it ends.
    Done,
}

impl Phase {
    fn writing(request_id: u16, cgi: &[u8]) -> Phase {
        let mut out = Vec::with_capacity(cgi.len() + 64);
        encode_whole_response(&mut out, request_id, cgi);
        Phase::Writing {
            out,
            written: 0,
            deadline: None,
        }
    }
}

/// One held request, as a future: ready with `true` when its answer is written and its
/// connection is to go back to a worker, `false` when the connection is to close.
pub(super) struct HeldTask {
    reply: Reply,
    phase: Phase,
}

impl HeldTask {
    /// Hold `reply`'s request on `wants` for `timeout` (or answer at once: a bad channel name;
    /// at the first poll, `max_held` reached).
    pub(super) fn hold(
        reply: Reply,
        wants: Vec<Want>,
        timeout: Duration,
        answers: Answers,
    ) -> HeldTask {
        if wants.iter().any(|w| !valid_channel(&w.channel)) {
            return HeldTask::answer(reply, longpoll::error_answer(400, "invalid channel name"));
        }
        HeldTask {
            reply,
            phase: Phase::Start {
                wants,
                timeout,
                answers,
            },
        }
    }

    /// Answer `reply`'s request with `cgi` (CGI bytes: headers, blank line, body) at once.
    pub(super) fn answer(reply: Reply, cgi: Vec<u8>) -> HeldTask {
        let phase = Phase::writing(reply.request_id, &cgi);
        HeldTask { reply, phase }
    }

    /// The connection and the bytes read past its request, to give back to a worker.
    fn into_kept(self) -> (Arc<Pool>, OwnedFd, Vec<u8>) {
        let Reply {
            pool,
            conn,
            pending,
            ..
        } = self.reply;
        (pool, conn.into_inner(), pending)
    }
}

impl Future for HeldTask {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let HeldTask { reply, phase } = self.get_mut();
        loop {
            // Each phase is taken out, advanced, and put back (or replaced by the next).
            match std::mem::replace(phase, Phase::Done) {
                Phase::Start {
                    wants,
                    timeout,
                    answers,
                } => *phase = start(reply, wants, timeout, answers),
                Phase::Subscribing {
                    mut subscribing,
                    timeout,
                    answers,
                    counted,
                } => {
                    let Poll::Ready(subscribed) = subscribing.as_mut().poll(cx) else {
                        *phase = Phase::Subscribing {
                            subscribing,
                            timeout,
                            answers,
                            counted,
                        };
                        return Poll::Pending;
                    };
                    *phase = match subscribed {
                        Ok(Subscribed::Wait(subscription)) => Phase::Waiting {
                            subscription,
                            timer: Box::pin(tokio::time::sleep(timeout)),
                            answers,
                            counted,
                        },
                        Ok(Subscribed::Now { message, lost }) => {
                            reply.pool.board().messages_delivered.fetch_add(1, Relaxed);
                            drop(counted);
                            Phase::writing(reply.request_id, &answers.message(&message, lost))
                        }
                        Err(error) => {
                            tracing::debug!(pool = %reply.pool.name, %error, "subscribe refused");
                            drop(counted);
                            Phase::writing(reply.request_id, &longpoll::unavailable_answer(1))
                        }
                    };
                }
                Phase::Waiting {
                    subscription,
                    mut timer,
                    answers,
                    counted,
                } => {
                    let cgi = match poll_wait(reply, &subscription, &mut timer, cx) {
                        Poll::Pending => {
                            *phase = Phase::Waiting {
                                subscription,
                                timer,
                                answers,
                                counted,
                            };
                            return Poll::Pending;
                        }
                        Poll::Ready(Waited::Message(m)) => answers.message(&m, 0),
                        Poll::Ready(Waited::Timeout) => answers.timeout(),
                        Poll::Ready(Waited::Gone) => return Poll::Ready(false),
                    };
                    // Unsubscribed and uncounted before the answer is written.
                    drop((subscription, counted));
                    *phase = Phase::writing(reply.request_id, &cgi);
                }
                Phase::Writing {
                    out,
                    mut written,
                    mut deadline,
                } => {
                    return match poll_write(&reply.conn, &out, &mut written, &mut deadline, cx) {
                        Poll::Pending => {
                            *phase = Phase::Writing {
                                out,
                                written,
                                deadline,
                            };
                            Poll::Pending
                        }
                        Poll::Ready(Ok(())) => {
                            Poll::Ready(reply.keep_conn && !*reply.holder.stopping.borrow())
                        }
                        Poll::Ready(Err(Unwritten::Gone(error))) => {
                            tracing::debug!(pool = %reply.pool.name, %error, "holder: client gone before its answer");
                            reply.pool.board().held_gone.fetch_add(1, Relaxed);
                            Poll::Ready(false)
                        }
                        Poll::Ready(Err(Unwritten::NotRead)) => {
                            tracing::debug!(pool = %reply.pool.name, "holder: client did not read its answer; closed");
                            Poll::Ready(false)
                        }
                    };
                }
                Phase::Done => return Poll::Ready(false),
            }
        }
    }
}

/// Count the request in its pool (refused past `max_held`: `503`) and ask the broker.
fn start(reply: &Reply, wants: Vec<Want>, timeout: Duration, answers: Answers) -> Phase {
    let pool = &reply.pool;
    let board = pool.board();
    // Counted before the broker is asked: `max_held` bounds what waits, whatever the wait.
    let held = pool.held.fetch_add(1, Relaxed) + 1;
    let counted = Counted(Arc::clone(pool));
    if held > pool.max_held.load(Relaxed) {
        board.held_refused.fetch_add(1, Relaxed);
        drop(counted);
        return Phase::writing(reply.request_id, &longpoll::unavailable_answer(1));
    }
    board.held_requests.store(held as u64, Relaxed);
    board.max_held_requests.fetch_max(held as u64, Relaxed);
    let broker = reply.holder.broker().clone();
    let index = pool.index;
    Phase::Subscribing {
        subscribing: Box::pin(async move { broker.subscribe(index, &wants).await }),
        timeout,
        answers,
        counted,
    }
}

/// The task of one held request: the hold and its answer, then a kept connection back to a
/// worker of its pool. The task is `task` and a pointer: `task` is awaited in place.
pub(super) fn run(task: HeldTask) -> impl Future<Output = ()> + Send {
    let mut task = task;
    async move {
        if (&mut task).await {
            let (pool, fd, pending) = task.into_kept();
            // Boxed: rare (kept connections only), and its timer would otherwise be room in
            // every held request's task.
            Box::pin(async move { give_back(&pool, fd, pending).await }).await;
        } else {
            let Reply { holder, conn, .. } = task.reply;
            // Deregistered here, on the runtime's thread; closed on the closer's.
            holder.closer.close(conn.into_inner());
        }
    }
}

/// Closes answered (and abandoned) connections on a thread of its own, off the path of the
/// answers. Closing a held connection is the larger part of answering it — `close(2)` tearing
/// down the socket, its inode and dentry: with the epoll deregistration, about two thirds of the
/// master's CPU in a 10,000-subscriber publish, profiled with `perf`. Done in each task after
/// its `send`, the last subscriber's answer waited for 9,999 closes; handed here, the answers go
/// out back to back while the closes run beside them (on another core when there is one). The
/// deregistration stays on the runtime's thread (`AsyncFd::into_inner`): done here it would
/// take the epoll instance's mutex against the runtime's own `epoll_wait`, and a closer
/// preempted while holding it stalls the runtime. The client needs only the END_REQUEST record
/// (nginx ends the upstream request on it), so nothing waits for the close.
pub(super) struct Closer {
    /// `None` when the thread could not be started: connections are then closed in place.
    to_thread: Option<mpsc::Sender<OwnedFd>>,
}

impl Closer {
    pub(super) fn start() -> Closer {
        let (to_thread, closing) = mpsc::channel::<OwnedFd>();
        let thread = std::thread::Builder::new()
            .name("fastpm-closer".into())
            .spawn(move || closing.into_iter().for_each(drop));
        match thread {
            Ok(_) => Closer {
                to_thread: Some(to_thread),
            },
            Err(error) => {
                tracing::warn!(%error, "holder: no closer thread; held connections close in place");
                Closer { to_thread: None }
            }
        }
    }

    /// Close `conn` soon.
    pub(super) fn close(&self, conn: OwnedFd) {
        if let Some(to_thread) = &self.to_thread {
            // A send fails only once the thread is gone: then the connection drops here.
            let _ = to_thread.send(conn);
        }
    }
}

/// How a wait ended.
enum Waited {
    Message(SharedMessage),
    Timeout,
    /// The client left: nothing to answer.
    Gone,
}

/// One look at everything a held request waits for, registering `cx` with each: a message
/// first, then the master's stop, the timeout, and the client's end.
fn poll_wait(
    reply: &mut Reply,
    subscription: &Subscription,
    timer: &mut Pin<Box<Sleep>>,
    cx: &mut Context<'_>,
) -> Poll<Waited> {
    let board = reply.pool.board();
    if let Poll::Ready(message) = subscription.poll_recv(cx) {
        board.messages_delivered.fetch_add(1, Relaxed);
        return Poll::Ready(Waited::Message(message));
    }
    // After the slot's waker is registered: `stop` sets this, then wakes every slot.
    if *reply.holder.stopping.borrow() {
        return Poll::Ready(Waited::Timeout);
    }
    if timer.as_mut().poll(cx).is_ready() {
        board.held_timeouts.fetch_add(1, Relaxed);
        return Poll::Ready(Waited::Timeout);
    }
    loop {
        let Ok(mut guard) = ready!(reply.conn.poll_read_ready(cx)) else {
            return Poll::Ready(Waited::Gone);
        };
        match read_while_held(reply.conn.get_ref(), &mut reply.pending) {
            Heard::Nothing => guard.clear_ready(),
            Heard::Bytes => {}
            Heard::End => {
                board.held_gone.fetch_add(1, Relaxed);
                return Poll::Ready(Waited::Gone);
            }
        }
    }
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

/// Why an answer was not written.
enum Unwritten {
    Gone(io::Error),
    /// The client's socket stayed full for [`WRITE_DEADLINE`].
    NotRead,
}

/// Send the rest of `out` (from `written`). Tries first and waits for room only when the
/// socket is full: an answer normally goes out in one `send`.
fn poll_write(
    conn: &AsyncFd<OwnedFd>,
    out: &[u8],
    written: &mut usize,
    deadline: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Unwritten>> {
    while *written < out.len() {
        match send(
            conn.get_ref().as_raw_fd(),
            &out[*written..],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => *written += n,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => match conn.poll_write_ready(cx) {
                // Readiness seen before the socket filled: forget it and wait for the next.
                Poll::Ready(Ok(mut guard)) => guard.clear_ready(),
                Poll::Ready(Err(error)) => return Poll::Ready(Err(Unwritten::Gone(error))),
                Poll::Pending => {
                    let timer = deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_DEADLINE)));
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(Unwritten::NotRead));
                    }
                    return Poll::Pending;
                }
            },
            Err(error) => return Poll::Ready(Err(Unwritten::Gone(error.into()))),
        }
    }
    Poll::Ready(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns (a fn item's output type, no value needed).
    fn future_size<T, F>(_: fn(T) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_held_request_task_stays_small() {
        // What each of tens of thousands of held requests costs in the master's memory, before
        // its tokio task header (~100 bytes), its timer, its subscription slot and its
        // connection's registration. Grew past the bound: see the module comment for why the
        // task is not an `async fn`.
        let held = std::mem::size_of::<HeldTask>();
        let task = future_size(run);
        println!("HeldTask {held} bytes, its task's future {task} bytes");
        assert!(held <= 200, "HeldTask is {held} bytes");
        assert!(
            task <= held + 32,
            "run()'s future is {task} bytes for a {held}-byte HeldTask"
        );
    }
}
