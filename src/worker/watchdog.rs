//! `request_timeout` for a worker process: a watchdog thread looks at the worker's own
//! scoreboard slot; when a request has run longer than the timeout it answers that request
//! `Status: 504` on the client connection, logs it, and ends the process. The master sees the
//! exit code [`REQUEST_TIMEOUT_EXIT`], counts it as a stop it wanted (not a crash) and starts a
//! fresh worker. Only the timed-out request is affected: the worker serves one connection at a
//! time.
//!
//! Why the process ends: a request stuck in app code cannot be interrupted safely; a process
//! can be replaced. (Thread workers cannot do this; the php app enforces the timeout itself by
//! killing its php-cgi child.)

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fastcgi::{encode_end_request, encode_stream, ProtocolStatus, RecordType};
use crate::listen::Stream;
use crate::scoreboard::{now_us, Scoreboard, WorkerState};

/// Exit status of a worker ended by its watchdog (EX_TEMPFAIL).
pub const REQUEST_TIMEOUT_EXIT: i32 = 75;

/// How often the watchdog looks.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// A copy of the connection being served, for the 504 (only while a watchdog runs).
static CURRENT: Mutex<Option<Stream>> = Mutex::new(None);
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Keeps the connection reachable by the watchdog while it is served.
pub struct Armed;

impl Drop for Armed {
    fn drop(&mut self) {
        if let Ok(mut current) = CURRENT.lock() {
            *current = None;
        }
    }
}

/// Called for each accepted connection: no-op (and no syscall) unless a watchdog runs.
pub fn arm(stream: &Stream) -> Option<Armed> {
    if !ENABLED.load(Relaxed) {
        return None;
    }
    let copy = stream.try_clone().ok()?;
    *CURRENT.lock().ok()? = Some(copy);
    Some(Armed)
}

/// Start the watchdog of this worker process (slot `slot` of pool `pool`).
pub fn spawn(
    scoreboard: Arc<Scoreboard>,
    pool: usize,
    slot: usize,
    timeout: Duration,
    name: String,
) {
    ENABLED.store(true, Relaxed);
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(CHECK_EVERY);
            let slot = &scoreboard.slots(pool)[slot];
            if slot.state() != WorkerState::Running {
                continue;
            }
            let running =
                Duration::from_micros(now_us().saturating_sub(slot.request_start_us.load(Relaxed)));
            if running <= timeout {
                continue;
            }
            let texts = slot.texts();
            tracing::error!(
                pool = %name,
                pid = std::process::id(),
                uri = %texts.uri,
                script = %texts.script,
                running_ms = running.as_millis() as u64,
                "request_timeout ({} ms) exceeded: answering 504 and replacing this worker",
                timeout.as_millis()
            );
            answer_504(timeout);
            std::process::exit(REQUEST_TIMEOUT_EXIT);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the request_timeout watchdog");
    }
}

fn answer_504(timeout: Duration) {
    let Ok(mut current) = CURRENT.lock() else {
        return;
    };
    let Some(stream) = current.as_mut() else {
        return;
    };
    let body = format!(
        "Status: 504 Gateway Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe request ran longer than request_timeout ({} ms).\n",
        timeout.as_millis()
    );
    // nginx and every client seen use request id 1 on a connection without multiplexing.
    let mut out = Vec::with_capacity(body.len() + 32);
    encode_stream(&mut out, RecordType::Stdout, 1, body.as_bytes());
    encode_end_request(&mut out, 1, 0, ProtocolStatus::RequestComplete);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&out);
}
