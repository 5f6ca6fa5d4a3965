//! The master's HTTP status listener (hyper, HTTP/1.1): `/status` (all pools), `/status/POOL`,
//! `/metrics` (OpenMetrics), `/history` (the last 15 minutes, JSON) and `/` (the live dashboard,
//! drawn by its own script from `/history` and `/status`); the status paths take php-fpm's query
//! flags (`/status?html` is php-fpm's self-refreshing table). It only reads
//! snapshots from a [`SnapshotSource`] (the scoreboard), so it answers while every worker is
//! busy.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::history::{History, HistoryQuery};
use super::query::{Format, Query};
use super::snapshot::PoolSnapshot;
use super::{render_pool, render_pools, Rendered, NO_CACHE_HEADERS};

/// Where the listener gets its snapshots from (the master implements it over the
/// scoreboard and the pools' static facts).
pub trait SnapshotSource: Send + Sync + 'static {
    /// Every pool, in configuration order; `full` asks for the per-worker rows.
    fn snapshots(&self, full: bool) -> Vec<PoolSnapshot>;

    /// The recent history (`/history`), when this source keeps one.
    fn history(&self) -> Option<&History> {
        None
    }
}

/// A client that sends its request headers slower than this is dropped, so idle or slow
/// connections cannot pile up in the master.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections the listener serves at once. Past it a new connection is closed at once:
/// each one costs the master a descriptor, and the master's descriptors are what it needs to
/// start workers and php-cgi. A real scraper or browser uses one or a few; 512 silent
/// connections (each dropped after [`HEADER_READ_TIMEOUT`]) can delay status, never the pools.
pub const MAX_CONNECTIONS: usize = 512;

/// After an accept error that means "out of a resource" (descriptors, memory), wait this long
/// before accepting again instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serve until `shutdown` becomes true (or its sender is dropped). Connections already open
/// are closed gracefully (the request in flight is answered). Returns an error only when the
/// listener itself is broken.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn SnapshotSource>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut refused_since_log = 0u64;
    loop {
        if *shutdown.borrow_and_update() {
            return Ok(());
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                continue;
            }
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => match classify_accept_error(&err) {
                AcceptError::PerConnection => continue,
                AcceptError::OutOfResources => {
                    tracing::warn!(error = %err, "status listener: accept failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
                AcceptError::Fatal => return Err(err),
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Dropping the stream closes it: the client sees the connection end at once.
            refused_since_log += 1;
            if refused_since_log == 1 || refused_since_log.is_power_of_two() {
                tracing::warn!(
                    refused = refused_since_log,
                    "status listener: {MAX_CONNECTIONS} connections open; closing new ones"
                );
            }
            continue;
        };
        refused_since_log = 0;
        let source = Arc::clone(&source);
        let builder = Arc::clone(&builder);
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = respond(&req, source.as_ref());
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            // `Some` = the connection ended by itself; `None` = shutdown was asked for first
            // (or its sender is gone), so finish the request in flight and close.
            let ended = tokio::select! {
                result = conn.as_mut() => Some(result),
                _ = conn_shutdown.wait_for(|stop| *stop) => None,
            };
            let result = match ended {
                Some(result) => result,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(error = %err, "status listener: connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// How the accept loop reacts to an `accept()` error.
#[derive(Debug, PartialEq, Eq)]
enum AcceptError {
    /// The failed connection alone is affected (peer reset before accept, …).
    PerConnection,
    /// The process or system ran out of something; retry after a pause.
    OutOfResources,
    /// The listener cannot work any more.
    Fatal,
}

fn classify_accept_error(err: &std::io::Error) -> AcceptError {
    match err.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            AcceptError::OutOfResources
        }
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT) => {
            AcceptError::Fatal
        }
        _ => AcceptError::PerConnection,
    }
}

/// Route one request. HEAD gets the GET headers (hyper leaves out the body).
fn respond(req: &Request<Incoming>, source: &dyn SnapshotSource) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let query = Query::parse(req.uri().query().unwrap_or(""));
    match route(req.uri().path()) {
        Route::AllPools => rendered(render_pools(&source.snapshots(query.full), &query)),
        Route::OnePool(name) => {
            match source
                .snapshots(query.full)
                .into_iter()
                .find(|s| s.pool == name)
            {
                Some(snapshot) => rendered(render_pool(&snapshot, &query)),
                None => plain(StatusCode::NOT_FOUND, &format!("no pool named {name:?}\n")),
            }
        }
        Route::Metrics => {
            let metrics = Query {
                format: Format::OpenMetrics,
                full: false,
            };
            rendered(render_pools(&source.snapshots(false), &metrics))
        }
        Route::Dashboard => response(
            StatusCode::OK,
            "text/html;charset=UTF-8",
            super::dashboard::PAGE.to_string(),
        ),
        Route::History => history(req.uri().query().unwrap_or(""), source),
        Route::NotFound => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The listener's paths.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    AllPools,
    OnePool(String),
    Metrics,
    Dashboard,
    History,
    NotFound,
}

fn route(path: &str) -> Route {
    match path {
        "/" => Route::Dashboard,
        "/status" | "/status/" => Route::AllPools,
        "/metrics" => Route::Metrics,
        "/history" => Route::History,
        _ => match path.strip_prefix("/status/") {
            Some(name) if !name.contains('/') => match percent_decode(name) {
                Some(name) => Route::OnePool(name),
                None => Route::NotFound,
            },
            _ => Route::NotFound,
        },
    }
}

/// `/history?json[&pool=NAME][&seconds=N]`: always JSON; 400 for a bad query, 404 for an
/// unknown pool or a source that keeps no history.
fn history(query_string: &str, source: &dyn SnapshotSource) -> Response<Full<Bytes>> {
    let query = match HistoryQuery::parse(query_string) {
        Ok(query) => query,
        Err(why) => return plain(StatusCode::BAD_REQUEST, &format!("{why}\n")),
    };
    let Some(history) = source.history() else {
        return plain(StatusCode::NOT_FOUND, "no history kept here\n");
    };
    match history.render_json(&query) {
        Some(body) => response(StatusCode::OK, "application/json", body),
        None => plain(
            StatusCode::NOT_FOUND,
            &format!("no pool named {:?}\n", query.pool.unwrap_or_default()),
        ),
    }
}

/// Decode `%XX` escapes of a path segment; `None` when malformed or not UTF-8.
pub(crate) fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn rendered(r: Rendered) -> Response<Full<Bytes>> {
    response(StatusCode::OK, r.content_type, r.body)
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    response(status, "text/plain;charset=UTF-8", body.to_string())
}

/// php-fpm's no-cache headers: a status page must never be served from a cache.
fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in NO_CACHE_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let table = [
            ("/", Route::Dashboard),
            ("/status", Route::AllPools),
            ("/status/", Route::AllPools),
            ("/status/www", Route::OnePool("www".into())),
            ("/status/my%20pool", Route::OnePool("my pool".into())),
            ("/status/bad%zz", Route::NotFound),
            ("/status/a/b", Route::NotFound),
            ("/metrics", Route::Metrics),
            ("/metrics/", Route::NotFound),
            ("/history", Route::History),
            ("/index.html", Route::NotFound),
            ("/statusx", Route::NotFound),
        ];
        for (path, want) in table {
            assert_eq!(route(path), want, "{path}");
        }
    }

    #[test]
    fn accept_errors() {
        use std::io::Error;
        let table = [
            (libc::EMFILE, AcceptError::OutOfResources),
            (libc::ENOMEM, AcceptError::OutOfResources),
            (libc::ECONNABORTED, AcceptError::PerConnection),
            (libc::EPERM, AcceptError::PerConnection),
            (libc::EBADF, AcceptError::Fatal),
            (libc::EINVAL, AcceptError::Fatal),
        ];
        for (errno, want) in table {
            assert_eq!(
                classify_accept_error(&Error::from_raw_os_error(errno)),
                want,
                "{errno}"
            );
        }
    }
}
