//! The defaults written in DESIGN.md §3, in one place, and the limits values are checked against.

use std::time::Duration;

/// Largest backlog `listen()` can take (its argument is a C `int`); the kernel clamps anything
/// above `net.core.somaxconn` anyway, and the listen code reports that clamp.
pub const MAX_BACKLOG: u32 = i32::MAX as u32;

// The default of each setting of the same name, as DESIGN.md §3 writes it. `DOCUMENT_ROOT`
// resolves against the config file's directory. `runtime_dir`'s default depends on the
// effective uid and the environment: see `runtime_dir::choose`.

pub const STATUS_LISTEN: &str = "127.0.0.1:9180";
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_CHILDREN: u32 = 4;
pub const START_SERVERS: u32 = 2;
pub const MIN_SPARE_SERVERS: u32 = 1;
pub const MAX_SPARE_SERVERS: u32 = 3;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_CONNECTIONS: u32 = 1;
/// A pool's own status and ping paths are off unless configured, as php-fpm's `pm.status_path`
/// and `ping.path`: anyone who can reach the pool's socket (any local user for TCP) could read
/// every running request's URI and query string. The master's listener (127.0.0.1) has status.
pub const STATUS_PATH: Option<&str> = None;
pub const PING_PATH: Option<&str> = None;
pub const PING_RESPONSE: &str = "pong";
pub const MODE: u32 = 0o660;
pub const DOCUMENT_ROOT: &str = "php-examples";
pub const PHP_CGI: &str = "php-cgi";
/// `php_children`: see docs/BENCHMARKS.md ("Sharing opcache") for the measurements behind it.
pub const PHP_CHILDREN: super::enums::PhpChildren = super::enums::PhpChildren::Shared;
pub const LIMIT_EXTENSIONS: &[&str] = &[".php"];
pub const HISTORY: u32 = 100;
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(55);
pub const MAX_HELD: u32 = 10_000;
pub const TARGET: Duration = Duration::from_millis(5);
pub const INTERVAL: Duration = Duration::from_millis(100);

/// `max_params`: nginx sends a few KiB of CGI headers; 1 MiB leaves room and still caps what a
/// peer can make a worker buffer.
pub const MAX_PARAMS: u64 = 1 << 20;
/// `max_body`: the request body a worker holds in memory at most (php's own limit is
/// `post_max_size`, set with `ini`).
pub const MAX_BODY: u64 = 128 << 20;
/// The smallest `max_params` that can carry a request's CGI headers.
pub const MIN_MAX_PARAMS: u64 = 1 << 10;

/// `history`: messages kept per channel at most (each up to 1 MiB; Redis or memory holds them).
pub const MAX_HISTORY: u32 = 100_000;
/// `hold_timeout`: bounds that keep a typo from holding forever or timing out at once (nginx's
/// `fastcgi_read_timeout` must exceed it anyway).
pub const MIN_HOLD_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_HOLD_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
