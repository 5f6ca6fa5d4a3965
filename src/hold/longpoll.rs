//! The built-in `kind = "longpoll"` app (nchan-like, DESIGN §8): which operation a request's
//! path and method ask for ([`route`]), and every answer it gives, as CGI bytes (what the holder
//! or a worker writes as FastCGI STDOUT). GRIP answers use [`cgi_response`] too
//! ([`grip_answer`]): a message's `http-response` rendered as CGI is the same thing whoever
//! held the request.
//!
//! Paths end in `sub/CHANNEL` (`GET`, `HEAD`: wait for the next message) or `pub/CHANNEL`
//! (`POST`, `PUT`: publish the body); any prefix before them is allowed (`/chat/sub/room1`), so
//! the pool can sit under any nginx `location`. The channel segment is percent-decoded (so
//! `a%2Fb` names `a/b`); nginx's `DOCUMENT_URI` arrives decoded already, which decodes a `%`
//! twice: channel names meant for browsers should avoid `%`.

use super::message::{valid_channel, HttpResponse, Message};
use crate::status::http::percent_decode;

/// What a request asks the longpoll app to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Wait for a message on `channel`; with `after`, answer at once with the first retained
    /// message after that id.
    Sub { channel: String, after: Option<u64> },
    /// Publish the request body on `channel`.
    Pub { channel: String },
}

/// The outcome of [`route`]: an operation, or which error answer to give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Op(Op),
    /// The path does not end in `sub/NAME` or `pub/NAME`.
    NotFound,
    /// Wrong method for the path; `allow` is the `Allow` header's value.
    MethodNotAllowed {
        allow: &'static str,
    },
    /// A bad channel name or resume id; the one-line reason for the 400.
    BadRequest(String),
}

/// What [`route`] reads of a request (the FastCGI params it needs).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestView<'a> {
    /// `DOCUMENT_URI`, else `SCRIPT_NAME`.
    pub path: &'a str,
    /// `REQUEST_METHOD`.
    pub method: &'a str,
    /// `QUERY_STRING`.
    pub query: &'a str,
    /// `HTTP_LAST_EVENT_ID` (EventSource's reconnect header).
    pub last_event_id: Option<&'a str>,
    /// `HTTP_IF_NONE_MATCH` (a browser polling the same URL sends our last `ETag` back).
    pub if_none_match: Option<&'a str>,
}

pub const SUB_METHODS: &str = "GET, HEAD";
pub const PUB_METHODS: &str = "POST, PUT";

/// The body type of answers whose message has none.
const DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Which operation `r` asks for. Checked in this order: the path (404), the method (405), the
/// channel name and resume id (400).
pub fn route(r: &RequestView) -> Route {
    let mut segments = r.path.rsplitn(3, '/');
    let (Some(name), Some(op)) = (segments.next(), segments.next()) else {
        return Route::NotFound;
    };
    let (methods, sub) = match op {
        "sub" => (SUB_METHODS, true),
        "pub" => (PUB_METHODS, false),
        _ => return Route::NotFound,
    };
    if name.is_empty() {
        return Route::NotFound;
    }
    if !methods.split(", ").any(|m| m == r.method) {
        return Route::MethodNotAllowed { allow: methods };
    }
    let channel = match percent_decode(name) {
        Some(c) if valid_channel(&c) => c,
        _ => return Route::BadRequest(format!("invalid channel name {name:?}")),
    };
    if !sub {
        return Route::Op(Op::Pub { channel });
    }
    match resume_id(r) {
        Ok(after) => Route::Op(Op::Sub { channel, after }),
        Err(reason) => Route::BadRequest(reason),
    }
}

/// The id a subscriber has seen: `last_id` in the query, else `Last-Event-ID`, else
/// `If-None-Match` (`12`, `"12"` or `W/"12"`). The first one present decides; an empty value
/// counts as absent (a client's first poll often sends `?last_id=`), anything else that is not
/// an id is an error rather than ignored, since ignoring it would replay or skip messages.
fn resume_id(r: &RequestView) -> Result<Option<u64>, String> {
    let from_query = r
        .query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "last_id")
        .map(|(_, value)| value);
    let (source, value) = if let Some(v) = from_query.filter(|v| !v.is_empty()) {
        ("last_id", v)
    } else if let Some(v) = r.last_event_id.map(str::trim).filter(|v| !v.is_empty()) {
        ("Last-Event-ID", v)
    } else if let Some(v) = r.if_none_match.map(str::trim).filter(|v| !v.is_empty()) {
        let tag = v.strip_prefix("W/").unwrap_or(v);
        let unquoted = tag
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(tag);
        return unquoted
            .parse()
            .map(Some)
            .map_err(|_| format!("If-None-Match {v:?} is not a message id"));
    } else {
        return Ok(None);
    };
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("{source} {value:?} is not a message id"))
}

/// `r` as CGI output: `Status: CODE REASON` (the standard phrase when `reason` is None), `r`'s
/// headers, then `extra`, a `Content-Type` of text when neither gave one and there is a body,
/// the blank line and the body.
pub fn cgi_response(r: &HttpResponse, extra: &[(&str, &str)]) -> Vec<u8> {
    let reason = r
        .reason
        .as_deref()
        .or_else(|| standard_reason(r.code))
        .unwrap_or("");
    let headers = r
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain(extra.iter().copied());
    let has_type = headers
        .clone()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    let mut out = Vec::with_capacity(128 + r.body.len());
    out.extend_from_slice(format!("Status: {} {reason}", r.code).trim_end().as_bytes());
    out.extend_from_slice(b"\r\n");
    let default_type =
        (!has_type && !r.body.is_empty()).then_some(("Content-Type", DEFAULT_CONTENT_TYPE));
    for (name, value) in headers.chain(default_type) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&r.body);
    out
}

/// HTTP's reason phrase for `code`, when it has one.
fn standard_reason(code: u16) -> Option<&'static str> {
    hyper::StatusCode::from_u16(code).ok()?.canonical_reason()
}

/// A message as the answer to a subscriber: its response plus `Message-Id`, `ETag: "ID"` (a
/// browser loop resumes through `If-None-Match`), `Cache-Control: no-cache`, and, when messages
/// between the subscriber's id and this one are no longer retained, `Messages-Lost: N`.
pub fn message_answer(m: &Message, lost: u64) -> Vec<u8> {
    let etag = format!("\"{}\"", m.id);
    answer_with_id(m, lost, &[("ETag", &etag), ("Cache-Control", "no-cache")])
}

/// A message as the answer to a GRIP hold: the publisher's response as it is (its headers
/// decide caching), plus `Message-Id` and, on a gap, `Messages-Lost`. The id is the only way
/// the app's client learns what to send back as `prev-id` (publishers' own ids are ignored,
/// [`super::epcp`]); without it a GRIP client could not resume.
pub fn grip_answer(m: &Message, lost: u64) -> Vec<u8> {
    answer_with_id(m, lost, &[])
}

/// `m`'s response plus `Message-Id`, then `between`, then `Messages-Lost` when `lost` > 0.
fn answer_with_id(m: &Message, lost: u64, between: &[(&str, &str)]) -> Vec<u8> {
    let id = m.id.to_string();
    let lost = lost.to_string();
    let mut extra = vec![("Message-Id", id.as_str())];
    extra.extend_from_slice(between);
    if lost != "0" {
        extra.push(("Messages-Lost", &lost));
    }
    cgi_response(&m.response, &extra)
}

/// Nothing arrived within `hold_timeout`: `204 No Content`, not cached; the client polls again
/// with the same resume id.
pub fn timeout_answer() -> Vec<u8> {
    cgi_response(&status_only(204), &[("Cache-Control", "no-cache")])
}

/// A publish was taken: `201 Created` when at least one subscriber of this instance was
/// answered, else `202 Accepted` (kept in history for a resume); body `{"id":ID,"subscribers":N}`.
pub fn published_answer(id: u64, subscribers: usize) -> Vec<u8> {
    let code = if subscribers > 0 { 201 } else { 202 };
    let response = HttpResponse {
        body: format!(r#"{{"id":{id},"subscribers":{subscribers}}}"#).into_bytes(),
        ..status_only(code)
    };
    cgi_response(&response, &[("Content-Type", "application/json")])
}

/// An error with a one-line text body (`reason`, CR/LF turned into spaces).
pub fn error_answer(status: u16, reason: &str) -> Vec<u8> {
    error_with(status, reason, &[])
}

/// 405 for [`Route::MethodNotAllowed`], with its `Allow` header.
pub fn method_not_allowed_answer(allow: &str) -> Vec<u8> {
    error_with(405, "method not allowed", &[("Allow", allow)])
}

/// `max_held` reached (or the broker is down): 503 with `Retry-After`.
pub fn unavailable_answer(retry_after_s: u32) -> Vec<u8> {
    let retry = retry_after_s.to_string();
    error_with(
        503,
        "service unavailable, retry later",
        &[("Retry-After", &retry)],
    )
}

fn error_with(status: u16, reason: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut body = reason.replace(['\r', '\n'], " ");
    body.push('\n');
    let response = HttpResponse {
        body: body.into_bytes(),
        ..status_only(status)
    };
    cgi_response(&response, extra)
}

fn status_only(code: u16) -> HttpResponse {
    HttpResponse {
        code,
        reason: None,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(method: &'a str, path: &'a str, query: &'a str) -> RequestView<'a> {
        RequestView {
            path,
            method,
            query,
            ..RequestView::default()
        }
    }

    fn sub(channel: &str, after: Option<u64>) -> Route {
        Route::Op(Op::Sub {
            channel: channel.into(),
            after,
        })
    }

    fn publish(channel: &str) -> Route {
        Route::Op(Op::Pub {
            channel: channel.into(),
        })
    }

    fn bad(reason: &str) -> Route {
        Route::BadRequest(reason.into())
    }

    #[test]
    fn routes() {
        let not_allowed_sub = Route::MethodNotAllowed { allow: "GET, HEAD" };
        let not_allowed_pub = Route::MethodNotAllowed { allow: "POST, PUT" };
        for (request, expected) in [
            (view("GET", "/sub/room1", ""), sub("room1", None)),
            (view("HEAD", "/sub/room1", ""), sub("room1", None)),
            (view("GET", "/chat/sub/room1", ""), sub("room1", None)),
            (view("GET", "/a/b/sub/x", ""), sub("x", None)),
            (view("GET", "sub/x", ""), sub("x", None)),
            (view("GET", "/sub/a%2Fb%41", ""), sub("a/bA", None)),
            (view("POST", "/pub/room1", ""), publish("room1")),
            (
                view("PUT", "/chat/pub/room1", "last_id=zz"),
                publish("room1"),
            ),
            // Not a sub/pub path.
            (view("GET", "/", ""), Route::NotFound),
            (view("GET", "", ""), Route::NotFound),
            (view("GET", "/room1", ""), Route::NotFound),
            (view("GET", "/sub", ""), Route::NotFound),
            (view("GET", "/sub/", ""), Route::NotFound),
            (view("GET", "/sub/room1/", ""), Route::NotFound),
            (view("GET", "/SUB/room1", ""), Route::NotFound),
            (view("GET", "/subs/room1", ""), Route::NotFound),
            (view("GET", "/sub/a/b", ""), Route::NotFound),
            // Wrong method.
            (view("POST", "/sub/room1", ""), not_allowed_sub.clone()),
            (view("get", "/sub/room1", ""), not_allowed_sub.clone()),
            (view("DELETE", "/sub/bad%zz", ""), not_allowed_sub),
            (view("GET", "/pub/room1", ""), not_allowed_pub.clone()),
            (view("", "/pub/room1", ""), not_allowed_pub),
            // Bad channel.
            (
                view("GET", "/sub/a%20b", ""),
                bad(r#"invalid channel name "a%20b""#),
            ),
            (
                view("GET", "/sub/a%2", ""),
                bad(r#"invalid channel name "a%2""#),
            ),
            (
                view("GET", "/sub/%ff", ""),
                bad(r#"invalid channel name "%ff""#),
            ),
            (
                view("GET", "/sub/a;b", ""),
                bad(r#"invalid channel name "a;b""#),
            ),
            (
                view("POST", "/pub/a,b", ""),
                bad(r#"invalid channel name "a,b""#),
            ),
            (
                view("GET", &format!("/sub/{}", "x".repeat(257)), ""),
                bad(&format!("invalid channel name {:?}", "x".repeat(257))),
            ),
            // Resume ids from the query.
            (view("GET", "/sub/c", "last_id=12"), sub("c", Some(12))),
            (
                view("GET", "/sub/c", "a=1&last_id=0&last_id=5"),
                sub("c", Some(0)),
            ),
            (view("GET", "/sub/c", "last_id="), sub("c", None)),
            (view("GET", "/sub/c", "last_ids=3&x"), sub("c", None)),
            (
                view("GET", "/sub/c", "last_id=-1"),
                bad(r#"last_id "-1" is not a message id"#),
            ),
            (
                view("GET", "/sub/c", "last_id=18446744073709551616"),
                bad(r#"last_id "18446744073709551616" is not a message id"#),
            ),
        ] {
            assert_eq!(route(&request), expected, "{request:?}");
        }
    }

    #[test]
    fn resume_headers_and_their_order() {
        let headers = |query, event: Option<&'static str>, inm: Option<&'static str>| RequestView {
            path: "/sub/c",
            method: "GET",
            query,
            last_event_id: event,
            if_none_match: inm,
        };
        for (request, expected) in [
            (headers("", Some("7"), None), sub("c", Some(7))),
            (headers("", Some(" 7 "), None), sub("c", Some(7))),
            (headers("", None, Some("\"12\"")), sub("c", Some(12))),
            (headers("", None, Some("12")), sub("c", Some(12))),
            (headers("", None, Some("W/\"12\"")), sub("c", Some(12))),
            (headers("", None, Some("")), sub("c", None)),
            // last_id, then Last-Event-ID, then If-None-Match.
            (
                headers("last_id=1", Some("2"), Some("3")),
                sub("c", Some(1)),
            ),
            (headers("last_id=", Some("2"), Some("3")), sub("c", Some(2))),
            (headers("", Some(""), Some("\"3\"")), sub("c", Some(3))),
            (
                headers("last_id=x", Some("2"), None),
                bad(r#"last_id "x" is not a message id"#),
            ),
            (
                headers("", Some("abc"), Some("3")),
                bad(r#"Last-Event-ID "abc" is not a message id"#),
            ),
            (
                headers("", None, Some("*")),
                bad(r#"If-None-Match "*" is not a message id"#),
            ),
            (
                headers("", None, Some("\"12")),
                bad(r#"If-None-Match "\"12" is not a message id"#),
            ),
            (
                headers("", None, Some("\"1\", \"2\"")),
                bad(r#"If-None-Match "\"1\", \"2\"" is not a message id"#),
            ),
        ] {
            assert_eq!(route(&request), expected, "{request:?}");
        }
    }

    fn message(response: HttpResponse) -> Message {
        Message {
            channel: "c".into(),
            id: 42,
            response,
        }
    }

    #[test]
    fn answers() {
        let custom = HttpResponse {
            code: 299,
            reason: None,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("X-A".into(), "1".into()),
            ],
            body: b"{}".to_vec(),
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                message_answer(&message(HttpResponse::ok(b"hello".to_vec(), None)), 0),
                "Status: 200 OK\r\nMessage-Id: 42\r\nETag: \"42\"\r\nCache-Control: no-cache\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\nhello",
            ),
            (
                message_answer(&message(custom.clone()), 3),
                "Status: 299\r\ncontent-type: application/json\r\nX-A: 1\r\nMessage-Id: 42\r\n\
                 ETag: \"42\"\r\nCache-Control: no-cache\r\nMessages-Lost: 3\r\n\r\n{}",
            ),
            (
                message_answer(&message(HttpResponse { reason: Some("Fine".into()), ..HttpResponse::ok(Vec::new(), None) }), 0),
                "Status: 200 Fine\r\nMessage-Id: 42\r\nETag: \"42\"\r\nCache-Control: no-cache\r\n\r\n",
            ),
            (
                grip_answer(&message(custom.clone()), 0),
                "Status: 299\r\ncontent-type: application/json\r\nX-A: 1\r\nMessage-Id: 42\r\n\r\n{}",
            ),
            (
                grip_answer(&message(HttpResponse::ok(b"hi".to_vec(), None)), 2),
                "Status: 200 OK\r\nMessage-Id: 42\r\nMessages-Lost: 2\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\nhi",
            ),
            (
                cgi_response(&HttpResponse { code: 404, ..custom }, &[]),
                "Status: 404 Not Found\r\ncontent-type: application/json\r\nX-A: 1\r\n\r\n{}",
            ),
            (timeout_answer(), "Status: 204 No Content\r\nCache-Control: no-cache\r\n\r\n"),
            (
                published_answer(7, 3),
                "Status: 201 Created\r\nContent-Type: application/json\r\n\r\n{\"id\":7,\"subscribers\":3}",
            ),
            (
                published_answer(1, 0),
                "Status: 202 Accepted\r\nContent-Type: application/json\r\n\r\n{\"id\":1,\"subscribers\":0}",
            ),
            (
                error_answer(400, "invalid channel name \"a b\""),
                "Status: 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
                 invalid channel name \"a b\"\n",
            ),
            (
                error_answer(404, "no\r\nX: y"),
                "Status: 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nno  X: y\n",
            ),
            (
                method_not_allowed_answer("GET, HEAD"),
                "Status: 405 Method Not Allowed\r\nAllow: GET, HEAD\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\nmethod not allowed\n",
            ),
            (
                unavailable_answer(5),
                "Status: 503 Service Unavailable\r\nRetry-After: 5\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\nservice unavailable, retry later\n",
            ),
        ];
        for (answer, expected) in cases {
            assert_eq!(String::from_utf8(answer).unwrap(), expected);
        }
    }

    #[test]
    fn binary_body_is_kept() {
        let answer = message_answer(
            &message(HttpResponse::ok(
                vec![0, 255, b'\n'],
                Some("application/octet-stream"),
            )),
            0,
        );
        assert!(answer.ends_with(b"\r\n\r\n\x00\xff\n"));
    }
}
