//! Fuzz target: the request assembler fed arbitrary bytes. The first byte picks how the
//! input is cut into reads; fed in pieces or all at once, the events, replies and error
//! must be the same (partial input is a state, never a different outcome).
#![no_main]

use fastpm::fastcgi::{AssembleError, Assembler, Event, Limits};
use libfuzzer_sys::fuzz_target;

fn limits() -> Limits {
    Limits {
        max_params_bytes: 2048,
        max_body_bytes: 4096,
        ..Limits::default()
    }
}

/// Feed `input` in windows growing by `step`; a complete request is recycled as the
/// connection driver does.
fn run(input: &[u8], step: usize) -> (Vec<Event>, Vec<u8>, Option<AssembleError>) {
    let mut assembler = Assembler::new(&limits());
    let mut replies = Vec::new();
    let mut events = Vec::new();
    let (mut start, mut end) = (0, 0);
    while end < input.len() {
        end = (end + step).min(input.len());
        loop {
            match assembler.feed(&input[start..end], &mut replies) {
                Ok(fed) if fed.consumed == 0 => break,
                Ok(fed) => {
                    start += fed.consumed;
                    if let Some(Event::Complete(request)) = &fed.event {
                        assembler.recycle(request.clone());
                    }
                    events.extend(fed.event);
                }
                Err(e) => return (events, replies, Some(e)),
            }
        }
    }
    (events, replies, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let whole = run(input, usize::MAX);
    let pieces = run(input, step as usize % 64 + 1);
    assert_eq!(whole, pieces);
});
