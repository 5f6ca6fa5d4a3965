//! Signals to the master (DESIGN.md §2). The handlers only enqueue an [`Event`]; the master loop
//! decides what each means.

use std::sync::mpsc::{channel, Receiver};

use tokio::signal::unix::{signal, SignalKind};

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

/// Install the handlers on the master's tokio runtime; events arrive on the returned channel.
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
    Ok(rx)
}
