//! Requests through libfcgi's `cgi-fcgi` (Debian libfcgi-bin), a FastCGI client that is not
//! fastpm's: its environment becomes the request's params.

use std::path::Path;
use std::process::{Command, Stdio};

use super::require;

/// The params of a GET of `uri` (`/path?query`) for `script_filename`, from `remote_addr`.
pub fn get_params(uri: &str, script_filename: &str, remote_addr: &str) -> Vec<(String, String)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    [
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", uri),
        ("SCRIPT_NAME", path),
        ("SCRIPT_FILENAME", script_filename),
        ("QUERY_STRING", query),
        ("REMOTE_ADDR", remote_addr),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Send one request with `params` to the unix socket `socket`; the response (CGI headers and
/// body) when cgi-fcgi got one (it exits 0 or with the app status; it prints nothing when it
/// could not connect).
pub fn request(socket: &Path, params: &[(String, String)]) -> Option<String> {
    let out = Command::new(require("cgi-fcgi"))
        .args(["-bind", "-connect"])
        .arg(socket)
        .env_clear()
        .envs(params.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run cgi-fcgi");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (!text.is_empty()).then_some(text)
}

/// The lines of a file (none when it does not exist).
pub fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Wait (up to 5 s) until `path` has at least `n` lines; its lines.
pub fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let lines = lines_of(path);
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
