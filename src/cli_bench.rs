//! `fastpm bench ADDRESS`: the command line of the closed-loop load generator
//! (`fastpm::loadgen`); prints one JSON summary on stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli_request::{apply_overrides, default_params, parse_address};
use fastpm::fastcgi::client::ClientRequest;
use fastpm::loadgen::{self, BenchPlan};

/// Bad `bench` arguments: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchUsageError(String);

/// Run length when neither `-d` nor `-n` is given.
const DEFAULT_SECONDS: f64 = 10.0;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// unix:PATH, IP:PORT or [IPV6]:PORT on loopback (a bare path is taken as a unix socket).
    address: String,
    /// Closed-loop clients (each with one request in flight).
    #[arg(short = 'c', long = "clients", default_value_t = 10)]
    clients: usize,
    /// Run this many seconds (default 10 unless -n is given; with both, whichever ends first).
    #[arg(short = 'd', long = "duration", value_name = "SECS")]
    duration: Option<f64>,
    /// Send this many requests in total.
    #[arg(short = 'n', long = "requests", value_name = "COUNT")]
    count: Option<u64>,
    /// Give up on a request after this long and close its connection (nginx's read timeout).
    #[arg(long = "timeout-ms", value_name = "MS", default_value_t = 60_000)]
    timeout_ms: u64,
    /// Keep connections open between requests (FCGI_KEEP_CONN).
    #[arg(long)]
    keep: bool,
    /// Request path with an optional query string.
    #[arg(long, default_value = "/")]
    path: String,
    /// Extra or overriding param, NAME=VALUE (repeatable).
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Request body from a file (makes the method POST).
    #[arg(long)]
    body: Option<PathBuf>,
    /// After a failed connect (EAGAIN, ECONNREFUSED) or a non-2xx answer, a client pauses this
    /// long before its next request (a user reloading an error page).
    #[arg(long = "error-pause-ms", value_name = "MS", default_value_t = 10)]
    error_pause_ms: u64,
    /// Add a `timeline` to the summary: outcomes per interval of MS since the start (goodput
    /// over time).
    #[arg(long = "timeline-ms", value_name = "MS")]
    timeline_ms: Option<u64>,
}

/// The plan the arguments describe.
fn plan(args: &BenchArgs) -> anyhow::Result<BenchPlan> {
    let address = parse_address(&args.address)?;
    let duration = match (args.duration, args.count) {
        (Some(d), _) if !(d.is_finite() && d > 0.0) => {
            return Err(BenchUsageError(format!("-d {d}: expected seconds > 0")).into())
        }
        (Some(d), _) => Some(Duration::from_secs_f64(d)),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs_f64(DEFAULT_SECONDS)),
    };
    if args.timeline_ms == Some(0) {
        return Err(BenchUsageError("--timeline-ms 0: expected at least 1 ms".into()).into());
    }
    if args.clients == 0 {
        return Err(BenchUsageError("-c 0: expected at least one client".into()).into());
    }
    let body = match &args.body {
        None => Vec::new(),
        Some(p) => {
            std::fs::read(p).with_context(|| format!("cannot read body file {}", p.display()))?
        }
    };
    let mut params = default_params(&args.path, body.len());
    apply_overrides(&mut params, &args.params)?;
    Ok(BenchPlan {
        address,
        clients: args.clients,
        duration,
        count: args.count,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        keep: args.keep,
        request: ClientRequest {
            params: params
                .into_iter()
                .map(|(k, v)| (k.into_bytes(), v.into_bytes()))
                .collect(),
            body,
            keep_conn: args.keep,
        },
        error_pause: Duration::from_millis(args.error_pause_ms),
        timeline: args.timeline_ms.map(Duration::from_millis),
    })
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let plan = plan(&args)?;
    let summary = loadgen::run(&plan).map_err(|e| match e {
        loadgen::PlanError::Spawn(_) => anyhow::Error::new(e),
        other => anyhow::Error::new(BenchUsageError(other.to_string())),
    })?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}
