//! `cargo bench --bench ping`: fastpm against php-fpm and against a floor server, side by side in
//! one run (DESIGN.md §6). Four scenarios, same worker count (4), one connection per request over
//! unix sockets, closed-loop clients:
//!
//! - a: php-fpm 8.2 answering `ping.path`;
//! - b: fastpm answering `ping_path` (the worker answers without the app) — target b/a ≥ 1.3;
//! - c: the floor server written here (threads blocking in accept, canned answer), by default in
//!   a child process running this binary so that it does not share a process with the clients;
//! - d: fastpm's built-in `hello` app — target d/c ≥ 0.9.
//!
//! Rounds of a, b, c, d (rotated each round) are repeated and the medians reported. A server
//! that cannot start is reported as "not run" and the others are still measured; the exit status
//! is then 1. Knobs and method: docs/BENCHMARKS.md.

#[path = "support/cleanup.rs"]
mod cleanup;
#[path = "support/client.rs"]
mod client;
#[path = "support/fastpm.rs"]
mod fastpm;
#[path = "support/fcgi.rs"]
mod fcgi;
#[path = "support/floor.rs"]
mod floor;
#[path = "support/load.rs"]
mod load;
#[path = "support/php_fpm.rs"]
mod php_fpm;
#[path = "support/process.rs"]
mod process;
#[path = "support/report.rs"]
mod report;
#[path = "support/settings.rs"]
mod settings;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use client::Scratch;
use fcgi::Expect;
use load::Measurement;
use process::ServerProcess;
use report::{Outcome, RatioSpec, RunInfo};
use settings::{FloorPlacement, Settings};

/// Workers per server: the issue fixes 4 for all three servers.
const WORKERS: usize = 4;
/// The classic listen backlog, the same for all three servers.
const BACKLOG: i32 = 511;
/// How long a server gets to answer its first request after start.
const STARTUP_LIMIT: Duration = Duration::from_secs(10);
const PING_BODY: Expect = Expect::Exact(b"pong");
/// The floor answers exactly "Hello"; fastpm's `hello` app must at least start with it.
const HELLO_BODY: Expect = Expect::Prefix(b"Hello");
const FLOOR_BODY: &[u8] = b"Hello";
/// Set (to the socket path) on the child that serves as the floor in `FloorPlacement::Process`.
const FLOOR_CHILD_ENV: &str = "FASTPM_BENCH_FLOOR_CHILD";

/// One server + request pair measured in every round.
struct Scenario {
    key: char,
    label: String,
    socket: PathBuf,
    request: Vec<u8>,
    expect: Expect,
    /// Filled round by round, or why the scenario cannot run.
    result: Result<Vec<Measurement>, String>,
}

fn main() -> ExitCode {
    if let Some(socket) = std::env::var_os(FLOOR_CHILD_ENV) {
        let err = floor::serve_until_killed(Path::new(&socket), WORKERS, BACKLOG, FLOOR_BODY);
        eprintln!(
            "floor: cannot serve on {}: {err}",
            Path::new(&socket).display()
        );
        return ExitCode::from(1);
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(why) => {
            eprintln!("bench: {why}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = cleanup::install_signal_watcher() {
        eprintln!("bench: cannot watch for SIGINT/SIGTERM: {err}");
        return ExitCode::from(1);
    }
    let dir = match tempfile::Builder::new().prefix("fastpm-bench-").tempdir() {
        Ok(dir) => dir,
        Err(err) => {
            eprintln!("bench: cannot create a temporary directory: {err}");
            return ExitCode::from(1);
        }
    };
    cleanup::track_dir(dir.path().to_path_buf());
    let code = run(&settings, dir.path());
    drop(dir);
    code
}

/// Starts the servers, measures, reports. Every server is stopped when this returns or panics
/// (their guards live in this frame).
fn run(settings: &Settings, dir: &Path) -> ExitCode {
    let docroot = dir.display().to_string();
    let ping_request = fcgi::encode_request(&fcgi::nginx_get_params("/ping", &docroot));
    let hello_request = fcgi::encode_request(&fcgi::nginx_get_params("/hello", &docroot));

    let php_socket = dir.join("php-fpm.sock");
    let (_php_fpm, php_ready) = start_server(
        php_fpm::start(dir, &php_socket, WORKERS, BACKLOG),
        &php_socket,
        &ping_request,
        PING_BODY,
    );

    let fastpm_socket = dir.join("fastpm.sock");
    let fastpm_binary = fastpm::locate();
    let (_fastpm, fastpm_ready) = match &fastpm_binary {
        Ok(binary) => start_server(
            fastpm::start(binary, dir, &fastpm_socket, WORKERS, BACKLOG, settings.accept_lock),
            &fastpm_socket,
            &ping_request,
            PING_BODY,
        ),
        Err(why) => (None, Err(why.clone())),
    };
    for (name, ready) in [("php-fpm", &php_ready), ("fastpm", &fastpm_ready)] {
        if let Err(why) = ready {
            eprintln!("bench: {name} NOT RUN: {why}");
        }
    }

    let floor_socket = dir.join("floor.sock");
    let (_floor_process, _floor_inline, floor_ready) =
        start_floor(settings.floor, dir, &floor_socket, &hello_request);
    if let Err(why) = &floor_ready {
        eprintln!("bench: floor NOT RUN: {why}");
    }

    let mut scenarios = vec![
        Scenario {
            key: 'a',
            label: "php-fpm `ping.path` (/ping)".into(),
            socket: php_socket,
            request: ping_request.clone(),
            expect: PING_BODY,
            result: php_ready.map(|()| Vec::new()),
        },
        Scenario {
            key: 'b',
            label: format!("fastpm `ping_path` (/ping), accept_lock = {}", settings.accept_lock),
            socket: fastpm_socket.clone(),
            request: ping_request,
            expect: PING_BODY,
            result: fastpm_ready.clone().map(|()| Vec::new()),
        },
        Scenario {
            key: 'c',
            label: match settings.floor {
                FloorPlacement::Process => "floor server (/hello), own process".into(),
                FloorPlacement::Inline => "floor server (/hello), inside the bench process".into(),
            },
            socket: floor_socket,
            request: hello_request.clone(),
            expect: HELLO_BODY,
            result: floor_ready.map(|()| Vec::new()),
        },
        Scenario {
            key: 'd',
            label: format!("fastpm `hello` app (/hello), accept_lock = {}", settings.accept_lock),
            socket: fastpm_socket,
            request: hello_request,
            expect: HELLO_BODY,
            result: fastpm_ready.map(|()| Vec::new()),
        },
    ];
    for scenario in &mut scenarios {
        if scenario.result.is_ok() {
            if let Err(why) = probe(scenario, settings.spec.timeout) {
                eprintln!("bench: scenario {} NOT RUN: {why}", scenario.key);
                scenario.result = Err(why);
            }
        }
    }

    let runnable = scenarios.iter().filter(|s| s.result.is_ok()).count();
    eprintln!(
        "bench: {runnable} scenarios × {} rounds × {:.0} s ≈ {:.0} s",
        settings.rounds,
        settings.spec.warmup.as_secs_f64() + settings.spec.duration.as_secs_f64(),
        (runnable * settings.rounds) as f64
            * (settings.spec.warmup + settings.spec.duration).as_secs_f64()
    );
    for round in 0..settings.rounds {
        for offset in 0..scenarios.len() {
            let count = scenarios.len();
            let scenario = &mut scenarios[(round + offset) % count];
            let Ok(rounds) = &mut scenario.result else {
                continue;
            };
            let measured = load::run(
                &scenario.socket,
                &scenario.request,
                scenario.expect,
                settings.spec,
            );
            eprintln!(
                "bench: round {}/{} {} {}: {:.0} req/s, {} errors",
                round + 1,
                settings.rounds,
                scenario.key,
                scenario.label,
                measured.requests_per_sec(),
                measured.errors()
            );
            rounds.push(measured);
        }
    }

    let failed = scenarios.iter().any(|s| match &s.result {
        Ok(rounds) => rounds.iter().any(|m| m.errors() > 0 || m.ok == 0),
        Err(_) => true,
    });
    let info = RunInfo {
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        command: "cargo bench --bench ping".into(),
        clients: settings.spec.clients,
        warmup_secs: settings.spec.warmup.as_secs_f64(),
        secs: settings.spec.duration.as_secs_f64(),
        rounds: settings.rounds,
        workers: WORKERS,
        backlog: BACKLOG,
        machine: machine(),
        php_fpm: php_fpm::version(),
        fastpm: match &fastpm_binary {
            Ok(binary) => format!("{} at commit {}", binary.display(), commit()),
            Err(why) => format!("not available ({why})"),
        },
    };
    let outcomes: Vec<Outcome> = scenarios
        .into_iter()
        .map(|s| Outcome {
            key: s.key,
            label: s.label,
            result: s.result,
        })
        .collect();
    let ratios = [
        RatioSpec {
            name: "fastpm ping ÷ php-fpm ping",
            numerator: 'b',
            denominator: 'a',
            target: 1.3,
        },
        RatioSpec {
            name: "fastpm hello ÷ floor",
            numerator: 'd',
            denominator: 'c',
            target: 0.9,
        },
    ];
    let markdown = report::render(&info, &outcomes, &ratios);
    println!("{markdown}");
    let written = target_dir().join("bench-ping.md");
    match std::fs::write(&written, &markdown) {
        Ok(()) => eprintln!("bench: report written to {}", written.display()),
        Err(err) => eprintln!("bench: cannot write {}: {err}", written.display()),
    }
    if failed {
        eprintln!("bench: FAILED — a scenario did not run or had errors (see the table)");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Waits until a freshly started server answers the ping; keeps the process guard either way so
/// a server that answers late or wrongly is still stopped.
fn start_server(
    started: Result<ServerProcess, String>,
    socket: &Path,
    request: &[u8],
    expect: Expect,
) -> (Option<ServerProcess>, Result<(), String>) {
    match started {
        Ok(mut server) => {
            let ready = server.wait_ready(socket, request, expect, STARTUP_LIMIT);
            (Some(server), ready)
        }
        Err(why) => (None, Err(why)),
    }
}

/// Starts the floor server where `placement` says; exactly one of the two guards is `Some` when
/// it started. In a child process it is this same binary, told by `FLOOR_CHILD_ENV` to serve.
fn start_floor(
    placement: FloorPlacement,
    dir: &Path,
    socket: &Path,
    hello: &[u8],
) -> (
    Option<ServerProcess>,
    Option<floor::FloorServer>,
    Result<(), String>,
) {
    match placement {
        FloorPlacement::Inline => {
            match floor::FloorServer::start(socket, WORKERS, BACKLOG, FLOOR_BODY) {
                Ok(server) => (None, Some(server), Ok(())),
                Err(e) => (
                    None,
                    None,
                    Err(format!(
                        "floor server cannot listen on {}: {e}",
                        socket.display()
                    )),
                ),
            }
        }
        FloorPlacement::Process => {
            let started = std::env::current_exe()
                .map_err(|e| format!("cannot find the bench binary to start the floor: {e}"))
                .and_then(|exe| {
                    let mut command = Command::new(exe);
                    command.env(FLOOR_CHILD_ENV, socket);
                    ServerProcess::spawn("floor", command, &dir.join("floor.log"))
                        .map_err(|e| format!("cannot start the floor process: {e}"))
                });
            let (process, ready) = start_server(started, socket, hello, HELLO_BODY);
            (process, None, ready)
        }
    }
}

/// One request before measuring, so a scenario that cannot succeed is reported as such instead
/// of as thousands of errors.
fn probe(scenario: &Scenario, timeout: Duration) -> Result<(), String> {
    let mut scratch = Scratch::default();
    client::request(
        &scenario.socket,
        &scenario.request,
        scenario.expect,
        timeout,
        &mut scratch,
    )
    .map_err(|failure| {
        let shown = scratch.stdout.len().min(300);
        format!(
            "probe request failed: {failure} (expected body {:?}, response {:?})",
            scenario.expect,
            String::from_utf8_lossy(&scratch.stdout[..shown])
        )
    })
}

/// `target/` of this build: the bench runs as `target/<profile>/deps/ping-<hash>`.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn commit() -> String {
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    let head = command_line("git", &["-C", manifest_dir, "rev-parse", "--short", "HEAD"]);
    let dirty = !command_line("git", &["-C", manifest_dir, "status", "--porcelain"]).is_empty();
    if dirty && head != "unknown" {
        format!("{head} (uncommitted changes)")
    } else {
        head
    }
}

/// CPU count, model and kernel: the context that makes absolute numbers comparable (barely).
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{cpus} CPUs ({model}), Linux {kernel}")
}
