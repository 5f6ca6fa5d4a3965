//! The client side of held requests at scale, shared by `tests/held_scale.rs` (the done-when
//! test of issue 10) and `benches/held` (the experiment), which include this file with
//! `#[path]` beside `tests/common` (`crate::common`): tens of thousands of FastCGI requests
//! held open at once and watched cheaply, the pool's ping timed while they wait, and the
//! memory (PSS) of a process tree.
//!
//! Why one epoll thread per batch of connections: a held connection must be watched (an early
//! answer, a second answer or a close is a failure) and its answer timestamped when it arrives,
//! not when a sequential reader gets round to it — with 10,000 connections a blocking reader
//! would measure itself. Edge-triggered epoll reads each connection only when something
//! arrived, a batch of events per `epoll_wait`, and nothing is deregistered or closed until
//! the answers are collected, so the client's cost while answers are timed is a `read` or two
//! per connection — small even in a debug build (a tokio task per connection, the first
//! version, cost the test's debug build as much as the server it measured). Connecting is
//! blocking (`connect(2)` on a unix socket waits while the listener's backlog is full, which is
//! the pacing we want: no refused connections, no retry loop).
#![allow(dead_code)] // shared by two crates, each using a part

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::common::raw;

/// What one watched connection received, from its request until the server closed it.
#[derive(Debug)]
pub struct Answer {
    /// When the first complete END_REQUEST record had arrived.
    pub answered_at: Option<Instant>,
    /// Every byte received, in order.
    pub bytes: Vec<u8>,
    /// A read error that ended the watch (a reset), if any.
    pub error: Option<String>,
    /// Whether the server closed the connection (read returned 0).
    pub closed: bool,
    /// The connection, closed only when the answers are dropped: closing it is client work
    /// that would otherwise run while the answers are timed.
    _stream: UnixStream,
}

impl Answer {
    /// Complete END_REQUEST records received: a right answer has exactly one.
    pub fn end_requests(&self) -> usize {
        end_requests(&self.bytes)
    }

    /// The response as records (STDOUT joined), when the bytes are whole records.
    pub fn response(&self) -> Option<raw::Response> {
        raw::read_response(&mut &self.bytes[..])
    }
}

/// One group of connections opened together with the same request, watched by one thread.
pub struct Batch {
    counts: Arc<Counts>,
    n: usize,
    watcher: Option<JoinHandle<io::Result<Vec<Answer>>>>,
}

struct Counts {
    /// Connections whose first END_REQUEST has arrived.
    answered: AtomicUsize,
    /// Connections the server closed (or reset).
    ended: AtomicUsize,
    /// Tells the watcher to stop and hand back what it has.
    stop: AtomicBool,
}

/// Open `n` connections to the unix socket `socket`, send `request` on each, and watch them
/// until the server closes them.
pub fn open_batch(socket: &Path, request: &[u8], n: usize) -> io::Result<Batch> {
    let counts = Arc::new(Counts {
        answered: AtomicUsize::new(0),
        ended: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let (to_watcher, streams) = mpsc::channel();
    let watcher = {
        let counts = Arc::clone(&counts);
        std::thread::spawn(move || watch(streams, n, &counts))
    };
    let mut batch = Batch {
        counts,
        n,
        watcher: Some(watcher),
    };
    for _ in 0..n {
        let mut stream = UnixStream::connect(socket)?;
        stream.write_all(request)?;
        stream.set_nonblocking(true)?;
        if to_watcher.send(stream).is_err() {
            return Err(batch
                .stop_watcher()
                .err()
                .unwrap_or_else(|| io::Error::other("the watcher thread ended early")));
        }
    }
    Ok(batch)
}

/// One connection as the watcher keeps it.
struct Watched {
    stream: UnixStream,
    bytes: Vec<u8>,
    answered_at: Option<Instant>,
    error: Option<String>,
    closed: bool,
}

/// The watcher thread: register each connection as it comes, read what arrives.
fn watch(
    streams: mpsc::Receiver<UnixStream>,
    n: usize,
    counts: &Counts,
) -> io::Result<Vec<Answer>> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let mut conns: Vec<Watched> = Vec::with_capacity(n);
    let mut events = vec![EpollEvent::empty(); 1024];
    let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
    let mut buf = [0u8; 4096];
    let tick = EpollTimeout::from(5u16);
    while !counts.stop.load(Relaxed) && counts.ended.load(Relaxed) < n {
        // New connections first: registering one reports what already arrived on it.
        while let Ok(stream) = streams.try_recv() {
            epoll.add(&stream, EpollEvent::new(flags, conns.len() as u64))?;
            conns.push(Watched {
                stream,
                bytes: Vec::new(),
                answered_at: None,
                error: None,
                closed: false,
            });
        }
        let ready = match epoll.wait(&mut events, tick) {
            Ok(ready) => ready,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        for event in &events[..ready] {
            let c = &mut conns[event.data() as usize];
            if c.closed || c.error.is_some() {
                continue; // ended and counted already
            }
            loop {
                match (&c.stream).read(&mut buf) {
                    Ok(0) => {
                        c.closed = true;
                        break;
                    }
                    Ok(got) => {
                        c.bytes.extend_from_slice(&buf[..got]);
                        if c.answered_at.is_none() && end_requests(&c.bytes) > 0 {
                            c.answered_at = Some(Instant::now());
                            counts.answered.fetch_add(1, Relaxed);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        c.error = Some(e.to_string());
                        break;
                    }
                }
            }
            if c.closed || c.error.is_some() {
                counts.ended.fetch_add(1, Relaxed);
            }
        }
    }
    Ok(conns
        .into_iter()
        .map(|c| Answer {
            answered_at: c.answered_at,
            bytes: c.bytes,
            error: c.error,
            closed: c.closed,
            _stream: c.stream,
        })
        .collect())
}

/// Complete END_REQUEST records in `buf` (a partial record at the end is not counted).
fn end_requests(mut buf: &[u8]) -> usize {
    let mut ends = 0;
    while buf.len() >= 8 {
        let len = u16::from_be_bytes([buf[4], buf[5]]) as usize + buf[6] as usize;
        if buf.len() < 8 + len {
            break;
        }
        if buf[1] == raw::END_REQUEST {
            ends += 1;
        }
        buf = &buf[8 + len..];
    }
    ends
}

impl Batch {
    /// Connections whose answer has arrived.
    pub fn answered(&self) -> usize {
        self.counts.answered.load(Relaxed)
    }

    /// Connections the server has closed.
    pub fn ended(&self) -> usize {
        self.counts.ended.load(Relaxed)
    }

    /// Block until the server has closed every connection (at most `within`), then what each
    /// received; `Err` says how many were still open.
    pub fn finish(mut self, within: Duration) -> Result<Vec<Answer>, String> {
        let deadline = Instant::now() + within;
        while self.ended() < self.n {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} of {} connections still open after {within:?} ({} answered)",
                    self.n - self.ended(),
                    self.n,
                    self.answered()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.stop_watcher().map_err(|e| format!("watcher: {e}"))
    }

    fn stop_watcher(&mut self) -> io::Result<Vec<Answer>> {
        self.counts.stop.store(true, Relaxed);
        match self.watcher.take() {
            Some(watcher) => watcher
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the watcher thread panicked"))),
            None => Ok(Vec::new()),
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let _ = self.stop_watcher();
    }
}

/// Every answer is one response with `body`, answered after `sent` and then closed; otherwise
/// the first fault found. Returns the time from `sent` to the last answer.
pub fn check_answers(answers: &[Answer], body: &str, sent: Instant) -> Result<Duration, String> {
    let mut last = Duration::ZERO;
    for (i, a) in answers.iter().enumerate() {
        if let Some(e) = &a.error {
            return Err(format!("connection {i}: {e}"));
        }
        let ends = a.end_requests();
        if ends != 1 {
            return Err(format!(
                "connection {i}: {ends} answers in {} bytes{}",
                a.bytes.len(),
                if a.closed { ", then closed" } else { "" }
            ));
        }
        let r = a
            .response()
            .ok_or(format!("connection {i}: no whole response"))?;
        if r.body() != body {
            return Err(format!("connection {i}: body {:?}, not {body:?}", r.body()));
        }
        let at = a.answered_at.expect("an END_REQUEST was counted");
        let after = at.checked_duration_since(sent).ok_or(format!(
            "connection {i}: answered before the publish was sent"
        ))?;
        last = last.max(after);
    }
    Ok(last)
}

/// Publish `body` as the first message of `channel` through the pool's `…/pub/` path, which
/// must answer that it reached `subscribers` held requests (`{"id":1,"subscribers":K}`); when
/// it was sent.
pub fn publish(
    socket: &Path,
    channel: &str,
    body: &str,
    subscribers: usize,
) -> Result<Instant, String> {
    let request = raw::request(&format!("/pub/{channel}"), "", body.as_bytes(), false);
    let mut s = raw::connect_unix(socket);
    let sent = Instant::now();
    s.write_all(&request)
        .map_err(|e| format!("send the publish: {e}"))?;
    let answer = raw::read_response(&mut s).ok_or("the publish was not answered")?;
    match answer.body() == format!(r#"{{"id":1,"subscribers":{subscribers}}}"#) {
        true => Ok(sent),
        false => Err(format!("the publish answered {:?}", answer.text())),
    }
}

/// Held requests of pool `pool`, as the master's `/status?json` says (`u64::MAX` when it does
/// not say).
pub fn held_requests(server: &crate::common::Server, pool: &str) -> u64 {
    let all = crate::common::master_status(server.status_port());
    all["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["pool"] == pool))
        .and_then(|p| p["held requests"].as_u64())
        .unwrap_or(u64::MAX)
}

/// The request that holds a subscriber on `channel`.
pub fn subscribe_request(channel: &str) -> Vec<u8> {
    raw::request(&format!("/sub/{channel}"), "", b"", false)
}

/// `n` pings (`/ping` on a fresh connection each, body checked), one every `spacing`; the
/// time of each from connect to its END_REQUEST.
pub fn pings(socket: &Path, n: usize, spacing: Duration) -> Result<Vec<Duration>, String> {
    let request = raw::request("/ping", "", b"", false);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let mut s = raw::connect_unix(socket);
        s.write_all(&request).map_err(|e| format!("ping: {e}"))?;
        let r = raw::read_response(&mut s).ok_or("ping: connection closed unanswered")?;
        times.push(start.elapsed());
        if !r.body().contains("pong") {
            return Err(format!("ping answered {:?}", r.text()));
        }
        std::thread::sleep(spacing.saturating_sub(start.elapsed()));
    }
    Ok(times)
}

/// The `p`-th percentile (0–100, nearest rank) of `values`.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Proportional set size of process `pid`, in KiB (`/proc/PID/smaps_rollup`).
pub fn pss_kib(pid: i32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no Pss line for {pid}")))
}

/// CPU time process `pid` has used, all its threads together, in nanoseconds
/// (`/proc/PID/task/*/schedstat`: exact, where `stat`'s ticks are 10 ms).
pub fn cpu_ns(pid: i32) -> io::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(text) = std::fs::read_to_string(task?.path().join("schedstat")) else {
            continue; // a thread that ended meanwhile
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// PSS of a master and its worker processes together, in KiB.
pub fn tree_pss_kib(master: i32) -> io::Result<u64> {
    let mut total = pss_kib(master)?;
    for pid in crate::common::child_pids(master) {
        total += pss_kib(pid)?;
    }
    Ok(total)
}

/// Raise this process's `RLIMIT_NOFILE` soft limit to the hard limit, or to `want` when that is
/// above the hard limit and this process may raise the hard limit too (root, up to
/// `fs.nr_open`). The soft limit in force after.
pub fn raise_nofile(want: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if want > hard && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return want;
    }
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise the soft RLIMIT_NOFILE");
    }
    getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit").0
}

/// The 1, 5 and 15-minute load averages (`/proc/loadavg`): timings on a box that other jobs
/// keep busy are not this server's, and a report should say so.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Poll `ok` every 20 ms until it holds or `within` passes; how long it took.
pub fn wait_for(
    what: &str,
    within: Duration,
    mut ok: impl FnMut() -> bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > within {
            return Err(format!("not within {within:?}: {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(start.elapsed())
}
