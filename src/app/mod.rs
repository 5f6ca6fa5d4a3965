//! What runs a request once the worker has read it: the built-in apps (`hello`, `echo`, `sleep`),
//! `php` (a php-cgi child per worker), `cgi` (a process per request, RFC 3875) and the
//! `longpoll` (its sub and pub requests go to the master's holder, `crate::hold`).
//!
//! An app sees a complete FastCGI request and writes a CGI response (headers, blank line, body)
//! to the response writer; the worker takes care of the protocol, the scoreboard and the status
//! and ping paths. PHP, CGI, exec and long-polling apps arrive with their own issues.

mod builtin;
pub mod cgi;
pub mod longpoll;
pub mod php;

pub use builtin::{Echo, Hello, Sleep};
pub use cgi::{Cgi, CgiSettings};
pub use longpoll::longpoll_app;
pub use php::{EmbeddedPhp, Php, PhpSettings};

use crate::fastcgi::{Request, ResponseWriter};

/// One request in, one CGI response out. Each worker owns its own app value, so an app may keep
/// per-worker state (a php-cgi connection, later) without locks.
pub trait App: Send {
    /// Write the response; the returned value is the FastCGI app status (0 = success).
    fn handle(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> std::io::Result<u32>;
}

/// A `Status:` response with a text/plain body, for errors answered without the app.
pub fn plain_response(
    out: &mut ResponseWriter<'_>,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let mut text = String::with_capacity(64 + body.len());
    text.push_str("Status: ");
    text.push_str(status);
    text.push_str("\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    text.push_str(body);
    out.stdout(text.as_bytes())
}
