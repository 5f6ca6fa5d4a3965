//! The effective configuration: what the rest of fastpm reads after loading, every default
//! applied, every path absolute, every value checked. Nothing here knows about TOML.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::broker::BrokerUrl;
use super::enums::{
    AcceptLock, AppKind, LogFormat, LogLevel, OverloadPolicy, PhpChildren, PmKind, WorkerKind,
};
use super::logs::{GlobalLogs, PoolLogs};
use super::runtime_dir::RuntimeDirSource;
use crate::listen::ListenAddress;

/// Where a configuration came from, so errors, `fastpm check` and the startup log can say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file given with `-c`; relative paths inside it are relative to its directory.
    File(PathBuf),
    /// The default compiled into the binary (conf/fastpm.toml); relative paths inside it are
    /// relative to the working directory at load time.
    Embedded,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Embedded => f.write_str("<embedded conf/fastpm.toml>"),
        }
    }
}

/// A whole loaded configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where it was read from (for messages and `fastpm check`).
    pub source: ConfigSource,
    /// Settings of the master itself.
    pub global: GlobalConfig,
    /// The pools, in the order the file lists them (status pages and logs keep that order).
    pub pools: Vec<PoolConfig>,
}

impl Config {
    /// The pool called `name`, if any (for `/status/POOL` and the worker subcommand).
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|pool| pool.name == name)
    }
}

/// `[global]`: the master process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalConfig {
    /// Verbosity of the log; `RUST_LOG` overrides it at run time.
    pub log_level: LogLevel,
    /// Human text or one JSON object per line (for log shippers).
    pub log_format: LogFormat,
    /// The master's HTTP status listener; `None` when the file says `""` (off).
    pub status_listen: Option<SocketAddr>,
    /// Private sockets and files (php-cgi upstream sockets, lock files); created 0700 and
    /// checked by `master::preflight`. Absolute. `$RUNTIME_DIRECTORY` wins over the file, and
    /// the default depends on the effective uid (see `config::runtime_dir`).
    pub runtime_dir: PathBuf,
    /// Where `runtime_dir` came from.
    pub runtime_dir_source: RuntimeDirSource,
    /// How long a graceful stop may drain before workers are killed.
    pub shutdown_timeout: Duration,
    /// Where to write the master's pid; `None` when not configured. Absolute.
    pub pid_file: Option<PathBuf>,
    /// Where held requests' messages, ids and history live (DESIGN.md §8): the master's
    /// memory (one instance), or Redis so several instances answer each other's publishes.
    pub broker: BrokerUrl,
    /// `error_log`, `log_limit` (config/logs.rs).
    pub logs: GlobalLogs,
}

/// `[pool.NAME]`: one listening socket and the workers that serve it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// The `NAME` of `[pool.NAME]`: letters, digits, `_` and `-` (it appears in URLs and paths).
    pub name: String,
    /// Worker processes (re-exec'd fastpm) or threads inside the master.
    pub workers: WorkerKind,
    /// What serialises `accept()` between workers.
    pub accept_lock: AcceptLock,
    /// How the number of workers is managed, as php-fpm's `pm`.
    pub pm: PmKind,
    /// Upper bound on workers; the only size that matters for `static`. At least 1.
    pub max_children: u32,
    /// `dynamic`: workers started at launch.
    pub start_servers: u32,
    /// `dynamic`: fewer idle workers than this starts more.
    pub min_spare_servers: u32,
    /// `dynamic`: more idle workers than this stops some.
    pub max_spare_servers: u32,
    /// `ondemand`: a worker idle this long is stopped.
    pub idle_timeout: Duration,
    /// Recycle a worker after this many requests (leaky apps); 0 = never.
    pub max_requests: u64,
    /// Connections one worker serves at once (1 for php; thousands for async apps). At least 1.
    pub max_connections: u32,
    /// End a request that runs longer than this; `Duration::ZERO` = off.
    pub request_timeout: Duration,
    /// Log requests slower than this; `Duration::ZERO` = off.
    pub slow_request: Duration,
    /// How long the pool's clients (nginx's `fastcgi_read_timeout`) wait for an answer before
    /// they give up: with the measured service rate it gives the backlog advice
    /// (`status::advice`). fastpm does not enforce it.
    pub client_timeout: Duration,
    /// `max_params`: the largest PARAMS stream (a request's CGI headers) a worker takes;
    /// beyond it the request gets 431. Bytes.
    pub max_params: u64,
    /// `max_body`: the largest request body a worker takes; beyond it 413. Bytes.
    pub max_body: u64,
    /// FastCGI path answered with the php-fpm-compatible status page; `None` = off.
    pub status_path: Option<String>,
    /// FastCGI path answered with `ping_response` (health checks); `None` = off.
    pub ping_path: Option<String>,
    /// Body of the ping answer.
    pub ping_response: String,
    /// Drop worker privileges to this user (master runs as root); `None` = keep.
    pub user: Option<String>,
    /// Drop worker privileges to this group; `None` = the user's group or keep.
    pub group: Option<String>,
    /// The listening socket.
    pub listen: ListenConfig,
    /// What runs a request.
    pub app: AppConfig,
    /// What to do with requests that waited too long in the accept queue.
    pub overload: OverloadConfig,
    /// `access_log`, `access_format`, `slowlog` (config/logs.rs).
    pub logs: PoolLogs,
}

/// `[pool.NAME.listen]`: the pool's listening socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenConfig {
    /// Where to listen; unix paths are absolute after loading. Defaults to
    /// `unix:RUNTIME_DIR/NAME.sock`.
    pub address: ListenAddress,
    /// The backlog written in the file; `None` when the file does not set it, so `--backlog`,
    /// `LISTENQ` and the default can be told apart (see `effective_backlog`).
    pub backlog: Option<u32>,
    /// Permissions of a unix socket file (0o660 by default).
    pub mode: u32,
    /// Owner of a unix socket file (so the web server can connect); `None` = unchanged.
    pub owner: Option<String>,
    /// Group of a unix socket file; `None` = unchanged.
    pub group: Option<String>,
    /// TCP: the only peers allowed to connect; empty = any. Never set for unix addresses.
    pub allowed_clients: Vec<IpAddr>,
}

/// `[pool.NAME.app]`: the application behind the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppConfig {
    /// Which runner: php-cgi, CGI scripts, an external FastCGI program, or a built-in app.
    pub kind: AppKind,
    /// php, cgi: scripts must resolve inside this directory. Absolute.
    pub document_root: PathBuf,
    /// php: the php-cgi binary (a name looked up on PATH, or a path).
    pub php_cgi: String,
    /// php: one php-cgi parent whose children share opcache, or a php-cgi per worker.
    pub php_children: PhpChildren,
    /// php: which php.ini PHP reads (php-cgi's and php-fpm's `-n` / `-c`).
    pub php_ini: PhpIni,
    /// php: scripts with other extensions get 403 (php-fpm's `security.limit_extensions`);
    /// empty = any.
    pub limit_extensions: Vec<String>,
    /// php: `-d NAME=VALUE` settings for php-cgi.
    pub ini: BTreeMap<String, String>,
    /// Extra environment for children.
    pub env: BTreeMap<String, String>,
    /// Start children with an empty environment (plus `env`), as php-fpm's `clear_env`.
    pub clear_env: bool,
    /// exec: argv of a FastCGI program that accepts on fd 0. Non-empty for `exec`.
    pub command: Vec<String>,
    /// longpoll, and GRIP from php/cgi: messages kept per channel, so a subscriber that
    /// resumes with `last_id` gets what it missed (0 = none kept). 0..=100000.
    pub history: u32,
    /// longpoll: how long a `sub` waits for a message before its timeout answer (GRIP apps
    /// say their own with `Grip-Timeout`). 1s..=24h.
    pub hold_timeout: Duration,
    /// longpoll, GRIP: held requests of this pool at once; one more gets 503 + Retry-After
    /// and counts in `rejected conn`. At least 1.
    pub max_held: u32,
}

/// `[pool.NAME.overload]`: shedding requests that waited too long in the kernel queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverloadConfig {
    /// Which shedding rule, if any.
    pub policy: OverloadPolicy,
    /// deadline: shed requests that waited longer than this. Non-zero for `deadline`.
    pub max_queue_wait: Duration,
    /// codel: acceptable standing queue wait. Non-zero for `codel`.
    pub target: Duration,
    /// codel: how long the wait must stay above `target` before shedding. Non-zero for `codel`.
    pub interval: Duration,
}

/// `php_ini`: which php.ini PHP reads, as `php-cgi`/`php-fpm` are told on their command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhpIni {
    /// `""`: PHP's own search (php-cgi: /etc/php/8.2/cgi; embedded: /etc/php/8.2/embed; each
    /// with its conf.d).
    Search,
    /// `"none"`: no php.ini and no conf.d (`-n`): PHP's built-in defaults plus `ini`.
    None,
    /// A php.ini file, or a directory holding one (`-c`); conf.d is still scanned.
    Path(PathBuf),
}
