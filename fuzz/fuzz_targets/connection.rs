//! Fuzz target: `serve_connection` over an in-memory connection that delivers arbitrary
//! bytes in small reads. It must end (no hang, no panic), and everything it writes must be
//! whole, valid records.
#![no_main]

use std::io::{self, Read, Write};

use fastpm::fastcgi::{parse_record, serve_connection, Handler, Limits, Request, ResponseWriter};
use libfuzzer_sys::fuzz_target;

struct Echo;

impl Handler for Echo {
    fn handle(&mut self, request: &Request, out: &mut ResponseWriter<'_>) -> io::Result<u32> {
        out.stdout(b"Content-Type: text/plain\r\n\r\n")?;
        for (name, value) in request.params.iter() {
            out.stdout(name)?;
            out.stdout(value)?;
        }
        out.stderr(&request.stdin)?;
        Ok(request.params.len() as u32)
    }
}

struct Replay<'a> {
    input: &'a [u8],
    read_size: usize,
    output: Vec<u8>,
}

impl Read for Replay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.len().min(buf.len()).min(self.read_size);
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Replay<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, input)) = data.split_first() else {
        return;
    };
    let mut conn = Replay {
        input,
        read_size: size as usize * 7 + 1,
        output: Vec::new(),
    };
    let limits = Limits {
        max_params_bytes: 2048,
        max_body_bytes: 4096,
        ..Limits::default()
    };
    let _ = serve_connection(&mut conn, &limits, &mut Echo);
    let mut rest = &conn.output[..];
    while !rest.is_empty() {
        let (_, used) = parse_record(rest)
            .expect("valid records")
            .expect("whole records");
        rest = &rest[used..];
    }
});
