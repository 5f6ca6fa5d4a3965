//! `kind = "php"`: each worker relays requests to one php-cgi in FastCGI mode over one kept
//! connection on a private socket — its own php-cgi (`php_children = "per-worker"`), or a child
//! of the pool's one php-cgi parent, whose children share opcache (`"shared"`, see `shared`;
//! `backend` holds the difference). fastpm decides which file runs (see `script`), starts
//! php-cgi again (or reconnects) when it exits, and kills the php-cgi serving a request that
//! outlives `request_timeout` (504 for that request only).

mod affinity;
mod backend;
mod cache;
mod child;
mod embedded;
mod peer;
mod script;
pub mod shared;
mod upstream;

use backend::{Backend, GiveUp};

use affinity::Follower;
pub use backend::Layout;
pub use cache::{ScriptCache, SCRIPT_CACHE_TTL};
pub use child::{ChildSpec, PhpChild};
pub use embedded::{php_environment, EmbeddedPhp};
pub use script::{
    apache_proxy_path, extension_allowed, requested_path, resolve, resolve_script, sent_filename,
    ApacheProxyPath, Refusal, Resolved,
};
pub use shared::SharedPhp;
pub use upstream::{Outcome, Outgoing, Relay, Wait, UPSTREAM_REQUEST_ID};

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{plain_response, App};
use crate::config::{PhpChildren, PoolConfig};
use crate::fastcgi::{
    encode_begin_request, encode_pair, encode_stream, RecordType, Request, ResponseWriter, Role,
};

/// Requests that could not be encoded or reach php-cgi are answered with this app status.
const FAILED_APP_STATUS: u32 = 1;

/// Most bytes of php's STDERR passed on to the web server per request (all of it is logged).
const MAX_FORWARDED_STDERR: usize = 64 * 1024;

/// An answer that takes longer than this is a slow one (a script computing or waiting, not a
/// quick page): php-cgi is then released from its worker's CPU (see `affinity`), so that a
/// CPU-bound script can be moved to an idle CPU by the scheduler. Quick pages keep the pair on
/// one CPU. A couple of scheduler ticks; far above a hello.php (about 60 µs).
const SLOW_ANSWER: Duration = Duration::from_millis(2);

/// Request buffers grown past this are shrunk back after the request (one large upload must not
/// pin its size in every worker for ever).
const KEEP_BUFFER: usize = 1024 * 1024;

/// Bodies up to this size are encoded with the head and sent in one piece (the common case:
/// one `send`); larger ones go straight from the request's buffer (see [`Outgoing`]).
const INLINE_BODY: usize = 64 * 1024;

/// The part of `request`'s body sent straight from its buffer (see [`Outgoing`]): all of a body
/// over [`INLINE_BODY`], none of a smaller one (that is encoded with the head).
fn streamed_body(request: &Request) -> &[u8] {
    if request.stdin.len() > INLINE_BODY {
        &request.stdin
    } else {
        &[]
    }
}

/// What every worker of a php pool shares, derived once from the pool's config.
#[derive(Debug, Clone)]
pub struct PhpSettings {
    /// `document_root`, canonical (symlinks resolved) so real paths can be compared with it.
    pub document_root: PathBuf,
    /// `limit_extensions`: other scripts get 403.
    pub limit_extensions: Vec<String>,
    /// `request_timeout`; zero = off.
    pub request_timeout: Duration,
    /// `max_requests` (shared layout: the worker recycles the child serving it after this many
    /// answers; per-worker, worker processes recycle themselves and their php-cgi); 0 = never.
    pub max_requests: u64,
    /// Own php-cgi, or the pool's shared one.
    pub layout: Layout,
    /// How to start php-cgi: this worker's own (per-worker: the socket path is the worker's),
    /// or the pool's shared parent (what the master starts, see `shared`).
    pub child: ChildSpec,
}

impl PhpSettings {
    /// Settings for worker `worker` of `pool`, with private sockets under `runtime_dir`.
    pub fn for_worker(pool: &PoolConfig, runtime_dir: &Path, worker: usize) -> Self {
        let app = &pool.app;
        let (layout, child) = php_cgi_for(pool, runtime_dir, worker);
        Self {
            document_root: canonical_document_root(pool),
            limit_extensions: app.limit_extensions.clone(),
            request_timeout: pool.request_timeout,
            max_requests: pool.max_requests,
            layout,
            child,
        }
    }
}

/// `pool`'s document_root with symlinks resolved (logged, and kept as written, when it cannot
/// be: every request then gets 404).
fn canonical_document_root(pool: &PoolConfig) -> PathBuf {
    let root = &pool.app.document_root;
    std::fs::canonicalize(root).unwrap_or_else(|e| {
        tracing::error!(pool = %pool.name, "document_root {}: {e}; every request will get 404", root.display());
        root.clone()
    })
}

/// Where worker `worker` of `pool` gets its php-cgi, and how that php-cgi is started: its own
/// on `php-<worker>.sock`, or the pool's shared parent (what the master starts, the same for
/// every worker) with `max_children` children. `credentials` are left for the caller to set.
pub fn php_cgi_for(pool: &PoolConfig, runtime_dir: &Path, worker: usize) -> (Layout, ChildSpec) {
    let app = &pool.app;
    let (layout, socket_path, children) = match app.php_children {
        // Embedded pools start no php-cgi (`master::apps` chooses `EmbeddedPhp` for them); the
        // per-worker shape is only a harmless answer.
        PhpChildren::PerWorker | PhpChildren::Embedded => (
            Layout::PerWorker,
            crate::config::runtime_dir::pool_dir(runtime_dir, &pool.name)
                .join(format!("php-{worker}.sock")),
            0,
        ),
        PhpChildren::Shared => {
            let socket = shared::socket_path(pool, runtime_dir);
            let layout = Layout::Shared {
                pid_file: shared::pid_path(&socket),
                socket: socket.clone(),
            };
            (layout, socket, pool.max_children)
        }
    };
    let spec = ChildSpec {
        pool: pool.name.clone(),
        php_cgi: app.php_cgi.clone(),
        socket_path,
        children,
        ini: app
            .ini
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        php_ini: app.php_ini.clone(),
        env: app
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        clear_env: app.clear_env,
        credentials: None,
    };
    (layout, spec)
}

/// The php-cgi serving this worker and the connection to it.
struct Upstream {
    backend: Backend,
    /// Made on the first request (see `Backend::connect`), then kept.
    conn: Option<UnixStream>,
}

/// One worker's php app.
pub struct Php {
    settings: PhpSettings,
    upstream: Option<Upstream>,
    relay: Relay,
    /// The encoded request (BEGIN_REQUEST, PARAMS, STDIN), reused.
    request_buf: Vec<u8>,
    /// The PARAMS stream being built, reused.
    params_buf: Vec<u8>,
    /// Scripts resolved recently (see `cache`).
    scripts: ScriptCache,
    /// Keeps the child on this worker's CPU (see `affinity`).
    follower: Follower,
}

impl Php {
    /// A worker's app; php-cgi is started now (a failure is logged and retried per request).
    /// The child gets `PR_SET_PDEATHSIG` tied to the calling thread: call this from a thread
    /// that lives as long as the worker (the master's main thread, or the worker itself —
    /// restarts happen on the worker's thread).
    pub fn new(settings: PhpSettings) -> Self {
        let mut php = Self {
            settings,
            upstream: None,
            relay: Relay::new(),
            request_buf: Vec::new(),
            params_buf: Vec::new(),
            scripts: ScriptCache::default(),
            follower: Follower::new(),
        };
        php.start_child();
        php
    }

    /// The pid of the php-cgi serving this worker, if known (shared: after the first answer).
    pub fn child_pid(&self) -> Option<u32> {
        self.upstream.as_ref().and_then(|u| u.backend.pid())
    }

    fn start_child(&mut self) -> bool {
        match Backend::start(&self.settings.layout, &self.settings.child) {
            Ok(backend) => {
                if let Some(pid) = backend.pid() {
                    tracing::debug!(pool = %self.settings.child.pool, pid, "php-cgi started");
                }
                self.follower.child_restarted();
                self.upstream = Some(Upstream {
                    backend,
                    conn: None,
                });
                true
            }
            Err(e) => {
                tracing::error!(pool = %self.settings.child.pool, error = %e, "php-cgi cannot start");
                false
            }
        }
    }

    /// Give the current php-cgi up (per-worker: kill it; shared: drop the connection, and kill
    /// the child when `why` asks for it), log how it ended, and get a fresh one (per-worker:
    /// start it; shared: the next request connects again).
    fn restart_child(&mut self, why: GiveUp) {
        if let Some(up) = self.upstream.take() {
            let shared = matches!(up.backend, Backend::Shared(_));
            let (pid, status, problem) = up.backend.end(up.conn.as_ref(), why);
            let pool = &self.settings.child.pool;
            let next = match (shared, why.kills_shared_child()) {
                (false, _) => "restarting it",
                (true, true) => "killed it (its parent starts another); connecting again",
                (true, false) => "connecting again",
            };
            let status = status.map(|s| s.to_string()).unwrap_or_default();
            if why.is_routine() {
                tracing::debug!(pool = %pool, pid, "php-cgi {}; {next}", why.text());
            } else {
                tracing::warn!(pool = %pool, pid, status, "php-cgi {}; {next}", why.text());
            }
            if let Some(problem) = problem {
                tracing::error!(pool = %pool, "{problem}");
            }
        }
        self.start_child();
    }

    /// BEGIN_REQUEST (keep-conn), PARAMS with SCRIPT_FILENAME set to the script (and the
    /// path info split off an Apache proxy SCRIPT_FILENAME, see [`path_info_params`]), STDIN.
    fn encode(&mut self, request: &Request, script: &Resolved) -> io::Result<()> {
        self.params_buf.clear();
        let too_long = |e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}"));
        let replaced = replaced_params(request, script);
        for (name, value) in script_params(request, script, &replaced) {
            encode_pair(&mut self.params_buf, name, value).map_err(too_long)?;
        }
        self.request_buf.clear();
        let inline_body = streamed_body(request).is_empty();
        self.request_buf.reserve(
            64 + self.params_buf.len() + if inline_body { request.stdin.len() } else { 0 },
        );
        encode_begin_request(
            &mut self.request_buf,
            UPSTREAM_REQUEST_ID,
            Role::Responder.as_u16(),
            true,
        );
        encode_stream(
            &mut self.request_buf,
            RecordType::Params,
            UPSTREAM_REQUEST_ID,
            &self.params_buf,
        );
        if inline_body {
            encode_stream(
                &mut self.request_buf,
                RecordType::Stdin,
                UPSTREAM_REQUEST_ID,
                &request.stdin,
            );
        }
        Ok(())
    }

    /// A whole answer came back on a connection that stays usable: the shared layout counts it
    /// and says when the child is due for recycling (`max_requests`).
    fn answered(&mut self) -> Option<GiveUp> {
        let up = self.upstream.as_mut()?;
        let conn = up.conn.as_ref()?;
        up.backend.answered(conn, self.settings.max_requests)
    }

    fn relay(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> io::Result<u32> {
        let deadline = (!self.settings.request_timeout.is_zero())
            .then(|| Instant::now() + self.settings.request_timeout);
        let mut client_error = None;
        for attempt in 0..2 {
            if self.upstream.is_none() && !self.start_child() {
                plain_response(out, "503 Service Unavailable", "php-cgi cannot start.\n")?;
                return Ok(FAILED_APP_STATUS);
            }
            let Some(up) = self.upstream.as_mut() else {
                continue;
            };
            let pid = up.backend.pid();
            let Some(conn) = connection(up, &self.settings, deadline) else {
                self.restart_child(GiveUp::Unreachable);
                continue;
            };
            if let Some(pid) = pid {
                self.follower.follow(pid);
            }
            let follower = &mut self.follower;
            let pool = &self.settings.child.pool;
            // php's error messages: into fastpm's log, and on to the web server afterwards
            // (as php-fpm passes them: nginx logs "FastCGI sent in stderr").
            let mut php_stderr = Vec::new();
            let mut log_stderr = |bytes: &[u8]| {
                for line in crate::logs::stderr_lines(bytes) {
                    tracing::warn!(pool = %pool, pid, "php: {}", crate::logs::bounded(line));
                }
                if php_stderr.len() < MAX_FORWARDED_STDERR {
                    php_stderr.extend_from_slice(bytes);
                }
            };
            let outgoing = Outgoing {
                head: &self.request_buf,
                body: streamed_body(request),
            };
            let outcome = self.relay.exchange(
                conn,
                outgoing,
                Wait {
                    deadline,
                    // The read timeout is at most request_timeout; on the first attempt the
                    // request has only just started (a retry follows a restart, which took time).
                    blocking_first_read: attempt == 0,
                },
                out,
                &mut log_stderr,
                &mut || {
                    if let Some(pid) = pid {
                        follower.release(pid)
                    }
                },
                &mut client_error,
            );
            if !php_stderr.is_empty() && client_error.is_none() {
                if let Err(e) = out.stderr(&php_stderr) {
                    client_error = Some(e);
                }
            }
            match outcome {
                Outcome::Complete {
                    app_status,
                    reusable,
                } => {
                    if !reusable {
                        self.restart_child(GiveUp::AnsweredEarly);
                    } else if let Some(recycle) = self.answered() {
                        self.restart_child(recycle);
                    }
                    return match client_error {
                        Some(e) => Err(e),
                        None => Ok(app_status),
                    };
                }
                Outcome::DeadBeforeRequest if attempt == 0 => {
                    self.restart_child(GiveUp::ExitedIdle);
                }
                Outcome::DeadBeforeRequest | Outcome::Died { forwarded: false } => {
                    self.restart_child(GiveUp::ExitedDuring {
                        response_cut: false,
                    });
                    plain_response(
                        out,
                        "502 Bad Gateway",
                        "php-cgi exited during the request.\n",
                    )?;
                    return Ok(FAILED_APP_STATUS);
                }
                Outcome::Died { forwarded: true } => {
                    self.restart_child(GiveUp::ExitedDuring { response_cut: true });
                    return client_error.map_or(Ok(FAILED_APP_STATUS), Err);
                }
                Outcome::TimedOut { forwarded } => {
                    self.restart_child(GiveUp::TimedOut(self.settings.request_timeout.as_millis()));
                    if !forwarded {
                        plain_response(out, "504 Gateway Timeout", "The request took too long.\n")?;
                    }
                    return client_error.map_or(Ok(FAILED_APP_STATUS), Err);
                }
            }
        }
        plain_response(out, "502 Bad Gateway", "php-cgi is not available.\n")?;
        Ok(FAILED_APP_STATUS)
    }
}

/// The kept connection to `up`'s php-cgi, made now if this is its first request. `None`
/// (logged) when php-cgi cannot be reached: it must be restarted (per-worker) or is being
/// restarted by the master (shared).
fn connection<'a>(
    up: &'a mut Upstream,
    settings: &PhpSettings,
    deadline: Option<Instant>,
) -> Option<&'a UnixStream> {
    if up.conn.is_none() {
        let pool = &settings.child.pool;
        let conn = match up.backend.connect(deadline) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(pool = %pool, pid = up.backend.pid(), error = %e, "cannot connect to php-cgi");
                return None;
            }
        };
        // Bounds the blocking first read of each answer (see `Relay::exchange`): past it the
        // answer is slow, the child is let go from its worker's CPU and the wait goes on.
        let mut first_read = SLOW_ANSWER;
        if !settings.request_timeout.is_zero() {
            first_read = first_read.min(settings.request_timeout);
        }
        if let Err(e) = conn.set_read_timeout(Some(first_read)) {
            tracing::error!(pool = %pool, error = %e, "cannot set the php-cgi read timeout");
            return None;
        }
        up.conn = Some(conn);
    }
    up.conn.as_ref()
}

/// The script `request` asks for, through `scripts` (php-fpm's 404 "File not found." and
/// 403 "Access denied." answered here when there is none to run).
fn find_script(
    scripts: &mut ScriptCache,
    document_root: &Path,
    limit_extensions: &[String],
    request: &Request,
    out: &mut ResponseWriter<'_>,
) -> io::Result<Option<Resolved>> {
    let filename = request.params.get("SCRIPT_FILENAME");
    let name = request.params.get("SCRIPT_NAME");
    let (key, by_name) = ScriptCache::key(document_root, filename, name);
    // An Apache proxy form with a `?` resolves according to REQUEST_URI too: not cached.
    let cacheable = !key.contains(&b'?');
    let now = Instant::now();
    if cacheable {
        if let Some(script) = scripts.get(key, by_name, now) {
            return Ok(Some(script.clone()));
        }
    }
    match resolve(
        document_root,
        filename,
        name,
        request.params.get("REQUEST_URI"),
        limit_extensions,
    ) {
        Ok(script) => {
            if cacheable {
                scripts.insert(key, by_name, script.clone(), now);
            }
            Ok(Some(script))
        }
        Err(Refusal::NotFound) => {
            plain_response(out, "404 Not Found", "File not found.\n")?;
            Ok(None)
        }
        Err(Refusal::Forbidden) => {
            plain_response(out, "403 Forbidden", "Access denied.\n")?;
            Ok(None)
        }
    }
}

impl App for Php {
    fn handle(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> io::Result<u32> {
        let Some(script) = find_script(
            &mut self.scripts,
            &self.settings.document_root,
            &self.settings.limit_extensions,
            request,
            out,
        )?
        else {
            return Ok(0);
        };
        if let Err(e) = self.encode(request, &script) {
            tracing::warn!(pool = %self.settings.child.pool, error = %e, "cannot forward the request to php-cgi");
            plain_response(
                out,
                "500 Internal Server Error",
                "Bad request parameters.\n",
            )?;
            return Ok(FAILED_APP_STATUS);
        }
        let result = self.relay(request, out);
        if self.request_buf.capacity() > KEEP_BUFFER {
            self.request_buf = Vec::new();
        }
        result
    }
}

/// The params php-fpm rewrites when it splits path info off an Apache `ProxyPass`
/// SCRIPT_FILENAME (Apache cannot send PATH_INFO there): `PATH_INFO` becomes the split-off
/// part (Apache's own value, if any and different, kept as `ORIG_PATH_INFO`); when Apache sent
/// none, the part is also taken off the end of `SCRIPT_NAME` (`/app/x.php/a` → `/app/x.php`,
/// the old value as `ORIG_SCRIPT_NAME`). Empty when nothing changes.
pub fn path_info_params<'a>(request: &'a Request, path_info: &'a [u8]) -> Vec<(&'a [u8], Vec<u8>)> {
    let mut params: Vec<(&[u8], Vec<u8>)> = Vec::new();
    match request.params.get("PATH_INFO") {
        Some(sent) if sent == path_info => return params,
        Some(sent) => params.push((b"ORIG_PATH_INFO", sent.to_vec())),
        None => {
            if let Some(name) = request.params.get("SCRIPT_NAME") {
                let decoded = percent_decode(path_info);
                if name.len() > decoded.len() && name.ends_with(&decoded) {
                    params.push((b"ORIG_SCRIPT_NAME", name.to_vec()));
                    params.push((b"SCRIPT_NAME", name[..name.len() - decoded.len()].to_vec()));
                }
            }
        }
    }
    params.push((b"PATH_INFO", path_info.to_vec()));
    params
}

/// The params a resolved script's path info replaces ([`path_info_params`]); none for a script
/// without path info (every web server but Apache's proxy).
pub fn replaced_params<'a>(request: &'a Request, script: &'a Resolved) -> Vec<(&'a [u8], Vec<u8>)> {
    script
        .path_info
        .as_deref()
        .map(|info| path_info_params(request, info))
        .unwrap_or_default()
}

/// What a PHP script is given, whichever runs it (php-cgi, embedded): the request's params,
/// with `replaced` (from [`replaced_params`]) and SCRIPT_FILENAME, the resolved script's real
/// path, in place of what the web server sent.
pub fn script_params<'a>(
    request: &'a Request,
    script: &'a Resolved,
    replaced: &'a [(&'a [u8], Vec<u8>)],
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    request
        .params
        .iter()
        .filter(move |(name, _)| {
            *name != b"SCRIPT_FILENAME" && !replaced.iter().any(|(n, _)| n == name)
        })
        .chain(replaced.iter().map(|(n, v)| (*n, v.as_slice())))
        .chain(std::iter::once((
            &b"SCRIPT_FILENAME"[..],
            script.path.as_os_str().as_bytes(),
        )))
}

/// `%XX` sequences decoded as php's `urldecode` (also `+` → space), which php-fpm applies to
/// the path info before comparing it with `SCRIPT_NAME`, only when it holds a `%`.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    if !bytes.contains(&b'%') {
        return bytes.to_vec();
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}
