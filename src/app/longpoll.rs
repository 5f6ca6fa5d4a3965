//! `kind = "longpoll"` as an [`App`] value: the placeholder a worker runs until the master's
//! holder (`crate::hold`) takes this pool's requests. It answers every request `501` with one
//! line, so a pool started before the wiring lands says plainly what it cannot do yet instead
//! of hanging or pretending to hold.

use super::{plain_response, App};
use crate::config::PoolConfig;
use crate::fastcgi::{Request, ResponseWriter};

/// The one-line body of the placeholder's answer.
pub const NOT_WIRED: &str = "longpoll: the holder is not wired yet\n";

// REPLACED BY hold:: — the master integration swaps this for the holder's longpoll app.
/// The app of one worker of a `longpoll` pool.
pub fn longpoll_app(_pool: &PoolConfig) -> Box<dyn App> {
    Box::new(NotWired)
}

/// Answers `501 Not Implemented` (see the module comment).
struct NotWired;

impl App for NotWired {
    fn handle(&mut self, _request: &Request, out: &mut ResponseWriter<'_>) -> std::io::Result<u32> {
        plain_response(out, "501 Not Implemented", NOT_WIRED)?;
        Ok(0)
    }
}
