//! The bench's knobs, read from the environment (`cargo bench` passes no arguments of ours):
//! `BENCH_CLIENTS`, `BENCH_SECS`, `BENCH_WARMUP_SECS`, `BENCH_ROUNDS`, `BENCH_TIMEOUT_MS`,
//! `BENCH_FLOOR`, `BENCH_ACCEPT_LOCK`.

use std::env;
use std::str::FromStr;
use std::time::Duration;

use crate::load::LoadSpec;

/// Where the floor server runs (`BENCH_FLOOR=process|inline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorPlacement {
    /// A child process running this bench binary in floor mode: its threads share neither the
    /// file-descriptor table nor the process with the client threads, like php-fpm's and
    /// fastpm's workers. The default.
    Process,
    /// Threads inside the bench process, next to the client threads.
    Inline,
}

pub struct Settings {
    /// The load applied to each scenario in each round.
    pub spec: LoadSpec,
    /// How many times every scenario is measured; the report gives medians.
    pub rounds: usize,
    pub floor: FloorPlacement,
    /// fastpm's `accept_lock` for the run (`BENCH_ACCEPT_LOCK`, default `none`: the floor server
    /// has no lock either — its threads block in accept() and the kernel wakes one).
    pub accept_lock: &'static str,
}

/// Reads `name`, or `default` when unset; a value that does not parse or breaks `valid` is an
/// error naming the variable.
fn knob<T: FromStr + Copy>(name: &str, default: T, valid: fn(T) -> bool) -> Result<T, String> {
    let value = match env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{name}={text:?} is not a valid number"))?,
        Err(env::VarError::NotPresent) => default,
        Err(env::VarError::NotUnicode(_)) => return Err(format!("{name} is not UTF-8")),
    };
    if valid(value) {
        Ok(value)
    } else {
        Err(format!("{name} is out of range"))
    }
}

impl Settings {
    pub fn from_env() -> Result<Settings, String> {
        let clients = knob("BENCH_CLIENTS", 16usize, |n| (1..=1024).contains(&n))?;
        let secs = knob("BENCH_SECS", 5.0f64, |s| s > 0.0 && s <= 600.0)?;
        let warmup = knob("BENCH_WARMUP_SECS", 1.0f64, |s| (0.0..=60.0).contains(&s))?;
        let rounds = knob("BENCH_ROUNDS", 3usize, |n| (1..=50).contains(&n))?;
        let timeout_ms = knob("BENCH_TIMEOUT_MS", 2000u64, |ms| (1..=60_000).contains(&ms))?;
        let floor = match env::var("BENCH_FLOOR").as_deref() {
            Err(env::VarError::NotPresent) | Ok("process") => FloorPlacement::Process,
            Ok("inline") => FloorPlacement::Inline,
            Ok(other) => return Err(format!("BENCH_FLOOR={other:?}: expected process or inline")),
            Err(env::VarError::NotUnicode(_)) => return Err("BENCH_FLOOR is not UTF-8".into()),
        };
        let accept_lock = match env::var("BENCH_ACCEPT_LOCK").as_deref() {
            Err(env::VarError::NotPresent) | Ok("none") => "none",
            Ok("mutex") => "mutex",
            Ok(other) => {
                return Err(format!("BENCH_ACCEPT_LOCK={other:?}: expected none or mutex (thread workers)"))
            }
            Err(env::VarError::NotUnicode(_)) => return Err("BENCH_ACCEPT_LOCK is not UTF-8".into()),
        };
        Ok(Settings {
            accept_lock,
            spec: LoadSpec {
                clients,
                warmup: Duration::from_secs_f64(warmup),
                duration: Duration::from_secs_f64(secs),
                timeout: Duration::from_millis(timeout_ms),
            },
            rounds,
            floor,
        })
    }
}
