//! Fuzz target: the client's response reader. Fed in pieces or all at once, it must reach
//! the same response or error, and never panic.
#![no_main]

use fastpm::fastcgi::{parse_response, ResponseReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let whole = parse_response(input, 1).map(|(r, _)| r);

    let mut reader = ResponseReader::new(1);
    let step = step as usize + 1;
    let (mut start, mut end) = (0, 0);
    let mut failed = None;
    while end < input.len() && !reader.is_done() {
        end = (end + step).min(input.len());
        match reader.feed(&input[start..end]) {
            Ok(used) => start += used,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let pieces = match failed {
        Some(e) => Err(e),
        None => reader.finish(),
    };
    assert_eq!(whole, pieces);
});
