//! The master's HTTP status listener (hyper, HTTP/1.1): `/status` (all pools), `/status/POOL`,
//! `/metrics` (OpenMetrics), `/history` (the last 15 minutes, JSON) and `/` (the live dashboard,
//! drawn by its own script from `/history` and `/status`); the status paths take php-fpm's query
//! flags (`/status?html` is php-fpm's self-refreshing table). It only reads
//! snapshots from a [`SnapshotSource`] (the scoreboard), so it answers while every worker is
//! busy. One path writes: `POST /publish/` (DESIGN.md §8), handed to the source's
//! [`Publisher`] (see [`super::publish`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::history::{History, HistoryQuery};
pub use super::publish::{PublishOutcome, Publisher};
use super::query::{Format, Query};
use super::snapshot::{BrokerStatus, PoolSnapshot};
use super::{render_master, render_pool, Rendered, NO_CACHE_HEADERS};

/// Where the listener gets its snapshots from (the master implements it over the
/// scoreboard and the pools' static facts).
pub trait SnapshotSource: Send + Sync + 'static {
    /// Every pool, in configuration order; `full` asks for the per-worker rows.
    fn snapshots(&self, full: bool) -> Vec<PoolSnapshot>;

    /// The recent history (`/history`), when this source keeps one.
    fn history(&self) -> Option<&History> {
        None
    }

    /// The broker of held requests and whether it is connected, shown by `/status` (text and
    /// JSON); `None` leaves both out.
    fn broker(&self) -> Option<BrokerStatus> {
        None
    }

    /// Who takes `POST /publish/`; `None` answers that path 404.
    fn publisher(&self) -> Option<Arc<dyn Publisher>> {
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
                let source = Arc::clone(&source);
                async move { Ok::<_, Infallible>(respond(req, source.as_ref()).await) }
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

/// Route one request. HEAD gets the GET headers (hyper leaves out the body). Only
/// `/publish/` reads a body (POST only); every other path is GET/HEAD.
async fn respond(req: Request<Incoming>, source: &dyn SnapshotSource) -> Response<Full<Bytes>> {
    let route = route(req.uri().path());
    let (allowed, allow): (&[Method], _) = match route {
        Route::Publish => (&[Method::POST], "POST"),
        _ => (&[Method::GET, Method::HEAD], "GET, HEAD"),
    };
    if !allowed.contains(req.method()) {
        return not_allowed(allow);
    }
    let query = Query::parse(req.uri().query().unwrap_or(""));
    match route {
        Route::Publish => {
            let outcome = super::publish::answer(req.into_body(), source.publisher()).await;
            let status =
                StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut answer = response(status, outcome.content_type, outcome.body);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                // The broker is away and reconnecting: say when to try again, as the longpoll
                // `pub` path does (DESIGN §8), so a publisher backs off instead of giving up.
                answer
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            answer
        }
        Route::AllPools => rendered(render_master(
            source.broker().as_ref(),
            &source.snapshots(query.full),
            &query,
        )),
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
            rendered(render_master(
                source.broker().as_ref(),
                &source.snapshots(false),
                &metrics,
            ))
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

/// 405 with the methods the path takes.
fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// The listener's paths.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    AllPools,
    OnePool(String),
    Metrics,
    Dashboard,
    History,
    /// `POST /publish/`: Pushpin's EPCP publish endpoint.
    Publish,
    NotFound,
}

fn route(path: &str) -> Route {
    match path {
        "/" => Route::Dashboard,
        "/status" | "/status/" => Route::AllPools,
        "/metrics" => Route::Metrics,
        "/history" => Route::History,
        "/publish/" | "/publish" => Route::Publish,
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
            ("/publish/", Route::Publish),
            ("/publish", Route::Publish),
            ("/publish/x", Route::NotFound),
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

    /// `POST /publish/` through a real listener, with a fake publisher that records what it
    /// got: the route's behaviour, not publishing.
    mod publish_route {
        use super::super::*;
        use crate::status::publish::MAX_PUBLISH_BODY;
        use std::future::Future;
        use std::pin::Pin;
        use std::sync::Mutex;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        #[derive(Default)]
        struct Recorder(Mutex<Vec<Bytes>>);

        impl Publisher for Recorder {
            fn publish(&self, body: Bytes) -> Pin<Box<dyn Future<Output = PublishOutcome> + Send>> {
                let answer = format!("{{\"received\":{}}}", body.len());
                self.0.lock().unwrap().push(body);
                Box::pin(async move {
                    PublishOutcome {
                        status: 200,
                        content_type: "application/json",
                        body: answer,
                    }
                })
            }
        }

        struct Source {
            publisher: Option<Arc<Recorder>>,
            broker: Option<BrokerStatus>,
        }

        impl SnapshotSource for Source {
            fn snapshots(&self, _full: bool) -> Vec<PoolSnapshot> {
                Vec::new()
            }
            fn broker(&self) -> Option<BrokerStatus> {
                self.broker.clone()
            }
            fn publisher(&self) -> Option<Arc<dyn Publisher>> {
                self.publisher.clone().map(|p| p as Arc<dyn Publisher>)
            }
        }

        /// A listener on a free port; stops when the returned sender is dropped.
        async fn start(source: Source) -> (std::net::SocketAddr, watch::Sender<bool>) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = watch::channel(false);
            tokio::spawn(serve(listener, Arc::new(source), stopped));
            (addr, stop)
        }

        /// Send `head` (and `body`), read to the end: (status, raw head, body).
        async fn exchange(
            addr: std::net::SocketAddr,
            head: &str,
            body: &[u8],
        ) -> (u16, String, String) {
            let head_request = head.starts_with("HEAD ");
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(body).await.unwrap();
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.unwrap();
            let text = String::from_utf8_lossy(&raw);
            let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
            if head_request {
                // A HEAD answer announces a length and sends no body.
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, head, String::new());
            }
            let parsed = crate::status::client::parse_response(&raw).unwrap();
            (parsed.status, head, parsed.body)
        }

        fn post(path: &str, length: usize) -> String {
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n")
        }

        fn with(publisher: &Arc<Recorder>) -> Source {
            Source {
                publisher: Some(Arc::clone(publisher)),
                broker: None,
            }
        }

        #[tokio::test]
        async fn the_body_reaches_the_publisher_and_its_outcome_the_client() {
            let publisher = Arc::new(Recorder::default());
            let (addr, _stop) = start(with(&publisher)).await;
            let json = br#"{"items":[{"channel":"c"}]}"#;
            let (status, head, body) = exchange(addr, &post("/publish/", json.len()), json).await;
            assert_eq!((status, body.as_str()), (200, "{\"received\":27}"));
            assert!(head.contains("content-type: application/json"), "{head}");
            // Chunked, to the path without the slash (as some GRIP libraries write it).
            let chunked = "POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            let (status, _, body) =
                exchange(addr, chunked, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").await;
            assert_eq!((status, body.as_str()), (200, "{\"received\":5}"));
            // Exactly the cap is taken.
            let full = vec![b' '; MAX_PUBLISH_BODY];
            let (status, _, _) = exchange(addr, &post("/publish/", full.len()), &full).await;
            assert_eq!(status, 200);
            let got = publisher.0.lock().unwrap();
            assert_eq!(got.len(), 3);
            assert_eq!(&got[0][..], json);
            assert_eq!(&got[1][..], b"abcde");
            assert_eq!(got[2].len(), MAX_PUBLISH_BODY);
        }

        #[tokio::test]
        async fn only_post_and_no_body_over_the_cap() {
            let publisher = Arc::new(Recorder::default());
            let (addr, _stop) = start(with(&publisher)).await;
            for method in ["GET", "HEAD", "PUT", "DELETE"] {
                let req =
                    format!("{method} /publish/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let (status, head, _) = exchange(addr, &req, b"").await;
                assert_eq!(status, 405, "{method}");
                assert!(head.contains("allow: post\r\n"), "{method}: {head}");
            }
            // The status paths still refuse POST, naming their own methods.
            let (status, head, _) = exchange(addr, &post("/status", 2), b"{}").await;
            assert_eq!(status, 405);
            assert!(head.contains("allow: get, head"), "{head}");
            // Declared too large: refused before a byte of the body is sent.
            let (status, _, body) =
                exchange(addr, &post("/publish/", MAX_PUBLISH_BODY + 1), b"").await;
            assert_eq!((status, body.as_str()), (400, "body over 2 MiB\n"));
            // Chunked past the cap: refused once the cap is passed (the end is never sent).
            let chunked = "POST /publish/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            let mut chunks = Vec::new();
            for _ in 0..2 {
                let half = MAX_PUBLISH_BODY / 2;
                chunks.extend_from_slice(format!("{half:x}\r\n").as_bytes());
                chunks.extend(std::iter::repeat_n(b'x', half));
                chunks.extend_from_slice(b"\r\n");
            }
            chunks.extend_from_slice(b"1\r\nx\r\n");
            let (status, _, body) = exchange(addr, chunked, &chunks).await;
            assert_eq!((status, body.as_str()), (400, "body over 2 MiB\n"));
            assert!(publisher.0.lock().unwrap().is_empty(), "nothing published");
        }

        #[tokio::test]
        async fn without_a_publisher_the_path_is_not_found() {
            let (addr, _stop) = start(Source {
                publisher: None,
                broker: None,
            })
            .await;
            let (status, _, _) = exchange(addr, &post("/publish/", 2), b"{}").await;
            assert_eq!(status, 404);
        }

        #[tokio::test]
        async fn status_says_the_broker_when_the_source_has_one() {
            let broker = BrokerStatus {
                broker: "redis://127.0.0.1:6379".into(),
                connected: false,
                messages_published: 7,
            };
            let (addr, _stop) = start(Source {
                publisher: None,
                broker: Some(broker),
            })
            .await;
            let get =
                |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let (_, _, json) = exchange(addr, &get("/status?json"), b"").await;
            let json: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(
                json,
                serde_json::json!({"broker": "redis://127.0.0.1:6379", "broker connected": false, "messages published": 7, "pools": []})
            );
            let (_, _, text) = exchange(addr, &get("/status"), b"").await;
            assert_eq!(
                text,
                "broker:               redis://127.0.0.1:6379\nbroker connected:     no\nmessages published:   7\n"
            );
            // /metrics and ?openmetrics carry the master's families, without a pool label.
            for path in ["/metrics", "/status?openmetrics"] {
                let (_, _, metrics) = exchange(addr, &get(path), b"").await;
                for want in [
                    "# TYPE fastpm_broker_connected gauge\nfastpm_broker_connected{broker=\"redis://127.0.0.1:6379\"} 0\n",
                    "# TYPE fastpm_master_messages_published counter\nfastpm_master_messages_published_total 7\n",
                ] {
                    assert!(metrics.contains(want), "{path}: {want}\n---\n{metrics}");
                }
                assert!(metrics.ends_with("# EOF\n"), "{path}: {metrics}");
            }
            // Without a broker the master's answer is as before.
            let (addr, _stop) = start(Source {
                publisher: None,
                broker: None,
            })
            .await;
            let (_, _, json) = exchange(addr, &get("/status?json"), b"").await;
            assert_eq!(json, "{\"pools\":[]}");
            let (_, _, metrics) = exchange(addr, &get("/metrics"), b"").await;
            assert_eq!(metrics, "# EOF\n");
        }
    }
}
