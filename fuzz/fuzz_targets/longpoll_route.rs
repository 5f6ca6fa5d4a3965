//! Fuzz target: the longpoll app's routing. The input is NUL-separated path, method, query,
//! Last-Event-ID and If-None-Match; routing never panics, an operation always names a valid
//! channel, and a refusal's reason and every answer's head stay free of stray line breaks.
#![no_main]

use fastpm::hold::longpoll::{error_answer, route, Op, RequestView, Route};
use fastpm::hold::message::valid_channel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let mut next = || fields.next();
    let (path, method, query) = (next().unwrap_or(""), next().unwrap_or(""), next().unwrap_or(""));
    let (last_event_id, if_none_match) = (next(), next());
    let view = RequestView { path, method, query, last_event_id, if_none_match };
    match route(&view) {
        Route::Op(Op::Sub { channel, .. }) | Route::Op(Op::Pub { channel }) => {
            assert!(valid_channel(&channel), "{channel:?}");
        }
        Route::BadRequest(reason) => {
            let answer = error_answer(400, &reason);
            let body_start = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert_eq!(answer[body_start..].iter().filter(|&&b| b == b'\n').count(), 1);
            assert!(!answer[body_start..].contains(&b'\r'));
        }
        Route::NotFound | Route::MethodNotAllowed { .. } => {}
    }
});
