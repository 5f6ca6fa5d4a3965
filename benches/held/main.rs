//! `cargo bench --bench held`: held requests at scale (issue 10, item 8 a–c), client and server
//! on this box over unix sockets, loopback only, bounded (every phase has a size and a
//! deadline). One fastpm per size and round: a `longpoll` pool of 2 worker processes (with
//! `ping_path`) and a `hello` pool of 2 worker processes.
//!
//! - (a) held requests per instance and PSS per held request: after a warm-up of 100 held and
//!   answered, PSS of the master and all its workers at 0 held and at N held (N from
//!   `HELD_SIZES`, default 1,000, 10,000, 50,000). A size the descriptor limits cannot reach
//!   (both this process and the master need N descriptors) is reported as not run, with the
//!   limit, and the largest size that fits is run instead.
//! - (b) a normal request's latency with nothing held and with N held: `NORMAL_REQUESTS` pings
//!   (`/ping` of the longpoll pool, answered by its workers) and as many `hello` answers of the
//!   second pool, one at a time, alternated, a fresh connection each, body checked; p50/p99 and
//!   the held ÷ empty ratio of p99.
//! - (c) publish → last subscriber answered, for `FANOUT_SIZES` (1, 1,000, 10,000) subscribers
//!   of one channel, `FANOUT_ROUNDS` (5) rounds, against a floor: this program (as another
//!   process) holding the same connections and answering them from one thread with a canned
//!   response, one `write` each, closing them only after the last — the least the kernel costs
//!   for the same answers.
//!
//! - (d) the master's CPU while requests are held: for `IDLE_SIZES` (0, 10,000) held, CPU
//!   milliseconds per second of the master (all threads) over `IDLE_SECS` (10) with nothing
//!   else happening, then over as long with a ping every millisecond (the queue sampler at its
//!   busy pace). What it shows: whether anything the master does each tick grows with what is
//!   held (the queue probe's `unix_diag` lookup walks the namespace's unix sockets).
//!
//! Every answer is checked (one response, the published body, then the connection closed); a
//! failure is printed and makes the exit status 1. The table is printed and written to
//! `target/bench-held.md`. Method and results: docs/BENCHMARKS.md.

#[path = "../../tests/common/mod.rs"]
mod common;

mod client;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use client::{
    check_answers, cpu_ns, held_requests, load_average, open_batch, percentile, publish,
    raise_nofile, subscribe_request, tree_pss_kib, wait_for,
};
use common::raw;
use common::Server;

/// Held and answered before "0 held" is measured, so one-off growth (the runtime's first
/// tasks, the status listener's buffers) is not counted. Small on purpose: memory freed by the
/// warm-up is reused by the first requests measured, so a warm-up of W makes the figure about
/// (N − W) / N of the true cost (tests/held_scale.rs warms up with 1,000 for 10,000).
const WARM_UP: usize = 100;
/// Fewer subscribers than this: no CPU per answer in the table (see where it is printed).
const MIN_FOR_CPU: usize = 100;
/// Descriptors a process needs beside its held connections (listeners, logs, status, pings).
const SPARE_FDS: usize = 600;

struct Settings {
    sizes: Vec<usize>,
    rounds: usize,
    fanout_sizes: Vec<usize>,
    fanout_rounds: usize,
    normal_requests: usize,
    idle_sizes: Vec<usize>,
    idle_secs: u64,
}

fn knob(name: &str, default: &str) -> Vec<usize> {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_string());
    text.split(',')
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}={text:?}: a number or a comma-separated list"))
        })
        .collect()
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            sizes: knob("HELD_SIZES", "1000,10000,50000"),
            rounds: knob("HELD_ROUNDS", "3")[0].max(1),
            fanout_sizes: knob("FANOUT_SIZES", "1,1000,10000"),
            fanout_rounds: knob("FANOUT_ROUNDS", "5")[0].max(1),
            normal_requests: knob("NORMAL_REQUESTS", "1000")[0].max(10),
            idle_sizes: knob("IDLE_SIZES", "0,10000"),
            idle_secs: knob("IDLE_SECS", "10")[0].max(1) as u64,
        }
    }
}

fn config(max_held: usize) -> String {
    format!(
        r#"
[global]
status_listen = "127.0.0.1:0"
runtime_dir = "{{dir}}/run"

[pool.lp]
workers = "process"
pm = "static"
max_children = 2
ping_path = "/ping"

[pool.lp.listen]
address = "unix:{{dir}}/lp.sock"

[pool.lp.app]
kind = "longpoll"
hold_timeout = "3600s"
max_held = {max_held}

[pool.hello]
workers = "process"
pm = "static"
max_children = 2

[pool.hello.listen]
address = "unix:{{dir}}/hello.sock"

[pool.hello.app]
kind = "hello"
"#
    )
}

/// Held requests of pool `lp`, as the master's status says.
fn held(server: &Server) -> u64 {
    held_requests(server, "lp")
}

/// One publish to `n` held requests, as measured.
struct Fanned {
    /// From sending the publish to the last answer's arrival.
    last: Duration,
    /// CPU the server used from the publish until every connection was closed: load on the
    /// box stretches `last`, much less this.
    cpu: Duration,
}

/// Hold `n` on `channel`, publish once, check every answer.
fn fan_out(server: &Server, channel: &str, n: usize) -> Result<Fanned, String> {
    let socket = server.path("lp.sock");
    let batch =
        open_batch(&socket, &subscribe_request(channel), n).map_err(|e| format!("connect: {e}"))?;
    wait_for(&format!("{n} held"), Duration::from_secs(120), || {
        held(server) == n as u64
    })?;
    if batch.answered() > 0 {
        return Err(format!("{} answered before the publish", batch.answered()));
    }
    let body = format!("to the {n} on {channel}");
    let cpu_before = cpu_ns(server.pid()).map_err(|e| e.to_string())?;
    let sent = publish(&socket, channel, &body, n)?;
    let answers = batch.finish(Duration::from_secs(60))?;
    let cpu_after = cpu_ns(server.pid()).map_err(|e| e.to_string())?;
    Ok(Fanned {
        last: check_answers(&answers, &body, sent)?,
        cpu: Duration::from_nanos(cpu_after - cpu_before),
    })
}

/// `n` pings and `n` hellos, alternated, one at a time, a fresh connection each, bodies checked.
fn normal_requests(server: &Server, n: usize) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    let ping = raw::request("/ping", "", b"", false);
    let hello = raw::request("/hello", "", b"", false);
    let (lp, hp) = (server.path("lp.sock"), server.path("hello.sock"));
    let (mut pings, mut hellos) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        for (socket, request, expect, times) in [
            (&lp, &ping, "pong", &mut pings),
            (&hp, &hello, "Hello from fastpm", &mut hellos),
        ] {
            let start = Instant::now();
            let mut s = raw::connect_unix(socket);
            s.write_all(request).map_err(|e| format!("send: {e}"))?;
            let r = raw::read_response(&mut s).ok_or("closed unanswered")?;
            times.push(start.elapsed());
            if !r.body().starts_with(expect) {
                return Err(format!("expected {expect:?}, got {:?}", r.text()));
            }
        }
    }
    Ok((pings, hellos))
}

/// One round of (a) and (b) at `size` held.
struct HoldRound {
    pss_empty_kib: u64,
    pss_held_kib: u64,
    /// From the first connect to the status saying all are held.
    hold_time: Duration,
    empty: (Vec<Duration>, Vec<Duration>),
    loaded: (Vec<Duration>, Vec<Duration>),
    fan_out: Duration,
}

impl HoldRound {
    fn bytes_per_held(&self, size: usize) -> f64 {
        (self.pss_held_kib as f64 - self.pss_empty_kib as f64) * 1024.0 / size as f64
    }
}

fn hold_round(size: usize, normal: usize) -> Result<HoldRound, String> {
    let server = Server::start(&config(size.max(WARM_UP)));
    fan_out(&server, "warm-up", WARM_UP)?;
    wait_for("0 held", Duration::from_secs(10), || held(&server) == 0)?;
    let empty = normal_requests(&server, normal)?;
    std::thread::sleep(Duration::from_millis(300));
    let pss_empty_kib = tree_pss_kib(server.pid()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let batch = open_batch(&server.path("lp.sock"), &subscribe_request("room"), size)
        .map_err(|e| format!("connect: {e}"))?;
    wait_for("all held", Duration::from_secs(120), || {
        held(&server) == size as u64
    })?;
    let hold_time = start.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let pss_held_kib = tree_pss_kib(server.pid()).map_err(|e| e.to_string())?;
    let loaded = normal_requests(&server, normal)?;
    if batch.answered() > 0 {
        return Err(format!("{} answered before the publish", batch.answered()));
    }
    let sent = publish(&server.path("lp.sock"), "room", "to the room", size)?;
    let fan_out = check_answers(&batch.finish(Duration::from_secs(60))?, "to the room", sent)?;
    Ok(HoldRound {
        pss_empty_kib,
        pss_held_kib,
        hold_time,
        empty,
        loaded,
        fan_out,
    })
}

/// (d) at `size` held: the master's CPU per second of wall clock, idle and with pings flowing.
struct IdleRound {
    idle_ms_per_s: f64,
    busy_ms_per_s: f64,
    pings_per_s: f64,
}

fn idle_round(size: usize, secs: u64) -> Result<IdleRound, String> {
    let server = Server::start(&config(size.max(WARM_UP)));
    let socket = server.path("lp.sock");
    let batch = open_batch(&socket, &subscribe_request("room"), size)
        .map_err(|e| format!("connect: {e}"))?;
    wait_for(&format!("{size} held"), Duration::from_secs(120), || {
        held(&server) == size as u64
    })?;
    // Settle: the last status request and the holder's once-a-second channel count behind us.
    std::thread::sleep(Duration::from_secs(1));
    let window = Duration::from_secs(secs);
    let cpu_per_s = |f: &mut dyn FnMut() -> Result<(), String>| -> Result<f64, String> {
        let (t0, c0) = (
            Instant::now(),
            cpu_ns(server.pid()).map_err(|e| e.to_string())?,
        );
        f()?;
        let c1 = cpu_ns(server.pid()).map_err(|e| e.to_string())?;
        Ok((c1 - c0) as f64 / 1e6 / t0.elapsed().as_secs_f64())
    };
    let idle_ms_per_s = cpu_per_s(&mut || {
        std::thread::sleep(window);
        Ok(())
    })?;
    let mut sent = 0;
    let started = Instant::now();
    let busy_ms_per_s = cpu_per_s(&mut || {
        let times = client::pings(
            &socket,
            window.as_millis() as usize,
            Duration::from_millis(1),
        )?;
        sent = times.len();
        Ok(())
    })?;
    let pings_per_s = sent as f64 / started.elapsed().as_secs_f64();
    if batch.answered() > 0 {
        return Err(format!("{} answered while held", batch.answered()));
    }
    Ok(IdleRound {
        idle_ms_per_s,
        busy_ms_per_s,
        pings_per_s,
    })
}

/// The floor for (c): `n` connections held by another process running this program
/// ([`floor_child`]: a process of its own, like fastpm's master, so that neither side's
/// descriptors count against the other's limit), answered with a canned response and closed
/// from one thread when told (every answer written, then every connection closed). Returns
/// command → last answer.
fn floor_fan_out(dir: &Path, round: usize, n: usize) -> Result<Fanned, String> {
    let path = dir.join(format!("floor-{round}-{n}.sock"));
    let body = format!("floor-{n}"); // one word: the spec is split on spaces
    let mut child = std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(FLOOR_CHILD, format!("{n} {body} {}", path.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("start the floor: {e}"))?;
    let mut said = std::io::BufReader::new(child.stdout.take().expect("piped"));
    // The floor's next line, which must start with `word`; the rest of it.
    let mut expect = |word: &str| -> Result<String, String> {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut said, &mut line).map_err(|e| e.to_string())?;
        match line.trim().strip_prefix(word) {
            Some(rest) => Ok(rest.trim().to_string()),
            None => Err(format!("the floor said {line:?}, not {word:?}")),
        }
    };
    expect("listening")?;
    let batch =
        open_batch(&path, &subscribe_request("floor"), n).map_err(|e| format!("connect: {e}"))?;
    expect("held")?;
    let mut go = child.stdin.take().expect("piped");
    let sent = Instant::now();
    go.write_all(b"go\n").map_err(|e| e.to_string())?;
    let answers = batch.finish(Duration::from_secs(60))?;
    let cpu = expect("cpu")?;
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the floor exited {status}"));
    }
    Ok(Fanned {
        last: check_answers(&answers, &body, sent)?,
        cpu: Duration::from_nanos(cpu.parse().map_err(|_| format!("floor cpu {cpu:?}"))?),
    })
}

/// The environment variable that makes this program the floor server: `N BODY PATH`.
const FLOOR_CHILD: &str = "HELD_FLOOR_CHILD";

/// The floor server: bind `PATH`, say `listening`; accept `N` connections and read each one's
/// request, say `held`; on a line from stdin, answer each with `BODY`, then close them all.
fn floor_child(spec: &str) -> Result<(), String> {
    let mut words = spec.splitn(3, ' ');
    let (Some(n), Some(body), Some(path)) = (words.next(), words.next(), words.next()) else {
        return Err(format!("{FLOOR_CHILD}={spec:?}: N BODY PATH"));
    };
    let n: usize = n.parse().map_err(|_| format!("{FLOOR_CHILD}: N {n:?}"))?;
    raise_nofile((n + SPARE_FDS) as u64);
    let listener = UnixListener::bind(path).map_err(|e| format!("bind {path}: {e}"))?;
    let mut canned = raw::record(
        raw::STDOUT,
        1,
        format!("Content-Type: text/plain\r\n\r\n{body}").as_bytes(),
    );
    canned.extend(raw::record(raw::STDOUT, 1, b""));
    canned.extend(raw::record(raw::END_REQUEST, 1, &[0; 8]));
    let end_of_request = raw::record(raw::STDIN, 1, b"");
    println!("listening");
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.ends_with(&end_of_request) {
            let got = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if got == 0 {
                return Err("a client left before its request".into());
            }
            request.extend_from_slice(&buf[..got]);
        }
        conns.push(s);
    }
    println!("held");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let me = std::process::id() as i32;
    let cpu_before = cpu_ns(me).map_err(|e| e.to_string())?;
    // Every answer first, then the closes: the last answer waits for no close.
    for s in conns.iter_mut() {
        s.write_all(&canned).map_err(|e| format!("write: {e}"))?;
    }
    drop(conns);
    println!(
        "cpu {}",
        cpu_ns(me).map_err(|e| e.to_string())? - cpu_before
    );
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// (min, median, max) of `values` (median: the middle one, the upper of two).
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if let Ok(spec) = std::env::var(FLOOR_CHILD) {
        if let Err(e) = floor_child(&spec) {
            eprintln!("floor: {e}");
            std::process::exit(1);
        }
        return;
    }
    let settings = Settings::from_env();
    let needed = settings
        .sizes
        .iter()
        .chain(&settings.fanout_sizes)
        .chain(&settings.idle_sizes)
        .max()
        .copied()
        .unwrap_or(0)
        + SPARE_FDS;
    let nofile = raise_nofile(needed as u64) as usize;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").unwrap_or_default();
    let fits = |size: usize| size + SPARE_FDS <= nofile;
    let largest = (nofile.saturating_sub(SPARE_FDS) / 1000) * 1000;
    let mut sizes: Vec<usize> = settings
        .sizes
        .iter()
        .copied()
        .filter(|s| fits(*s))
        .collect();
    let skipped: Vec<usize> = settings
        .sizes
        .iter()
        .copied()
        .filter(|s| !fits(*s))
        .collect();
    if !skipped.is_empty() && !sizes.contains(&largest) && largest > 0 {
        sizes.push(largest);
    }
    let mut failed = false;
    let mut out = String::new();
    let load_before = load_average();
    let _ = writeln!(
        out,
        "held-requests bench: {} CPUs, RLIMIT_NOFILE {nofile} (fs.nr_open {}), load average {load_before} at start\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        nr_open.trim()
    );
    for size in &skipped {
        let _ = writeln!(
            out,
            "not run: {size} held (needs {} descriptors in this process and in fastpm's master; the hard limit is {nofile} and this process cannot raise it); ran {largest} instead\n",
            size + SPARE_FDS
        );
    }

    // (a) and (b).
    let _ = writeln!(out, "| held | rounds | bytes per held request (PSS, master + 4 workers), median (min–max) | all held after | ping p50 / p99, 0 held → N held | hello p50 / p99, 0 held → N held | p99 ratio held ÷ empty: ping, hello | publish → last answered |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for &size in &sizes {
        let mut rounds = Vec::new();
        for round in 0..settings.rounds {
            match hold_round(size, settings.normal_requests) {
                Ok(r) => {
                    eprintln!(
                        "held {size} round {round}: {:.0} B/held, all held after {:.0} ms, ping p99 {:.2} → {:.2} ms, hello p99 {:.2} → {:.2} ms, publish → last {:.1} ms",
                        r.bytes_per_held(size),
                        ms(r.hold_time),
                        ms(percentile(&r.empty.0, 99.0)),
                        ms(percentile(&r.loaded.0, 99.0)),
                        ms(percentile(&r.empty.1, 99.0)),
                        ms(percentile(&r.loaded.1, 99.0)),
                        ms(r.fan_out)
                    );
                    rounds.push(r);
                }
                Err(e) => {
                    eprintln!("held {size} round {round}: FAILED: {e}");
                    failed = true;
                }
            }
        }
        if rounds.is_empty() {
            let _ = writeln!(out, "| {size} | 0 | failed | | | | | |");
            continue;
        }
        let per: Vec<f64> = rounds.iter().map(|r| r.bytes_per_held(size)).collect();
        let (lo, mid, hi) = spread(&per);
        let hold: Vec<f64> = rounds.iter().map(|r| ms(r.hold_time)).collect();
        let stat =
            |f: &dyn Fn(&HoldRound) -> f64| spread(&rounds.iter().map(f).collect::<Vec<_>>()).1;
        let p = |v: &Vec<Duration>, q| ms(percentile(v, q));
        let ping = (
            stat(&|r| p(&r.empty.0, 50.0)),
            stat(&|r| p(&r.empty.0, 99.0)),
            stat(&|r| p(&r.loaded.0, 50.0)),
            stat(&|r| p(&r.loaded.0, 99.0)),
        );
        let hello = (
            stat(&|r| p(&r.empty.1, 50.0)),
            stat(&|r| p(&r.empty.1, 99.0)),
            stat(&|r| p(&r.loaded.1, 50.0)),
            stat(&|r| p(&r.loaded.1, 99.0)),
        );
        let ratio_ping = spread(
            &rounds
                .iter()
                .map(|r| p(&r.loaded.0, 99.0) / p(&r.empty.0, 99.0))
                .collect::<Vec<_>>(),
        );
        let ratio_hello = spread(
            &rounds
                .iter()
                .map(|r| p(&r.loaded.1, 99.0) / p(&r.empty.1, 99.0))
                .collect::<Vec<_>>(),
        );
        let fan = spread(&rounds.iter().map(|r| ms(r.fan_out)).collect::<Vec<_>>());
        let _ = writeln!(
            out,
            "| {size} | {} | **{mid:.0}** ({lo:.0}–{hi:.0}) | {:.0} ms | {:.2} / {:.2} → {:.2} / {:.2} ms | {:.2} / {:.2} → {:.2} / {:.2} ms | {:.2}× ({:.2}–{:.2}), {:.2}× ({:.2}–{:.2}) | {:.1} ms ({:.1}–{:.1}) |",
            rounds.len(),
            spread(&hold).1,
            ping.0, ping.1, ping.2, ping.3,
            hello.0, hello.1, hello.2, hello.3,
            ratio_ping.1, ratio_ping.0, ratio_ping.2,
            ratio_hello.1, ratio_hello.0, ratio_hello.2,
            fan.1, fan.0, fan.2,
        );
    }

    // (d): a fresh fastpm per size, one round each (the figure is steady: CPU time, not wall).
    if !settings.idle_sizes.is_empty() {
        let _ = writeln!(out, "\n| held | master CPU, idle (ms per s) | master CPU, a ping every ms (ms per s) | pings per s |");
        let _ = writeln!(out, "|---|---|---|---|");
    }
    for &size in &settings.idle_sizes {
        let size = if fits(size) { size } else { largest };
        match idle_round(size, settings.idle_secs) {
            Ok(r) => {
                eprintln!(
                    "idle {size} held: master {:.1} ms/s idle, {:.1} ms/s with {:.0} pings/s",
                    r.idle_ms_per_s, r.busy_ms_per_s, r.pings_per_s
                );
                let _ = writeln!(
                    out,
                    "| {size} | **{:.1}** | **{:.1}** | {:.0} |",
                    r.idle_ms_per_s, r.busy_ms_per_s, r.pings_per_s
                );
            }
            Err(e) => {
                eprintln!("idle {size} held: FAILED: {e}");
                let _ = writeln!(out, "| {size} | failed | | |");
                failed = true;
            }
        }
    }

    // (c): one fastpm for every round and size; the floor in a process of its own.
    let _ = writeln!(out, "\n| subscribers | rounds | fastpm: publish → last answered, median (min–max) | floor: one thread, one write each (closes after the last) | fastpm ÷ floor, time (median of rounds) | CPU per answer: fastpm's master (all threads), median (min–max) | CPU per answer: floor | fastpm ÷ floor, CPU |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let fan_max = settings
        .fanout_sizes
        .iter()
        .copied()
        .filter(|s| fits(*s))
        .max()
        .unwrap_or(1);
    let server = Server::start(&config(fan_max));
    let floor_dir = tempfile::tempdir().expect("a directory for the floor's sockets");
    for &n in &settings.fanout_sizes {
        if !fits(n) {
            let _ = writeln!(out, "| {n} | 0 | not run: descriptor limit {nofile} | | |");
            continue;
        }
        let mut rounds: Vec<(Fanned, Fanned)> = Vec::new();
        for round in 0..settings.fanout_rounds {
            let ours = fan_out(&server, &format!("c{round}-{n}"), n);
            let base = floor_fan_out(floor_dir.path(), round, n);
            match (ours, base) {
                (Ok(a), Ok(b)) => {
                    eprintln!(
                        "fan-out {n} round {round}: fastpm {:.2} ms ({:.1} ms CPU), floor {:.2} ms ({:.1} ms CPU)",
                        ms(a.last),
                        ms(a.cpu),
                        ms(b.last),
                        ms(b.cpu)
                    );
                    rounds.push((a, b));
                }
                (a, b) => {
                    eprintln!(
                        "fan-out {n} round {round}: FAILED: fastpm {:?}, floor {:?}",
                        a.err(),
                        b.err()
                    );
                    failed = true;
                }
            }
        }
        if rounds.is_empty() {
            let _ = writeln!(out, "| {n} | 0 | failed | | | | | |");
            continue;
        }
        let of = |f: &dyn Fn(&(Fanned, Fanned)) -> f64| {
            spread(&rounds.iter().map(f).collect::<Vec<_>>())
        };
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        let (a, b, r) = (
            of(&|x| ms(x.0.last)),
            of(&|x| ms(x.1.last)),
            of(&|x| ms(x.0.last) / ms(x.1.last)),
        );
        let (ca, cb, cr) = (
            of(&|x| per(x.0.cpu)),
            of(&|x| per(x.1.cpu)),
            of(&|x| x.0.cpu.as_secs_f64() / x.1.cpu.as_secs_f64()),
        );
        // Per answer only where answers dominate: for a handful, fastpm's figure is the
        // publish request's own trip through a worker, and the floor's is below the clock.
        let cpu = match n >= MIN_FOR_CPU {
            true => format!(
                "**{:.1} µs** ({:.1}–{:.1}) | {:.1} µs ({:.1}–{:.1}) | {:.1}× ({:.1}–{:.1})",
                ca.1, ca.0, ca.2, cb.1, cb.0, cb.2, cr.1, cr.0, cr.2
            ),
            false => "— | — | —".to_string(),
        };
        let _ = writeln!(
            out,
            "| {n} | {} | **{:.2} ms** ({:.2}–{:.2}) | {:.2} ms ({:.2}–{:.2}) | {:.1}× ({:.1}–{:.1}) | {cpu} |",
            rounds.len(), a.1, a.0, a.2, b.1, b.0, b.2, r.1, r.0, r.2,
        );
    }
    drop(server);
    let _ = writeln!(out, "\nload average {} at the end", load_average());
    print!("{out}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-held.md");
    if let Err(e) = std::fs::write(&path, &out) {
        eprintln!("cannot write {}: {e}", path.display());
    }
    if failed {
        eprintln!("some rounds failed (above)");
        std::process::exit(1);
    }
}
