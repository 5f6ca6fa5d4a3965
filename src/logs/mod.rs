//! The logs php-fpm users expect: a per-pool access log (`access_log`, `access_format` with
//! php-fpm's `%` fields and fastpm's `%{queue_wait}`), the error log (`[global] error_log`),
//! the slow log (`slowlog`), all reopened on `USR1`; and `log_limit`, the bound on the lines
//! an application writes to stderr.
//!
//! # Who writes the files: the master, alone
//!
//! Worker processes run as the pool's `user` (www-data) and may not be able to open the log
//! paths at all (`/var/log/fastpm/` belongs to root). php-fpm's answer is to open the files in
//! the master and let children inherit the descriptors; on `USR1` its master reopens them and,
//! because a child's inherited descriptor still points at the renamed file, kills every child
//! with `SIGQUIT` so new children inherit the new one (`fpm_log_open`) — every worker restarts
//! on each logrotate.
//!
//! fastpm keeps the first half and replaces the second: **the master owns every log file, and
//! a worker process writes its lines into a pipe the master reads** (`relay`). The pipe is the
//! worker's stderr, so its tracing output (and a panic message) reaches the error log by the
//! same way; access and slow-log lines carry a small routing tag. Worker threads inside the
//! master write to the files directly.
//!
//! Why this loses no line across logrotate's `mv` + `kill -USR1`:
//! - Until the reopen, the master's descriptor is still the renamed file: lines written after
//!   the `mv` land there (the old file), as with php-fpm.
//! - The reopen opens the path again (a new file) and swaps it in under the lock every write
//!   takes (`file::LogFile`), so each batch of lines lands whole in one file or the other.
//! - Lines a worker writes meanwhile wait in the pipe (1 MiB) and go to the new file. Workers
//!   never hold a descriptor of a log file, so none keeps writing into the renamed file after
//!   the reopen, and none has to restart.
//! - A failed reopen (the directory is gone, permissions) keeps the old file and says so.
//!
//! Who owns the new file: the master's user — root when fastpm runs as root — with mode 0600,
//! exactly as php-fpm creates its logs. Not the pool's user: a worker never opens the file, so
//! it needs no access, and the application (PHP, running as the pool's user) cannot read,
//! truncate or rewrite the log of its own requests. (logrotate's `create` line may set another
//! owner on the file it creates; fastpm then appends to that file.)
//!
//! Why lines stay whole: a pipe write of at most `PIPE_BUF` (4096) bytes is atomic, so
//! every line is written with one `write` and bounded by `log_limit` (at most 4000); the
//! master appends whole lines (`O_APPEND`), batching the lines of one read into one write.
//!
//! Costs: one pipe write per request in the worker, one read and one file write per batch in
//! the master's `fastpm-logs` thread. When the master cannot keep up the pipe fills and
//! workers wait on it — the same back-pressure a slow disk puts on php-fpm's children.
//!
//! Not covered: a response answered by the master's holder after a held request (§8) is
//! logged with the status the app gave when the worker let it go; requests the front answers
//! itself (431/413 limits) and requests ended by `request_timeout`'s watchdog have no line;
//! changing a log path needs a restart (a reload keeps the master's files).

mod file;
pub mod format;
pub mod line;
mod master_files;
pub mod relay;
mod request_log;
pub mod response_head;
mod slow;
mod state;
mod writer;

pub use file::{OpenError, LOG_FILE_MODE};
pub use format::{AccessFormat, FormatError, DEFAULT_ACCESS_FORMAT};
pub use line::{stderr_lines, DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT, MIN_LOG_LIMIT};
pub use master_files::Reopened;
pub use request_log::{access, slow_request, Finished, RequestClock};
pub use response_head::ResponseHead;
pub use state::{
    finish, init_master, init_worker, log_limit, relay_stderr_to, relay_to, reopen, start_relay,
    LogSetupError, RELAY_ENV,
};
pub use writer::ErrorLogWriter;

/// An application's stderr line for the log: control bytes escaped, cut to `log_limit`.
pub fn bounded(line: &[u8]) -> String {
    line::bounded_text(line, log_limit())
}
