//! Fuzz target: the GRIP filter fed an app's arbitrary output. The first byte picks how the
//! output is cut into writes; whole or in pieces, the bytes that reach the client and the
//! outcome (held response or error) must be the same, and a held response never carries a
//! `Grip-` header or exceeds its cap.
#![no_main]

use fastpm::hold::grip::{GripFilter, Held, MAX_HELD_RESPONSE};
use libfuzzer_sys::fuzz_target;

fn run(filter: &mut GripFilter, input: &[u8], step: usize) -> (Vec<u8>, Result<Option<Held>, String>) {
    let mut out = Vec::new();
    let mut emit = |b: &[u8]| {
        out.extend_from_slice(b);
        Ok(())
    };
    for piece in input.chunks(step) {
        filter.feed(piece, &mut emit).unwrap();
    }
    let result = filter.finish(&mut emit).map_err(|e| e.to_string());
    (out, result)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    // One filter reused, as a worker does: the second run must not see the first.
    let mut filter = GripFilter::new();
    let whole = run(&mut filter, input, input.len().max(1));
    let pieces = run(&mut filter, input, step as usize % 64 + 1);
    assert_eq!(whole, pieces);
    if let (out, Ok(Some(held))) = &whole {
        assert!(out.is_empty(), "a held response was emitted");
        assert!(held.response.len() <= MAX_HELD_RESPONSE);
        assert!(!held.hold.channels.is_empty());
        for line in held.response.split_inclusive(|&b| b == b'\n') {
            if line == b"\n" || line == b"\r\n" {
                break;
            }
            assert!(!line.to_ascii_lowercase().starts_with(b"grip-"), "Grip- line kept");
        }
    }
});
