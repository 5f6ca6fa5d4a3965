//! The slow log's line: a request that ran longer than the pool's `slow_request`, named as
//! php-fpm's slow log names it — time, pool, pid, `script_filename` — with the request and
//! its duration, on one line (php-fpm writes a header line and a PHP backtrace it takes with
//! ptrace; fastpm logs when the request ends and takes no backtrace).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::line::push_escaped;
use crate::fastcgi::Params;

/// php-fpm's log time format (`[13-Jan-2025 10:00:00]`).
const SLOWLOG_TIME: &std::ffi::CStr = c"%d-%b-%Y %H:%M:%S";

/// Append the slow-log line (without newline) for a request of `pool` served by `pid` that
/// took `took`, ending at `now`.
pub fn slow_line(
    out: &mut Vec<u8>,
    now: SystemTime,
    pool: &str,
    pid: u32,
    params: &Params,
    took: Duration,
) {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    out.push(b'[');
    crate::sys::localtime::format_local(secs, SLOWLOG_TIME, out);
    out.extend_from_slice(b"] [pool ");
    push_escaped(out, pool.as_bytes());
    out.extend_from_slice(format!("] pid {pid} script_filename = ").as_bytes());
    let param = |name| params.get(name).filter(|v| !v.is_empty());
    push_escaped(out, param("SCRIPT_FILENAME").unwrap_or(b"-"));
    out.extend_from_slice(b" request = \"");
    push_escaped(out, param("REQUEST_METHOD").unwrap_or(b"-"));
    out.push(b' ');
    push_escaped(
        out,
        param("REQUEST_URI")
            .or_else(|| param("SCRIPT_NAME"))
            .unwrap_or(b"-"),
    );
    out.extend_from_slice(format!("\" duration = {:.3}s", took.as_secs_f64()).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_script_pool_pid_and_duration() {
        let params: Params = [
            ("SCRIPT_FILENAME", "/srv/www/slow.php"),
            ("REQUEST_METHOD", "GET"),
            ("REQUEST_URI", "/slow.php?n=1"),
        ]
        .into_iter()
        .collect();
        let mut out = Vec::new();
        slow_line(
            &mut out,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            "www",
            77,
            &params,
            Duration::from_millis(1503),
        );
        let line = String::from_utf8(out).unwrap();
        let (time, rest) = line.split_once("] ").unwrap();
        assert!(time.starts_with('[') && time.len() == 21, "{time}");
        assert_eq!(
            rest,
            "[pool www] pid 77 script_filename = /srv/www/slow.php request = \"GET /slow.php?n=1\" duration = 1.503s"
        );
    }

    #[test]
    fn missing_params_are_dashes() {
        let mut out = Vec::new();
        slow_line(&mut out, UNIX_EPOCH, "p", 1, &Params::new(), Duration::ZERO);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.ends_with("script_filename = - request = \"- -\" duration = 0.000s"),
            "{line}"
        );
    }
}
