//! The built-in Rust apps: `hello` (a fixed greeting), `echo` (the request back as text) and
//! `sleep` (waits, then answers — a stand-in for a slow backend when studying the queue).

use std::time::Duration;

use super::App;
use crate::fastcgi::{Request, ResponseWriter};

/// Answers every request with the same short text/plain greeting. The cheapest possible app: its
/// throughput is the cost of fastpm itself.
pub struct Hello {
    /// The whole CGI response, built once per worker.
    response: Vec<u8>,
}

impl Hello {
    pub fn new(pool: &str) -> Self {
        let response =
            format!("Content-Type: text/plain; charset=utf-8\r\n\r\nHello from fastpm pool {pool}\n");
        Self {
            response: response.into_bytes(),
        }
    }
}

impl App for Hello {
    fn handle(&mut self, _request: &Request, out: &mut ResponseWriter<'_>) -> std::io::Result<u32> {
        out.stdout(&self.response)?;
        Ok(0)
    }
}

/// Sends the request back: every param as `NAME=VALUE` on its own line, a blank line, then the
/// body bytes unchanged. For checking what a web server sends.
pub struct Echo;

impl App for Echo {
    fn handle(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> std::io::Result<u32> {
        let mut text = Vec::with_capacity(256 + request.stdin.len());
        text.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n\r\n");
        for (name, value) in request.params.iter() {
            text.extend_from_slice(name);
            text.push(b'=');
            text.extend_from_slice(value);
            text.push(b'\n');
        }
        text.push(b'\n');
        text.extend_from_slice(&request.stdin);
        out.stdout(&text)?;
        Ok(0)
    }
}

/// Sleeps `ms` milliseconds (from the query string, default 100, capped) and then answers.
pub struct Sleep;

/// Default sleep when the query string does not say.
pub const DEFAULT_SLEEP_MS: u64 = 100;
/// Upper bound, so a typo cannot park a worker for hours.
pub const MAX_SLEEP_MS: u64 = 600_000;

/// `ms=250` (or a bare `250`) anywhere in the query string; default otherwise.
pub fn sleep_ms(query: &str) -> u64 {
    let pick = query.split('&').find_map(|pair| match pair.split_once('=') {
        Some(("ms", v)) => v.parse::<u64>().ok(),
        None => pair.parse::<u64>().ok(),
        _ => None,
    });
    pick.unwrap_or(DEFAULT_SLEEP_MS).min(MAX_SLEEP_MS)
}

impl App for Sleep {
    fn handle(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> std::io::Result<u32> {
        let ms = sleep_ms(request.params.get_str("QUERY_STRING").unwrap_or(""));
        std::thread::sleep(Duration::from_millis(ms));
        let text = format!("Content-Type: text/plain; charset=utf-8\r\n\r\nslept {ms} ms\n");
        out.stdout(text.as_bytes())?;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_ms_reads_the_query() {
        let table = [
            ("", DEFAULT_SLEEP_MS),
            ("ms=250", 250),
            ("a=1&ms=5", 5),
            ("300", 300),
            ("ms=abc", DEFAULT_SLEEP_MS),
            ("ms=99999999999", MAX_SLEEP_MS),
            ("x=7", DEFAULT_SLEEP_MS),
        ];
        for (query, want) in table {
            assert_eq!(sleep_ms(query), want, "query {query:?}");
        }
    }
}
