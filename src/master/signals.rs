//! Signals to the master (DESIGN.md §2). The handlers only enqueue an [`Event`]; the master loop
//! decides what each means.
//!
//! A signal that comes before its handler exists takes its default action: HUP, TERM, INT,
//! QUIT, USR1 and USR2 all end the process. So `fastpm run` and `fastpm worker` block them
//! first thing ([`defer_handled_signals`]): one that arrives while the process starts stays
//! pending; the handlers are installed before any child starts, and then
//! [`deliver_deferred_signals`] lets the pending ones through to them. Threads inherit the
//! mask of the thread that starts them, so threads started in between keep them blocked
//! (the thread that unblocks takes delivery); spawned programs do not inherit it (the
//! standard library clears the mask of every child it starts).

use std::sync::mpsc::{channel, Receiver};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use tokio::signal::unix::{signal, SignalKind};

/// The signals fastpm's master and workers handle (none may end a process that is starting).
pub const HANDLED: [Signal; 6] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The signals the master and its workers handle (and defer until their handlers exist).
pub fn handled_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in HANDLED {
        set.add(signal);
    }
    set
}

/// Block [`HANDLED`] in the calling thread (and the threads it starts from now on): one that
/// arrives stays pending until [`deliver_deferred_signals`]. Call it before anything else.
pub fn defer_handled_signals() -> std::io::Result<()> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), None)?;
    Ok(())
}

/// Unblock [`HANDLED`] in the calling thread, once their handlers are installed: the pending
/// ones are handled now.
pub fn deliver_deferred_signals() -> std::io::Result<()> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled_set()), None)?;
    Ok(())
}

/// What a signal asks of the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// TERM, INT: drain and stop, bounded by `shutdown_timeout`.
    Graceful(&'static str),
    /// QUIT: stop now.
    Immediate(&'static str),
    /// HUP: reload the config, replace workers.
    Reload,
    /// USR1: reopen log files.
    ReopenLogs,
    /// USR2: re-exec the binary keeping the sockets.
    Upgrade,
}

/// Install the handlers on the master's tokio runtime, then let deferred signals through
/// ([`deliver_deferred_signals`]); events arrive on the returned channel.
pub fn listen(runtime: &tokio::runtime::Runtime) -> std::io::Result<Receiver<Event>> {
    let table = [
        (SignalKind::terminate(), Event::Graceful("SIGTERM")),
        (SignalKind::interrupt(), Event::Graceful("SIGINT")),
        (SignalKind::quit(), Event::Immediate("SIGQUIT")),
        (SignalKind::hangup(), Event::Reload),
        (SignalKind::user_defined1(), Event::ReopenLogs),
        (SignalKind::user_defined2(), Event::Upgrade),
    ];
    let (tx, rx) = channel();
    let _enter = runtime.enter();
    for (kind, event) in table {
        let mut stream = signal(kind)?;
        let tx = tx.clone();
        runtime.spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
    }
    deliver_deferred_signals()?;
    Ok(rx)
}
