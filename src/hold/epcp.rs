//! Pushpin's publish JSON (EPCP, `POST /publish/`, DESIGN §8) → publications, or a one-line
//! reason for a 400; and the same JSON written back by `fastpm publish`.
//!
//! ```json
//! {"items":[{"channel":"c","id":"…","prev-id":"…","formats":{"http-response":{
//!   "code":200,"reason":"OK","headers":{"Content-Type":"text/plain"},"body":"text"}}}]}
//! ```
//! `headers` may also be a list of `[name, value]` pairs (order and repeats kept); `body-bin`
//! (base64) replaces `body` for bytes that are not text. `id` and `prev-id` are accepted and
//! ignored: our broker numbers messages per channel itself (1, 2, 3, …), and a publisher's own
//! ids are not what a subscriber resumes from. Only the `http-response` format can answer a
//! held request, so `http-stream`, `ws-message` and any other are refused rather than dropped.
//! Nothing is published unless every item is valid: [`parse`] returns all or an error.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use thiserror::Error;

use super::message::{valid_channel, HttpResponse, Publication, MAX_BODY};

/// Largest publish request read. Twice [`MAX_BODY`]: room for a 1 MiB body as base64 (×4/3)
/// or as JSON text with escapes, plus the envelope; larger is refused before parsing.
pub const MAX_REQUEST: usize = 2 * MAX_BODY;

/// How many characters of a publisher's text an error quotes (the reason stays one line).
const QUOTE_CHARS: usize = 64;

/// Why a publish request is refused; Display is the one-line reason of the 400.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EpcpError {
    #[error("request body over {} MiB", MAX_REQUEST >> 20)]
    TooLarge,
    #[error("invalid JSON at line {line} column {column}: {reason}")]
    Json {
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("expected a JSON object with \"items\"")]
    NotAnObject,
    #[error("\"items\" must be a non-empty array")]
    NoItems,
    #[error("item {index}: {reason}")]
    Item { index: usize, reason: String },
}

/// Read a publish request. Sizes are checked before parsing (the request) and before keeping
/// a body (each message's, decoded, at most [`MAX_BODY`]).
pub fn parse(body: &[u8]) -> Result<Vec<Publication>, EpcpError> {
    if body.len() > MAX_REQUEST {
        return Err(EpcpError::TooLarge);
    }
    let doc: Value = serde_json::from_slice(body).map_err(json_error)?;
    let Value::Object(doc) = doc else {
        return Err(EpcpError::NotAnObject);
    };
    let items = match doc.get("items") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(_) => return Err(EpcpError::NoItems),
        None => return Err(EpcpError::NotAnObject),
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| item_of(item).map_err(|reason| EpcpError::Item { index, reason }))
        .collect()
}

/// Publications as EPCP JSON, what [`parse`] reads back: headers as pairs (order kept), the
/// body as `body` when it is UTF-8, else `body-bin`.
pub fn encode(publications: &[Publication]) -> String {
    let items: Vec<Value> = publications
        .iter()
        .map(|p| {
            let r = &p.response;
            let mut response = Map::new();
            response.insert("code".into(), json!(r.code));
            if let Some(reason) = &r.reason {
                response.insert("reason".into(), json!(reason));
            }
            let headers: Vec<Value> = r.headers.iter().map(|(n, v)| json!([n, v])).collect();
            response.insert("headers".into(), Value::Array(headers));
            match std::str::from_utf8(&r.body) {
                Ok(text) => response.insert("body".into(), json!(text)),
                Err(_) => response.insert("body-bin".into(), json!(BASE64.encode(&r.body))),
            };
            json!({"channel": p.channel, "formats": {"http-response": response}})
        })
        .collect();
    json!({ "items": items }).to_string()
}

/// serde_json's message without its " at line L column C" tail, which we say first.
fn json_error(e: serde_json::Error) -> EpcpError {
    let (line, column) = (e.line(), e.column());
    let text = e.to_string();
    let tail = format!(" at line {line} column {column}");
    let reason = text.strip_suffix(&tail).unwrap_or(&text).to_string();
    EpcpError::Json {
        line,
        column,
        reason,
    }
}

/// A publisher's text quoted for an error: escaped, at most [`QUOTE_CHARS`] characters.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// One item, or the reason it is refused (without the item's index).
fn item_of(item: &Value) -> Result<Publication, String> {
    let item = item.as_object().ok_or("not an object")?;
    let channel = match item.get("channel") {
        None => return Err("missing \"channel\"".into()),
        Some(Value::String(c)) if valid_channel(c) => c.clone(),
        Some(Value::String(c)) => return Err(format!("invalid channel {}", quoted(c))),
        Some(_) => return Err("\"channel\" must be a string".into()),
    };
    let formats = match item.get("formats") {
        None => return Err("missing \"formats\"".into()),
        Some(Value::Object(f)) => f,
        Some(_) => return Err("\"formats\" must be an object".into()),
    };
    if let Some(other) = formats.keys().find(|k| *k != "http-response") {
        return Err(format!("unknown format {}", quoted(other)));
    }
    let response = formats
        .get("http-response")
        .ok_or("no \"http-response\" format")?;
    let response = http_response(response).map_err(|e| format!("http-response: {e}"))?;
    Ok(Publication { channel, response })
}

fn http_response(value: &Value) -> Result<HttpResponse, String> {
    let r = value.as_object().ok_or("not an object")?;
    let code = match r.get("code") {
        None => 200,
        Some(c) => match c.as_u64() {
            Some(c @ 100..=599) => c as u16,
            _ => return Err(format!("code {c} is not in 100..=599")),
        },
    };
    let reason = match r.get("reason") {
        None => None,
        Some(Value::String(s)) if !has_line_break(s) => Some(s.clone()),
        Some(Value::String(s)) => return Err(format!("reason {} has CR or LF", quoted(s))),
        Some(_) => return Err("\"reason\" must be a string".into()),
    };
    let headers = match r.get("headers") {
        None => Vec::new(),
        Some(Value::Object(h)) => h
            .iter()
            .map(|(n, v)| header(n, v))
            .collect::<Result<_, _>>()?,
        Some(Value::Array(pairs)) => pairs
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(n), v]) => header(n, v),
                _ => Err("each header must be [\"name\", \"value\"]".to_string()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("\"headers\" must be an object or a list of pairs".into()),
    };
    let body = match (r.get("body"), r.get("body-bin")) {
        (Some(_), Some(_)) => return Err("both \"body\" and \"body-bin\"".into()),
        (None, None) => Vec::new(),
        (Some(Value::String(text)), None) => text.as_bytes().to_vec(),
        (None, Some(Value::String(b64))) => BASE64
            .decode(b64)
            .map_err(|e| format!("\"body-bin\" is not base64: {e}"))?,
        (Some(_), None) => return Err("\"body\" must be a string".into()),
        (None, Some(_)) => return Err("\"body-bin\" must be a string".into()),
    };
    if body.len() > MAX_BODY {
        return Err(format!("body over {} MiB", MAX_BODY >> 20));
    }
    Ok(HttpResponse {
        code,
        reason,
        headers,
        body,
    })
}

/// One header, refused when it would break or override the CGI answer: `Status` (the code
/// says it), `Grip-*` (ours to interpret, never a client's), a name that is not an HTTP token,
/// or CR/LF/NUL anywhere.
fn header(name: &str, value: &Value) -> Result<(String, String), String> {
    let Value::String(value) = value else {
        return Err(format!("header {} must have a string value", quoted(name)));
    };
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(format!("header name {} is not a token", quoted(name)));
    }
    if name.eq_ignore_ascii_case("status")
        || name.len() >= 5 && name[..5].eq_ignore_ascii_case("grip-")
    {
        return Err(format!("header {} is not allowed", quoted(name)));
    }
    if has_line_break(value) || value.contains('\0') {
        return Err(format!("header {} has CR, LF or NUL", quoted(name)));
    }
    Ok((name.to_string(), value.clone()))
}

fn has_line_break(s: &str) -> bool {
    s.contains(['\r', '\n'])
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(response: &str) -> String {
        format!(r#"{{"items":[{{"channel":"c","formats":{{"http-response":{response}}}}}]}}"#)
    }

    fn one(channel: &str, response: HttpResponse) -> Vec<Publication> {
        vec![Publication {
            channel: channel.into(),
            response,
        }]
    }

    #[test]
    fn accepted() {
        let full = HttpResponse {
            code: 404,
            reason: Some("Gone Fishing".into()),
            headers: vec![
                ("Content-Type".into(), "text/plain".into()),
                ("X-A".into(), "1".into()),
            ],
            body: b"hi\n".to_vec(),
        };
        let cases: Vec<(String, Vec<Publication>)> = vec![
            (
                r#"{"items":[{"channel":"chat","id":"a1","prev-id":"a0","formats":{"http-response":{"body":"hello"}}}]}"#.into(),
                one("chat", HttpResponse::ok(b"hello".to_vec(), None)),
            ),
            (
                item(r#"{"code":404,"reason":"Gone Fishing","headers":{"Content-Type":"text/plain","X-A":"1"},"body":"hi\n"}"#),
                one("c", full.clone()),
            ),
            (
                item(r#"{"code":404,"reason":"Gone Fishing","headers":[["Content-Type","text/plain"],["X-A","1"]],"body-bin":"aGkK"}"#),
                one("c", full),
            ),
            (
                item(r#"{"headers":[["Set-Cookie","a=1"],["Set-Cookie","b=2"]],"body-bin":"AP8="}"#),
                one("c", HttpResponse {
                    code: 200,
                    reason: None,
                    headers: vec![("Set-Cookie".into(), "a=1".into()), ("Set-Cookie".into(), "b=2".into())],
                    body: vec![0, 255],
                }),
            ),
            (
                r#"{"items":[{"channel":"a","formats":{"http-response":{}}},{"channel":"b","formats":{"http-response":{"body":""}}}]}"#.into(),
                vec![
                    Publication { channel: "a".into(), response: HttpResponse::ok(Vec::new(), None) },
                    Publication { channel: "b".into(), response: HttpResponse::ok(Vec::new(), None) },
                ],
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input.as_bytes()), Ok(expected), "{input}");
        }
    }

    #[test]
    fn refused() {
        let big = "x".repeat(MAX_BODY + 1);
        let cases: Vec<(String, &str)> = vec![
            ("{\"items\":".into(), "invalid JSON at line 1 column 9: EOF while parsing a value"),
            ("{\n\"items\": [x]}".into(), "invalid JSON at line 2 column 11: expected value"),
            ("".into(), "invalid JSON at line 1 column 0: EOF while parsing a value"),
            ("[]".into(), "expected a JSON object with \"items\""),
            ("{}".into(), "expected a JSON object with \"items\""),
            (r#"{"items":[]}"#.into(), "\"items\" must be a non-empty array"),
            (r#"{"items":{}}"#.into(), "\"items\" must be a non-empty array"),
            (r#"{"items":[1]}"#.into(), "item 0: not an object"),
            (r#"{"items":[{"formats":{}}]}"#.into(), "item 0: missing \"channel\""),
            (r#"{"items":[{"channel":7}]}"#.into(), "item 0: \"channel\" must be a string"),
            (r#"{"items":[{"channel":"a b"}]}"#.into(), "item 0: invalid channel \"a b\""),
            (r#"{"items":[{"channel":"a"}]}"#.into(), "item 0: missing \"formats\""),
            (r#"{"items":[{"channel":"a","formats":[]}]}"#.into(), "item 0: \"formats\" must be an object"),
            (r#"{"items":[{"channel":"a","formats":{}}]}"#.into(), "item 0: no \"http-response\" format"),
            (
                r#"{"items":[{"channel":"a","formats":{"http-response":{}}},{"channel":"b","formats":{"http-response":{}}},{"channel":"c","formats":{"ws-message":{"content":"x"}}}]}"#.into(),
                "item 2: unknown format \"ws-message\"",
            ),
            (
                r#"{"items":[{"channel":"a","formats":{"http-response":{},"http-stream":{"content":"x"}}}]}"#.into(),
                "item 0: unknown format \"http-stream\"",
            ),
            (item("[]"), "item 0: http-response: not an object"),
            (item(r#"{"code":99}"#), "item 0: http-response: code 99 is not in 100..=599"),
            (item(r#"{"code":600}"#), "item 0: http-response: code 600 is not in 100..=599"),
            (item(r#"{"code":"200"}"#), "item 0: http-response: code \"200\" is not in 100..=599"),
            (item(r#"{"code":200.5}"#), "item 0: http-response: code 200.5 is not in 100..=599"),
            (item(r#"{"reason":"a\r\nX: y"}"#), "item 0: http-response: reason \"a\\r\\nX: y\" has CR or LF"),
            (item(r#"{"reason":1}"#), "item 0: http-response: \"reason\" must be a string"),
            (item(r#"{"headers":{"Status":"500"}}"#), "item 0: http-response: header \"Status\" is not allowed"),
            (item(r#"{"headers":[["grip-channel","x"]]}"#), "item 0: http-response: header \"grip-channel\" is not allowed"),
            (item(r#"{"headers":{"X-A":"1\r\nSet-Cookie: a"}}"#), "item 0: http-response: header \"X-A\" has CR, LF or NUL"),
            (item(r#"{"headers":{"X-A":"\n"}}"#), "item 0: http-response: header \"X-A\" has CR, LF or NUL"),
            (item(r#"{"headers":{"X\nA":"1"}}"#), "item 0: http-response: header name \"X\\nA\" is not a token"),
            (item(r#"{"headers":{"X A":"1"}}"#), "item 0: http-response: header name \"X A\" is not a token"),
            (item(r#"{"headers":{"":"1"}}"#), "item 0: http-response: header name \"\" is not a token"),
            (item(r#"{"headers":{"X-A":1}}"#), "item 0: http-response: header \"X-A\" must have a string value"),
            (item(r#"{"headers":[["X-A"]]}"#), "item 0: http-response: each header must be [\"name\", \"value\"]"),
            (item(r#"{"headers":"X-A: 1"}"#), "item 0: http-response: \"headers\" must be an object or a list of pairs"),
            (item(r#"{"body":"a","body-bin":"YQ=="}"#), "item 0: http-response: both \"body\" and \"body-bin\""),
            (item(r#"{"body":1}"#), "item 0: http-response: \"body\" must be a string"),
            (item(r#"{"body-bin":"%%%"}"#), "item 0: http-response: \"body-bin\" is not base64: Invalid symbol 37, offset 0."),
            (item(&format!(r#"{{"body":"{big}"}}"#)), "item 0: http-response: body over 1 MiB"),
            (item(&format!(r#"{{"body-bin":"{}"}}"#, BASE64.encode(big.as_bytes()))), "item 0: http-response: body over 1 MiB"),
            (" ".repeat(MAX_REQUEST + 1), "request body over 2 MiB"),
        ];
        for (input, reason) in cases {
            let e = parse(input.as_bytes()).unwrap_err();
            assert_eq!(e.to_string(), reason, "{}", &input[..input.len().min(200)]);
            assert!(!e.to_string().contains('\n'));
        }
        // A long name is quoted in part.
        let input = format!(r#"{{"items":[{{"channel":"{}"}}]}}"#, "y".repeat(300));
        let reason = format!("item 0: invalid channel \"{}\"…", "y".repeat(QUOTE_CHARS));
        assert_eq!(parse(input.as_bytes()).unwrap_err().to_string(), reason);
    }

    #[test]
    fn body_at_the_limit_is_accepted() {
        let body = "x".repeat(MAX_BODY);
        let bin = BASE64.encode(vec![0xffu8; MAX_BODY]);
        for response in [
            format!(r#"{{"body":"{body}"}}"#),
            format!(r#"{{"body-bin":"{bin}"}}"#),
        ] {
            let p = parse(item(&response).as_bytes()).unwrap();
            assert_eq!(p[0].response.body.len(), MAX_BODY);
        }
    }

    #[test]
    fn encode_writes_text_as_body_and_bytes_as_body_bin() {
        let text = one("a", HttpResponse::ok(b"hi".to_vec(), Some("text/plain")));
        assert_eq!(
            encode(&text),
            r#"{"items":[{"channel":"a","formats":{"http-response":{"body":"hi","code":200,"headers":[["Content-Type","text/plain"]]}}}]}"#
        );
        let bytes = one("a", HttpResponse::ok(vec![0xff], None));
        assert!(encode(&bytes).contains(r#""body-bin":"/w==""#));
    }

    fn publication() -> impl Strategy<Value = Publication> {
        let name = "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}".prop_filter("not ours", |n: &String| {
            !n.eq_ignore_ascii_case("status") && !n.to_ascii_lowercase().starts_with("grip-")
        });
        let value = "[^\r\n\u{0}]{0,30}";
        let body = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            ".{0,50}".prop_map(String::into_bytes),
        ];
        (
            "[!-+\\--:<-~]{1,40}",
            100u16..=599,
            proptest::option::of("[^\r\n]{0,20}"),
            proptest::collection::vec((name, value), 0..5),
            body,
        )
            .prop_map(|(channel, code, reason, headers, body)| Publication {
                channel,
                response: HttpResponse {
                    code,
                    reason,
                    headers,
                    body,
                },
            })
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips(ps in proptest::collection::vec(publication(), 1..4)) {
            prop_assert_eq!(parse(encode(&ps).as_bytes()), Ok(ps));
        }

        #[test]
        fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&input);
        }
    }
}
