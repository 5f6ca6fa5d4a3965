//! The process's logging state, set once at start: each pool's access format and slow log, the
//! `log_limit`, and where lines go — the master's files (the master itself and its worker
//! threads), or the relay pipe on stderr (a worker process).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::file::OpenError;
use super::format::AccessFormat;
use super::line::DEFAULT_LOG_LIMIT;
use super::master_files::{MasterFiles, Reopened};
use super::relay::{self, Route};
use super::writer::ErrorLogWriter;
use crate::config::Config;

/// Set by the master on a worker process whose stderr is the relay pipe: tagged lines written
/// there reach the files.
pub const RELAY_ENV: &str = "FASTPM_LOG_RELAY";

/// The relay pipe's buffer: room for thousands of lines while the master is briefly busy
/// (a worker blocks only when it is full). The kernel may grant less.
const RELAY_PIPE_BYTES: i32 = 1 << 20;

/// Why the master's logs could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogSetupError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot create the log relay pipe: {0}")]
    Pipe(std::io::Error),
}

/// What one pool logs.
pub(super) struct PoolLog {
    pub access: Option<AccessFormat>,
    pub slowlog: bool,
}

/// Where this process's lines go.
pub(super) enum Output {
    /// The master: its files, written directly (its worker threads too), and the relay that
    /// feeds them from worker processes.
    Master {
        files: Arc<MasterFiles>,
        relay: Mutex<Relay>,
    },
    /// A worker process whose stderr is the master's relay pipe.
    Relayed,
    /// A worker process of a master that relays nothing (no log file was configured when it
    /// started): only stderr.
    Unrelayed,
}

/// The master's end of the relay.
#[derive(Default)]
pub(super) struct Relay {
    /// Duplicated onto each worker process's stderr; closed at the end so the relay sees EOF.
    write: Option<OwnedFd>,
    /// Taken by the relay thread when it starts.
    read: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

pub(super) struct State {
    pub pools: Vec<PoolLog>,
    pub log_limit: usize,
    /// `%P`: the master's pid.
    pub master_pid: u32,
    pub output: Output,
}

static STATE: OnceLock<State> = OnceLock::new();

pub(super) fn state() -> Option<&'static State> {
    STATE.get()
}

fn pool_logs(config: &Config) -> Vec<PoolLog> {
    config
        .pools
        .iter()
        .map(|pool| PoolLog {
            // Checked when the config was loaded; a format that fails here logs nothing.
            access: pool
                .logs
                .access_log
                .as_ref()
                .and_then(|_| AccessFormat::parse(&pool.logs.access_format).ok()),
            slowlog: pool.logs.slowlog.is_some(),
        })
        .collect()
}

/// The master: open every configured file and, when there is one, the relay pipe. Returns the
/// writer for the master's own tracing output when `error_log` is set.
pub fn init_master(config: &Config) -> Result<Option<ErrorLogWriter>, LogSetupError> {
    let files = Arc::new(MasterFiles::open(config)?);
    let mut relay = Relay::default();
    if files.any() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| LogSetupError::Pipe(e.into()))?;
        let _ = nix::fcntl::fcntl(
            write.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(RELAY_PIPE_BYTES),
        );
        relay.read = Some(read);
        relay.write = Some(write);
    }
    let writer = files
        .has_error_log()
        .then(|| ErrorLogWriter::new(Arc::clone(&files)));
    let _ = STATE.set(State {
        pools: pool_logs(config),
        log_limit: config.global.logs.log_limit,
        master_pid: std::process::id(),
        output: Output::Master {
            files,
            relay: Mutex::new(relay),
        },
    });
    Ok(writer)
}

/// A worker process: its lines go to stderr, tagged when the master relays them. Call while
/// the process has one thread (it removes [`RELAY_ENV`] so php-cgi and scripts do not see it).
pub fn init_worker(config: &Config) {
    let relayed = std::env::var_os(RELAY_ENV).is_some_and(|v| v == "1");
    std::env::remove_var(RELAY_ENV);
    let _ = STATE.set(State {
        pools: pool_logs(config),
        log_limit: config.global.logs.log_limit,
        master_pid: nix::unistd::getppid().as_raw() as u32,
        output: if relayed {
            Output::Relayed
        } else {
            Output::Unrelayed
        },
    });
}

/// The master, once it runs: start the thread that writes relayed lines to the files.
pub fn start_relay() -> std::io::Result<()> {
    let Some(Output::Master { files, relay }) = state().map(|s| &s.output) else {
        return Ok(());
    };
    let mut relay = relay.lock().unwrap_or_else(|e| e.into_inner());
    let Some(read) = relay.read.take() else {
        return Ok(());
    };
    let files = Arc::clone(files);
    let thread = std::thread::Builder::new()
        .name("fastpm-logs".into())
        .spawn(move || relay::run(read, &mut |route, lines| files.write(route, lines)))?;
    relay.thread = Some(thread);
    Ok(())
}

/// Give a fastpm worker process the relay pipe as its stderr, and tell it so ([`RELAY_ENV`]).
/// Nothing changes when no log file is configured.
pub fn relay_to(cmd: &mut Command) {
    if relay_stderr_to(cmd) {
        cmd.env(RELAY_ENV, "1");
    }
}

/// Give an exec pool's program the relay pipe as its stderr: what it writes there reaches the
/// error log (it is not told: it writes no tagged lines). True when it got the pipe.
pub fn relay_stderr_to(cmd: &mut Command) -> bool {
    let Some(Output::Master { relay, .. }) = state().map(|s| &s.output) else {
        return false;
    };
    let relay = relay.lock().unwrap_or_else(|e| e.into_inner());
    match relay.write.as_ref().and_then(|w| w.try_clone().ok()) {
        Some(copy) => {
            cmd.stderr(Stdio::from(copy));
            true
        }
        None => false,
    }
}

/// Reopen the master's files (USR1). `None` outside the master.
pub fn reopen() -> Option<Reopened> {
    match state().map(|s| &s.output) {
        Some(Output::Master { files, .. }) => Some(files.reopen()),
        _ => None,
    }
}

/// The master is stopping and its workers are gone: close its copy of the pipe and let the
/// relay write what is still in it (bounded by `deadline`).
pub fn finish(deadline: Instant) {
    let Some(Output::Master { relay, .. }) = state().map(|s| &s.output) else {
        return;
    };
    let thread = {
        let mut relay = relay.lock().unwrap_or_else(|e| e.into_inner());
        relay.write = None;
        relay.thread.take()
    };
    let Some(thread) = thread else { return };
    while !thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if thread.is_finished() {
        let _ = thread.join();
    }
}

/// The longest line fastpm writes for an application or a request.
pub fn log_limit() -> usize {
    state().map_or(DEFAULT_LOG_LIMIT, |s| s.log_limit)
}

thread_local! {
    /// A worker's tagged line, built here to reach stderr in one write.
    static TAGGED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Send one finished line (no newline) to `route`'s file.
pub(super) fn emit(state: &State, route: Route, line: &[u8]) {
    match &state.output {
        Output::Master { files, .. } => {
            let mut whole = Vec::with_capacity(line.len() + 1);
            whole.extend_from_slice(line);
            whole.push(b'\n');
            files.write(route, &whole);
        }
        Output::Relayed => TAGGED.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            relay::push_tagged(&mut buf, route, line);
            // One write of at most PIPE_BUF bytes: atomic in the pipe.
            let _ = std::io::stderr().lock().write_all(&buf);
        }),
        Output::Unrelayed => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!("a log file was configured after the master started (reload): lines for it are dropped until fastpm restarts");
            });
        }
    }
}
