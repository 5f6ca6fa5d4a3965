//! Fuzz target: `parse_record` and the fixed-body parsers on arbitrary bytes. Every record
//! found must re-encode to the same content, and parsing must never panic.
#![no_main]

use fastpm::fastcgi::{
    encode_record, parse_begin_request, parse_end_request, parse_record, parse_unknown_type,
    HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((record, used))) = parse_record(rest) {
        assert!(used >= HEADER_LEN && used <= rest.len());
        assert_eq!(record.content.len(), record.header.content_length as usize);
        let mut again = Vec::new();
        encode_record(
            &mut again,
            record.header.record_type,
            record.header.request_id,
            record.content,
        );
        let (reparsed, _) = parse_record(&again).unwrap().unwrap();
        assert_eq!(reparsed.content, record.content);
        assert_eq!(reparsed.header.request_id, record.header.request_id);
        let _ = parse_begin_request(record.content);
        let _ = parse_end_request(record.content);
        let _ = parse_unknown_type(record.content);
        rest = &rest[used..];
    }
});
