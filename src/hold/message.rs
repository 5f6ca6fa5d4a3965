//! What is published and what a held request is answered with. A publication carries an HTTP
//! response (Pushpin's `http-response` format: code, reason, headers, body); the broker gives
//! it the channel's next id. Shared read-only between every request it answers (`Arc`).

use std::sync::Arc;

/// Longest channel name accepted anywhere (publish, subscribe, GRIP). Longer: refused.
pub const MAX_CHANNEL_LEN: usize = 256;

/// Largest message body a publication may carry (DESIGN §8: over 1 MiB is a 400).
pub const MAX_BODY: usize = 1 << 20;

/// An HTTP response to send to a held request, as GRIP's `http-response` format has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code; 200 when the publisher gave none.
    pub code: u16,
    /// Reason phrase, when the publisher gave one (otherwise the standard one is used).
    pub reason: Option<String>,
    /// Header lines in order. Never `Status` (the code says it) and never `Grip-*`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A 200 with `body` and, when given, its `Content-Type`.
    pub fn ok(body: Vec<u8>, content_type: Option<&str>) -> Self {
        Self {
            code: 200,
            reason: None,
            headers: content_type
                .map(|t| vec![("Content-Type".to_string(), t.to_string())])
                .unwrap_or_default(),
            body,
        }
    }
}

/// One message to publish on one channel (its id is the broker's to give).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    pub channel: String,
    pub response: HttpResponse,
}

/// A published message as subscribers receive it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub channel: String,
    /// Per channel, increasing from 1, given by the broker.
    pub id: u64,
    pub response: HttpResponse,
}

pub type SharedMessage = Arc<Message>;

/// Whether `name` may be a channel: 1..=[`MAX_CHANNEL_LEN`] bytes of visible ASCII other than
/// `;` and `,` (GRIP's header syntax uses them), no `/`-only tricks needed: any other byte is
/// refused so a name is the same in a header, a path and Redis.
pub fn valid_channel(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        for (name, ok) in [
            ("chat", true),
            ("room-1/a.b_c", true),
            ("", false),
            ("a b", false),
            ("a;b", false),
            ("a,b", false),
            ("é", false),
            (&"x".repeat(MAX_CHANNEL_LEN), true),
            (&"x".repeat(MAX_CHANNEL_LEN + 1), false),
        ] {
            assert_eq!(valid_channel(name), ok, "{name:?}");
        }
    }
}
