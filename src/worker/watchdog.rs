//! `request_timeout` for a worker process: a watchdog thread looks at the worker's own
//! scoreboard slot; when a request has run longer than the timeout it answers that request
//! `Status: 504` on the client connection, logs it, and ends the process. The master sees the
//! exit code [`REQUEST_TIMEOUT_EXIT`], counts it as a stop it wanted (not a crash) and starts a
//! fresh worker. Only the timed-out request is affected: the worker serves one connection at a
//! time.
//!
//! The 504 goes out only if nothing of the answer was sent yet, with the request's own id: the
//! main thread claims the connection before its first response byte ([`may_write`]), the
//! watchdog claims it before the 504, and whoever comes second gives way. When the answer had
//! begun, the watchdog shuts the connection instead: the client sees a cut answer (nginx: 502),
//! never a 504 spliced into the middle of a page.
//!
//! Why the process ends: a request stuck in app code cannot be interrupted safely; a process
//! can be replaced. (Thread workers cannot do this; the php app enforces the timeout itself by
//! killing its php-cgi child.)

use std::io::Write;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU8, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed,
    Ordering::Release,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fastcgi::{encode_end_request, encode_stream, ProtocolStatus, RecordType};
use crate::listen::Stream;
use crate::overload::monotonic_us;
use crate::scoreboard::{Scoreboard, WorkerState};

/// Exit status of a worker ended by its watchdog (EX_TEMPFAIL).
pub const REQUEST_TIMEOUT_EXIT: i32 = 75;

/// How often the watchdog looks.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// A copy of the connection being served, for the 504 (only while a watchdog runs).
static CURRENT: Mutex<Option<Stream>> = Mutex::new(None);
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Who owns the current request's answer, between the worker and its watchdog.
static CLAIM: AnswerClaim = AnswerClaim::new();

/// No byte of the current request's answer has been written: the watchdog may answer.
const NOTHING_SENT: u8 = 0;
/// The worker began writing the answer: the watchdog may only cut the connection.
const WORKER_SENDING: u8 = 1;
/// The watchdog wrote (or is writing) the 504: the worker must write nothing more.
const WATCHDOG_ANSWERED: u8 = 2;

/// The current request's id (its 504 must carry it) and who owns its answer.
struct AnswerClaim {
    request_id: AtomicU32,
    owner: AtomicU8,
}

impl AnswerClaim {
    const fn new() -> Self {
        Self {
            request_id: AtomicU32::new(1),
            owner: AtomicU8::new(NOTHING_SENT),
        }
    }

    fn request_started(&self, request_id: u16) {
        self.request_id.store(u32::from(request_id), Relaxed);
        self.owner.store(NOTHING_SENT, Release);
    }

    /// The worker's claim: true while the answer is (or becomes) the worker's.
    fn worker_may_write(&self) -> bool {
        match self
            .owner
            .compare_exchange(NOTHING_SENT, WORKER_SENDING, AcqRel, Acquire)
        {
            Ok(_) => true,
            Err(owner) => owner == WORKER_SENDING,
        }
    }

    /// The watchdog's claim: the id to answer 504 with, or `None` when the worker already
    /// began the answer.
    fn watchdog_claim(&self) -> Option<u16> {
        self.owner
            .compare_exchange(NOTHING_SENT, WATCHDOG_ANSWERED, AcqRel, Acquire)
            .ok()
            .map(|_| self.request_id.load(Relaxed) as u16)
    }
}

/// A request with id `request_id` starts on the armed connection. No-op without a watchdog.
pub fn request_started(request_id: u16) {
    if ENABLED.load(Relaxed) {
        CLAIM.request_started(request_id);
    }
}

/// Called before every write to the client: `false` once the watchdog has answered the current
/// request (the worker must not write into its 504). The first call of a request claims the
/// answer for the worker. Without a watchdog: one relaxed load.
pub fn may_write() -> bool {
    !ENABLED.load(Relaxed) || CLAIM.worker_may_write()
}

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
        .spawn(move || {
            crate::sys::fork::keep_signals_off_this_thread();
            loop {
                std::thread::sleep(CHECK_EVERY);
                let slot = &scoreboard.slots(pool)[slot];
                if slot.state() != WorkerState::Running {
                    continue;
                }
                let running = Duration::from_micros(
                    monotonic_us().saturating_sub(slot.request_start_us.load(Relaxed)),
                );
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
                crate::sys::fork::exit_at_once(REQUEST_TIMEOUT_EXIT);
            }
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
    let Some(id) = CLAIM.watchdog_claim() else {
        // Part of the answer is out: a 504 now would land in the middle of it. Cut the
        // connection so the client knows the answer is incomplete.
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    };
    let mut out = Vec::with_capacity(body.len() + 32);
    encode_stream(&mut out, RecordType::Stdout, id, body.as_bytes());
    encode_end_request(&mut out, id, 0, ProtocolStatus::RequestComplete);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&out);
    // The request's bytes may still be in the socket (`FrontConn::peeked`): the process exits
    // next, and closing with them unread would end the client's stream with a reset after
    // the 504. Take what is there (this process serves nothing more), without waiting.
    if stream.set_nonblocking(true).is_ok() {
        let mut buf = [0u8; 4096];
        let mut reader: &Stream = stream;
        for _ in 0..256 {
            if !matches!(std::io::Read::read(&mut reader, &mut buf), Ok(n) if n > 0) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whoever_claims_the_answer_first_owns_it() {
        let claim = AnswerClaim::new();
        // Nothing written: the watchdog answers, with the request's own id; the worker may
        // write nothing after it.
        claim.request_started(9);
        assert_eq!(claim.watchdog_claim(), Some(9));
        assert!(!claim.worker_may_write());
        // The worker wrote first: the watchdog must not answer (it cuts the connection).
        claim.request_started(3);
        assert!(claim.worker_may_write());
        assert!(
            claim.worker_may_write(),
            "the worker keeps writing its own answer"
        );
        assert_eq!(claim.watchdog_claim(), None);
        // The next request on the connection starts clean.
        claim.request_started(4);
        assert_eq!(claim.watchdog_claim(), Some(4));
    }
}
