//! The master: starts every pool, watches them, stops them.
//!
//! [`run`] is the whole life of the master, one named phase per line; the pieces are
//! [`pools`] (bind, check the backlog, build workers), [`signals`] (handlers only enqueue),
//! [`status_source`] (the status listener's view of the scoreboard), [`apps`] (which app a pool
//! runs), [`pm`] (the process manager's policy, pure) and [`notify`] (sd_notify to systemd).

pub mod apps;
pub mod children;
pub mod notify;
pub mod pm;
pub mod pools;
pub mod signals;
pub mod status_source;

use crate::config::Config;
pub use pools::{MasterError, Running, StartOptions};
pub use signals::Event;

/// Run the master in the foreground until it is told to stop.
pub fn run(config: Config, options: StartOptions) -> Result<(), MasterError> {
    let running = Running::start(config, options)?;
    let events = signals::listen(running.runtime()).map_err(|source| MasterError::Io {
        what: "cannot install signal handlers".into(),
        source,
    })?;
    loop {
        match events.recv() {
            Ok(Event::Graceful(signal)) => break running.stop_graceful(signal),
            Ok(Event::Immediate(signal)) => break running.stop_now(signal),
            Ok(Event::Reload) => running.handle_hup(),
            Ok(Event::ReopenLogs) => running.handle_usr1(),
            Ok(Event::Upgrade) => running.handle_usr2(),
            Err(_) => break running.stop_graceful("signal listener gone"),
        }
    }
}
