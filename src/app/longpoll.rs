//! `kind = "longpoll"` (DESIGN.md §8, nchan-like): `GET …/sub/NAME` is held until a message on
//! channel NAME (or resumes at once after `last_id`), `POST …/pub/NAME` publishes its body.
//! The worker only reads the request and decides: every sub and pub goes to the master's
//! holder (`crate::hold::holder`), which owns the channels and the broker, so a held
//! subscriber costs no worker and a publish reaches subscribers held by every worker.

use super::{plain_response, App};
use crate::config::PoolConfig;
use crate::fastcgi::{Request, ResponseWriter};
use crate::hold::longpoll::{route, Op, RequestView, Route};
use crate::hold::message::MAX_BODY;
use crate::hold::wire::{Ask, WireChannel};

/// The `longpoll` app of one worker (stateless: the state is the master's).
pub struct Longpoll;

/// A pool's `longpoll` app.
pub fn longpoll_app(_pool: &PoolConfig) -> Box<dyn App> {
    Box::new(Longpoll)
}

impl App for Longpoll {
    fn handle(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> std::io::Result<u32> {
        let p = &request.params;
        let path = p
            .get_str("DOCUMENT_URI")
            .filter(|s| !s.is_empty())
            .or_else(|| p.get_str("SCRIPT_NAME"))
            .unwrap_or("");
        let view = RequestView {
            path,
            method: p.get_str("REQUEST_METHOD").unwrap_or("GET"),
            query: p.get_str("QUERY_STRING").unwrap_or(""),
            last_event_id: p.get_str("HTTP_LAST_EVENT_ID"),
            if_none_match: p.get_str("HTTP_IF_NONE_MATCH"),
        };
        match route(&view) {
            Route::Op(Op::Sub { channel, after }) => out.hold(Ask::Sub {
                channel: WireChannel {
                    name: channel,
                    after,
                },
            }),
            Route::Op(Op::Pub { channel }) => {
                if request.stdin.len() > MAX_BODY {
                    plain_response(out, "413 Content Too Large", "message body over 1 MiB\n")?;
                    return Ok(0);
                }
                out.hold(Ask::Pub {
                    channel,
                    content_type: p
                        .get_str("CONTENT_TYPE")
                        .filter(|t| !t.is_empty())
                        .map(str::to_string),
                    body: request.stdin.clone(),
                });
            }
            Route::NotFound => plain_response(
                out,
                "404 Not Found",
                "longpoll: paths are …/sub/CHANNEL and …/pub/CHANNEL\n",
            )?,
            Route::MethodNotAllowed { allow } => {
                let text = format!(
                    "Status: 405 Method Not Allowed\r\nAllow: {allow}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nlongpoll: use {allow}\n"
                );
                out.stdout(text.as_bytes())?;
            }
            Route::BadRequest(why) => {
                plain_response(out, "400 Bad Request", &format!("longpoll: {why}\n"))?
            }
        }
        Ok(0)
    }
}
