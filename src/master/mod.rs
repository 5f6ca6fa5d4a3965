//! The master: starts every pool, watches them, stops them.
//!
//! [`run`] is the whole life of the master, one named phase per line; the pieces are
//! [`pools`] (bind, check the backlog, build workers), [`signals`] (handlers only enqueue),
//! [`status_source`] (the status listener's view of the scoreboard), [`apps`] (which app a pool
//! runs), [`pm`] (the process manager's policy, pure) and [`notify`] (sd_notify to systemd).

pub mod apps;
pub mod children;
pub mod exec_state;
pub mod notify;
pub mod php_parent;
pub mod pm;
pub mod pools;
pub mod preflight;
pub mod process_pool;
pub mod running;
pub mod runtime_dir;
pub mod signals;
pub mod status_source;
pub mod upgrade;

use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use crate::config::Config;
pub use pools::{MasterError, StartOptions};
pub use running::Running;
pub use signals::Event;

/// How often the supervisor reaps and respawns worker processes when no signal arrives.
pub const TICK: Duration = Duration::from_millis(50);

/// Run the master in the foreground until it is told to stop: wait for a signal (or a tick),
/// handle it, reap and respawn workers.
pub fn run(config: Config, options: StartOptions) -> Result<(), MasterError> {
    let (mut running, events) = Running::start(config, options)?;
    loop {
        match events.recv_timeout(TICK) {
            Ok(Event::Graceful(signal)) => return running.stop_graceful(signal),
            Ok(Event::Immediate(signal)) => return running.stop_now(signal),
            Ok(Event::Reload) => running.handle_hup(),
            Ok(Event::ReopenLogs) => running.handle_usr1(),
            Ok(Event::Upgrade) => running.handle_usr2(),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return running.stop_graceful("signal listener gone")
            }
        }
        if running.supervise() {
            return running.hand_over();
        }
    }
}
