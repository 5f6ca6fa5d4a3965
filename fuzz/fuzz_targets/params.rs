//! Fuzz target: name-value pairs. The first byte picks a record size; the rest is a PARAMS
//! stream. Parsing it whole and collecting it record by record must agree, and what parses
//! must re-encode to the same pairs.
#![no_main]

use fastpm::fastcgi::{encode_params, parse_params, ParamsBuilder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let whole = parse_params(stream).ok();

    let mut builder = ParamsBuilder::new();
    let mut refused = false;
    for chunk in stream.chunks(step as usize + 1) {
        if builder.push_content(chunk, stream.len()).is_err() {
            refused = true;
            break;
        }
    }
    let split = if refused { None } else { builder.finish().ok() };
    assert_eq!(whole, split);

    if let Some(params) = whole {
        let mut out = Vec::new();
        encode_params(&mut out, params.iter()).unwrap();
        assert_eq!(parse_params(&out).unwrap(), params);
    }
});
