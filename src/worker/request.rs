//! One request's path through a worker: count it, mark the scoreboard slot, route it to the
//! status page, the ping answer or the app, then record how long it took.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::context::PoolContext;
use crate::app::App;
use crate::fastcgi::{Handler, Request, ResponseWriter};
use crate::scoreboard::{WorkerSlot, WorkerState};
use crate::status::{self, PoolSnapshot, Query};

/// php-fpm's never-cache headers, as CGI header lines, for the status and ping answers.
fn no_cache_lines() -> String {
    status::NO_CACHE_HEADERS
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect()
}

/// Where a request goes, decided from its `SCRIPT_NAME` alone (as php-fpm does).
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Status,
    Ping,
    App,
}

/// Pure routing: the pool's `status_path` and `ping_path` win over the app.
pub fn route(script_name: &[u8], status_path: Option<&str>, ping_path: Option<&str>) -> Route {
    if status_path.is_some_and(|p| p.as_bytes() == script_name) {
        Route::Status
    } else if ping_path.is_some_and(|p| p.as_bytes() == script_name) {
        Route::Ping
    } else {
        Route::App
    }
}

/// The worker's FastCGI handler.
pub struct RequestHandler<'a> {
    ctx: &'a PoolContext,
    slot: &'a WorkerSlot,
    app: Box<dyn App>,
    /// The whole ping response, built once.
    ping: Vec<u8>,
}

impl<'a> RequestHandler<'a> {
    pub fn new(ctx: &'a PoolContext, slot: &'a WorkerSlot, app: Box<dyn App>) -> Self {
        let ping = format!(
            "Content-Type: text/plain\r\n{}\r\n{}",
            no_cache_lines(),
            ctx.config.ping_response
        )
        .into_bytes();
        Self {
            ctx,
            slot,
            app,
            ping,
        }
    }

    pub fn slot(&self) -> &WorkerSlot {
        self.slot
    }

    fn status(&self, request: &Request, out: &mut ResponseWriter<'_>) -> std::io::Result<u32> {
        let query = Query::parse(request.params.get_str("QUERY_STRING").unwrap_or(""));
        let snapshot = PoolSnapshot::collect(
            &self.ctx.info,
            self.ctx.board(),
            self.ctx.scoreboard.slots(self.ctx.index),
            query.full,
        );
        let rendered = status::render_pool(&snapshot, &query);
        let head = format!(
            "Content-Type: {}\r\n{}\r\n",
            rendered.content_type,
            no_cache_lines()
        );
        out.stdout(head.as_bytes())?;
        out.stdout(rendered.body.as_bytes())?;
        Ok(0)
    }
}

impl Handler for RequestHandler<'_> {
    fn begin(&mut self) {
        self.slot.set_state(WorkerState::Reading);
    }

    fn handle(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> std::io::Result<u32> {
        let started = Instant::now();
        let config = &self.ctx.config;
        self.ctx.board().accepted_conn.fetch_add(1, Relaxed);
        let script_name = request.params.get("SCRIPT_NAME").unwrap_or(b"");
        let uri = request
            .params
            .get("REQUEST_URI")
            .unwrap_or(script_name);
        self.slot.begin_request(
            request.params.get("REQUEST_METHOD").unwrap_or(b"-"),
            uri,
            request.params.get("SCRIPT_FILENAME").unwrap_or(b"-"),
        );
        let result = match route(
            script_name,
            config.status_path.as_deref(),
            config.ping_path.as_deref(),
        ) {
            Route::Status => self.status(request, out),
            Route::Ping => out.stdout(&self.ping).map(|_| 0),
            Route::App => self.app.handle(request, out),
        };
        self.slot.set_state(WorkerState::Finishing);
        self.slot.end_request();
        let took = started.elapsed();
        if !config.slow_request.is_zero() && took > config.slow_request {
            self.ctx.board().slow_requests.fetch_add(1, Relaxed);
            tracing::warn!(
                pool = %config.name,
                pid = std::process::id(),
                uri = %String::from_utf8_lossy(uri),
                script = %String::from_utf8_lossy(request.params.get("SCRIPT_FILENAME").unwrap_or(b"-")),
                duration_ms = took.as_millis() as u64,
                "slow request"
            );
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_script_name() {
        let table: &[(&[u8], Option<&str>, Option<&str>, Route)] = &[
            (b"/status", Some("/status"), Some("/ping"), Route::Status),
            (b"/ping", Some("/status"), Some("/ping"), Route::Ping),
            (b"/index.php", Some("/status"), Some("/ping"), Route::App),
            (b"/status", None, Some("/ping"), Route::App),
            (b"/ping", Some("/status"), None, Route::App),
            (b"/status/", Some("/status"), None, Route::App),
            (b"", Some("/status"), Some("/ping"), Route::App),
        ];
        for (script, status, ping, want) in table {
            assert_eq!(&route(script, *status, *ping), want, "{script:?}");
        }
    }
}
