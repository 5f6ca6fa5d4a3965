//! `fastpm request ADDRESS PATH`: one FastCGI request, like `cgi-fcgi -bind -connect`, with the
//! CGI variables a web server would send; the response's STDOUT is printed as is, its STDERR to
//! stderr. Connecting retries with mod_cgid's sliding timer when the queue is full or the server
//! is not up yet.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use fastpm::fastcgi::client::{connect_with_retry, round_trip, ClientRequest, RetryPolicy};
use fastpm::listen::ListenAddress;

#[derive(clap::Args)]
pub struct RequestArgs {
    /// unix:PATH, IP:PORT or [IPV6]:PORT (a bare path is taken as a unix socket).
    address: String,
    /// Request path, with an optional query string: /index.php?a=1
    path: String,
    /// Extra or overriding param, NAME=VALUE (repeatable).
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Request body from a file, or - for stdin (makes the method POST).
    #[arg(long)]
    body: Option<PathBuf>,
}

/// Bad arguments: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// The params a web server would send for `path` (nginx's fastcgi_params), before `-p` overrides.
/// SCRIPT_FILENAME is the path itself (php-fpm answers nothing without one, not even `/ping`);
/// fastpm's php and cgi pools read a SCRIPT_FILENAME equal to SCRIPT_NAME as "in my
/// document_root", so `fastpm request ADDR /hello.php` runs their hello.php.
pub fn default_params(path: &str, body_len: usize) -> Vec<(String, String)> {
    let (script, query) = path.split_once('?').unwrap_or((path, ""));
    let method = if body_len > 0 { "POST" } else { "GET" };
    let params = vec![
        ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
        ("SERVER_SOFTWARE", "fastpm".to_string()),
        ("SERVER_PROTOCOL", "HTTP/1.1".to_string()),
        ("SERVER_NAME", "localhost".to_string()),
        ("SERVER_ADDR", "127.0.0.1".to_string()),
        ("SERVER_PORT", "80".to_string()),
        ("REMOTE_ADDR", "127.0.0.1".to_string()),
        ("REMOTE_PORT", "0".to_string()),
        ("REQUEST_METHOD", method.to_string()),
        ("REQUEST_URI", path.to_string()),
        ("DOCUMENT_URI", script.to_string()),
        ("SCRIPT_NAME", script.to_string()),
        ("SCRIPT_FILENAME", script.to_string()),
        ("QUERY_STRING", query.to_string()),
        (
            "CONTENT_LENGTH",
            if body_len > 0 {
                body_len.to_string()
            } else {
                String::new()
            },
        ),
        (
            "CONTENT_TYPE",
            if body_len > 0 {
                "application/x-www-form-urlencoded".to_string()
            } else {
                String::new()
            },
        ),
    ];
    params
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Apply `NAME=VALUE` overrides (a new name is appended).
pub fn apply_overrides(
    params: &mut Vec<(String, String)>,
    overrides: &[String],
) -> Result<(), UsageError> {
    for item in overrides {
        let (name, value) = item
            .split_once('=')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| UsageError(format!("-p {item:?}: expected NAME=VALUE")))?;
        match params.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.to_string(),
            None => params.push((name.to_string(), value.to_string())),
        }
    }
    Ok(())
}

/// `unix:PATH`, `IP:PORT`, or a bare absolute path (a unix socket); shared with `bench`.
pub fn parse_address(text: &str) -> Result<ListenAddress, UsageError> {
    if text.starts_with('/') {
        return Ok(ListenAddress::Unix(text.into()));
    }
    text.parse()
        .map_err(|e| UsageError(format!("address: {e}")))
}

/// A `--body` argument's bytes: the file, or stdin for `-` (shared with `publish`).
pub fn read_body(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .context("cannot read the body from stdin")?;
        return Ok(b);
    }
    std::fs::read(path).with_context(|| format!("cannot read body file {}", path.display()))
}

pub fn run(args: RequestArgs) -> anyhow::Result<ExitCode> {
    let address = parse_address(&args.address)?;
    let body = match &args.body {
        None => Vec::new(),
        Some(p) => read_body(p)?,
    };
    let mut params = default_params(&args.path, body.len());
    apply_overrides(&mut params, &args.params)?;
    let request = ClientRequest {
        params: params
            .into_iter()
            .map(|(k, v)| (k.into_bytes(), v.into_bytes()))
            .collect(),
        body,
        keep_conn: false,
    };
    let (mut stream, _attempts) = connect_with_retry(&address, &RetryPolicy::default())
        .with_context(|| format!("cannot connect to {address}"))?;
    let response = round_trip(&mut stream, 1, &request)
        .with_context(|| format!("request to {address} failed"))?;
    std::io::stdout().write_all(&response.stdout)?;
    std::io::stdout().flush()?;
    std::io::stderr().write_all(&response.stderr)?;
    Ok(if response.protocol_status == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "fastpm: request ended with protocol status {} (app status {})",
            response.protocol_status, response.app_status
        );
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_for_path_with_query() {
        let p = default_params("/sleep?ms=5", 0);
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SCRIPT_NAME"), Some("/sleep"));
        assert_eq!(get("QUERY_STRING"), Some("ms=5"));
        assert_eq!(get("REQUEST_METHOD"), Some("GET"));
        assert_eq!(get("REQUEST_URI"), Some("/sleep?ms=5"));
    }

    #[test]
    fn overrides_replace_and_append() {
        let mut p = default_params("/x", 3);
        apply_overrides(&mut p, &["REQUEST_METHOD=PUT".into(), "HTTP_X=1".into()]).unwrap();
        assert!(p.contains(&("REQUEST_METHOD".into(), "PUT".into())));
        assert!(p.contains(&("HTTP_X".into(), "1".into())));
        assert!(apply_overrides(&mut p, &["=x".into()]).is_err());
        assert!(apply_overrides(&mut p, &["novalue".into()]).is_err());
    }
}
