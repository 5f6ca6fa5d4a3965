//! `fastpm publish CHANNEL [MESSAGE|--body FILE|-]` (DESIGN.md §2, §8): one message to the
//! requests held on a channel, sent to the master's `POST /publish/` as Pushpin's EPCP JSON —
//! the same door GRIP publishers use, so what works here works for them. Prints the master's
//! answer; exit 0 on 2xx, 1 on another answer or no answer, 2 on bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;

use fastpm::hold::message::valid_channel;
use fastpm::status::client;

/// The status listener of the embedded default config, at its publish path.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9180/publish/";

/// Connect, write and read bound. Longer than `fastpm status`'s: the master answers a publish
/// once its broker took it (Redis is a network away; while it is down the master says 503).
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct PublishArgs {
    /// The channel: 1 to 256 visible ASCII characters other than ';' and ','.
    channel: String,
    /// The message; `-` reads it from stdin.
    #[arg(conflicts_with = "body")]
    message: Option<String>,
    /// The message from a file, or - for stdin.
    #[arg(long, value_name = "FILE")]
    body: Option<PathBuf>,
    /// The master's publish endpoint (its status listener).
    #[arg(long, default_value = DEFAULT_URL)]
    url: String,
    /// Content-Type the subscribers receive [default: text/plain; charset=utf-8 for UTF-8
    /// text, application/octet-stream otherwise].
    #[arg(long = "content-type", value_name = "TYPE")]
    content_type: Option<String>,
}

/// Bad arguments: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PublishUsageError(String);

pub fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    if !valid_channel(&args.channel) {
        return Err(PublishUsageError(format!(
            "channel {:?}: expected 1 to 256 visible ASCII characters other than ';' and ','",
            args.channel
        ))
        .into());
    }
    client::parse_url(&args.url).map_err(|e| PublishUsageError(e.to_string()))?;
    if let Some(t) = &args.content_type {
        if t.is_empty() || t.chars().any(char::is_control) {
            return Err(PublishUsageError(format!(
                "--content-type {t:?}: expected a media type on one line"
            ))
            .into());
        }
    }
    let message = match (&args.message, &args.body) {
        (Some(m), None) if m == "-" => crate::cli_request::read_body("-".as_ref())?,
        (Some(m), None) => m.clone().into_bytes(),
        (None, Some(path)) => crate::cli_request::read_body(path)?,
        _ => {
            return Err(PublishUsageError(
                "what to publish? give a MESSAGE, --body FILE, or - to read stdin".into(),
            )
            .into())
        }
    };
    let content_type = args
        .content_type
        .unwrap_or_else(|| default_content_type(&message).to_string());
    let json = epcp_json(&args.channel, &message, &content_type);
    let response = client::post(&args.url, "application/json", json.as_bytes(), TIMEOUT)
        .with_context(|| format!("cannot publish to {}", args.url))?;
    print!("{}", response.body);
    client::into_success(&args.url, response)?;
    Ok(ExitCode::SUCCESS)
}

/// What subscribers are told the message is when `--content-type` does not say.
pub fn default_content_type(message: &[u8]) -> &'static str {
    if std::str::from_utf8(message).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

/// Pushpin's EPCP publish body for one message on `channel`, answered to held requests as a
/// 200 of `content_type`: `{"items":[{"channel","formats":{"http-response":{"code":200,
/// "headers":{"Content-Type"},"body"}}}]}`; bytes that are not UTF-8 go base64 in `body-bin`.
pub fn epcp_json(channel: &str, message: &[u8], content_type: &str) -> String {
    let mut response = serde_json::json!({
        "code": 200,
        "headers": {"Content-Type": content_type},
    });
    match std::str::from_utf8(message) {
        Ok(text) => response["body"] = text.into(),
        Err(_) => {
            response["body-bin"] = base64::engine::general_purpose::STANDARD
                .encode(message)
                .into()
        }
    }
    serde_json::json!({
        "items": [{"channel": channel, "formats": {"http-response": response}}]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn epcp_bodies() {
        let table: [(&[u8], &str, Value); 4] = [
            (b"hello", "text/plain", json!({"body": "hello"})),
            (b"", "text/plain", json!({"body": ""})),
            (
                "héllo \"q\"\n".as_bytes(),
                "t",
                json!({"body": "héllo \"q\"\n"}),
            ),
            (&[0xff, 0x00, 0x80], "image/x", json!({"body-bin": "/wCA"})),
        ];
        for (message, content_type, body) in table {
            let got: Value = serde_json::from_str(&epcp_json("ch", message, content_type)).unwrap();
            let mut response = json!({"code": 200, "headers": {"Content-Type": content_type}});
            for (k, v) in body.as_object().unwrap() {
                response[k] = v.clone();
            }
            let want =
                json!({"items": [{"channel": "ch", "formats": {"http-response": response}}]});
            assert_eq!(got, want, "{message:?}");
        }
    }

    #[test]
    fn default_content_types() {
        assert_eq!(default_content_type(b"hi"), "text/plain; charset=utf-8");
        assert_eq!(default_content_type(b""), "text/plain; charset=utf-8");
        assert_eq!(default_content_type(&[0xc3]), "application/octet-stream");
    }
}
