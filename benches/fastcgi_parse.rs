//! Criterion benchmarks of the FastCGI hot path for tiny requests: assembling nginx's GET
//! capture into a `Request`, encoding a small response, and both together through
//! `serve_connection` over an in-memory connection.
//!
//! Run: `cargo bench --bench fastcgi_parse`.

use std::hint::black_box;
use std::io::{self, Read, Write};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpm::fastcgi::{
    serve_connection_with, Assembler, ConnectionBuffers, Event, Handler, Limits, Request,
    ResponseWriter,
};

const NGINX_GET: &[u8] = include_bytes!("../tests/fixtures/fastcgi/nginx-get-query-cookie.bin");

fn assemble(assembler: &mut Assembler, input: &[u8], replies: &mut Vec<u8>) -> Request {
    let mut at = 0;
    loop {
        let fed = assembler
            .feed(&input[at..], replies)
            .expect("valid capture");
        at += fed.consumed;
        if let Some(Event::Complete(request)) = fed.event {
            return request;
        }
        assert!(fed.consumed > 0, "capture is complete");
    }
}

/// The ping handler shape: a few header bytes and a short body.
struct Pong;

impl Handler for Pong {
    fn handle(&mut self, _request: &Request, out: &mut ResponseWriter<'_>) -> io::Result<u32> {
        out.stdout(
            b"Content-Type: text/plain\r\nExpires: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\npong",
        )?;
        Ok(0)
    }
}

/// An in-memory connection that replays one request and discards the response.
struct Replay<'a> {
    input: &'a [u8],
    written: usize,
}

impl Read for Replay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.len().min(buf.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Replay<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn benches(c: &mut Criterion) {
    let limits = Limits::default();

    let mut group = c.benchmark_group("fastcgi");
    group.throughput(Throughput::Bytes(NGINX_GET.len() as u64));
    group.bench_function("assemble nginx GET (fresh assembler)", |b| {
        let mut replies = Vec::new();
        b.iter(|| {
            let mut assembler = Assembler::new(&limits);
            black_box(assemble(&mut assembler, black_box(NGINX_GET), &mut replies))
        })
    });
    group.bench_function("assemble nginx GET (recycled buffers)", |b| {
        let mut replies = Vec::new();
        let mut assembler = Assembler::new(&limits);
        b.iter(|| {
            let request = assemble(&mut assembler, black_box(NGINX_GET), &mut replies);
            let n = black_box(request.params.get("SCRIPT_FILENAME")).map(<[u8]>::len);
            assembler.recycle(request);
            n
        })
    });
    group.finish();

    c.bench_function("fastcgi/encode small response", |b| {
        let mut sink: Vec<u8> = Vec::with_capacity(4096);
        let mut buf = Vec::with_capacity(4096);
        b.iter(|| {
            sink.clear();
            let mut w = ResponseWriter::new(&mut sink, &mut buf, 1);
            w.stdout(black_box(b"Content-Type: text/plain\r\n\r\npong"))
                .unwrap();
            w.finish(0).unwrap();
            black_box(sink.len())
        })
    });

    c.bench_function("fastcgi/serve nginx GET with pong", |b| {
        let mut buffers = ConnectionBuffers::new();
        b.iter(|| {
            let mut conn = Replay {
                input: NGINX_GET,
                written: 0,
            };
            serve_connection_with(&mut conn, &limits, &mut Pong, &mut buffers).unwrap();
            black_box(conn.written)
        })
    });
}

criterion_group!(fastcgi, benches);
criterion_main!(fastcgi);
