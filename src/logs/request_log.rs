//! Where a request ends (`worker::request`): its access-log line, and the slow-log line when it
//! ran longer than the pool's `slow_request`.

use std::time::{Duration, SystemTime};

use super::format::AccessRecord;
use super::line::cut;
use super::relay::Route;
use super::response_head::ResponseHead;
use super::slow::slow_line;
use super::state::{emit, state};
use crate::fastcgi::Params;
use crate::sys::rusage::{self, CpuTime};

/// Taken when a request starts: its wall-clock time (`%t`) and, only when the pool's format
/// has `%C`, the CPU counters.
pub struct RequestClock {
    started: SystemTime,
    cpu: Option<CpuTime>,
}

fn cpu_now() -> CpuTime {
    rusage::thread_cpu().plus(rusage::reaped_children_cpu())
}

impl RequestClock {
    pub fn start(pool_index: usize) -> Self {
        let needs_cpu = state()
            .and_then(|s| s.pools.get(pool_index))
            .and_then(|p| p.access.as_ref())
            .is_some_and(|f| f.needs_cpu());
        Self {
            started: SystemTime::now(),
            cpu: needs_cpu.then(cpu_now),
        }
    }
}

/// What is known of a request once it has run.
pub struct Finished<'a> {
    pub pool_index: usize,
    pub pool: &'a str,
    pub params: &'a Params,
    /// The head of the response the app wrote (status, headers).
    pub head: &'a ResponseHead,
    /// Its time in the kernel's accept queue (first request of a connection only).
    pub queue_wait: Option<Duration>,
    pub took: Duration,
}

/// Write the request's access-log line, when its pool has an access log.
pub fn access(clock: &RequestClock, done: &Finished<'_>) {
    let Some(state) = state() else { return };
    let Some(format) = state
        .pools
        .get(done.pool_index)
        .and_then(|p| p.access.as_ref())
    else {
        return;
    };
    let record = AccessRecord {
        pool: done.pool,
        params: done.params,
        head: done.head,
        started: clock.started,
        finished: SystemTime::now(),
        duration: done.took,
        queue_wait: done.queue_wait,
        pid: std::process::id(),
        master_pid: state.master_pid,
        cpu: clock.cpu.map(|start| cpu_now().since(start)),
        memory: format.needs_memory().then(rusage::peak_rss_bytes),
    };
    let mut line = Vec::with_capacity(256);
    format.render(&record, &mut line);
    cut(&mut line, state.log_limit);
    emit(state, Route::Access(done.pool_index), &line);
}

/// A request ran longer than `slow_request`: say so in the error log, and in the pool's
/// `slowlog` when it has one.
pub fn slow_request(done: &Finished<'_>) {
    let param = |name| String::from_utf8_lossy(done.params.get(name).unwrap_or(b"-")).into_owned();
    tracing::warn!(
        pool = %done.pool,
        pid = std::process::id(),
        script = %param("SCRIPT_FILENAME"),
        uri = %param("REQUEST_URI"),
        duration_ms = done.took.as_millis() as u64,
        "slow request"
    );
    let Some(state) = state() else { return };
    if !state.pools.get(done.pool_index).is_some_and(|p| p.slowlog) {
        return;
    }
    let mut line = Vec::with_capacity(256);
    slow_line(
        &mut line,
        SystemTime::now(),
        done.pool,
        std::process::id(),
        done.params,
        done.took,
    );
    cut(&mut line, state.log_limit);
    emit(state, Route::Slow(done.pool_index), &line);
}
