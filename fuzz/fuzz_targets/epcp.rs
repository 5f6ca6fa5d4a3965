//! Fuzz target: Pushpin's publish JSON. Parsing never panics, a refusal is one line, and what
//! is accepted re-encodes (`fastpm publish`) to JSON that parses to the same publications.
#![no_main]

use fastpm::hold::epcp::{encode, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(publications) => {
            assert!(!publications.is_empty());
            assert_eq!(parse(encode(&publications).as_bytes()), Ok(publications));
        }
        Err(e) => assert!(!e.to_string().contains(['\r', '\n'])),
    }
});
