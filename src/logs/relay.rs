//! The pipe from worker processes to the master's log files.
//!
//! A worker process's stderr is the write end of this pipe (when any log file is configured).
//! What it writes there arrives here line by line: its own tracing output and anything else on
//! stderr (a panic) goes to the error log; access and slow-log lines carry a routing tag — the
//! byte `0x1E` (ASCII record separator, which fastpm's escaped lines never contain), `A` or `S`,
//! the pool's index, a space — and go to that pool's file.
//!
//! Each tagged line is one `write` of at most `PIPE_BUF` bytes (`line::MAX_LOG_LIMIT`), which
//! the kernel never interleaves with another process's write, so lines arrive whole; the
//! splitter still keeps a partial line until its end arrives (a read may stop mid-line).

use std::io::Read;
use std::os::fd::OwnedFd;

/// Where a relayed line goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `[global] error_log` (else the master's stderr).
    Error,
    /// The access log of the pool with this index.
    Access(usize),
    /// The slow log of the pool with this index.
    Slow(usize),
}

/// First byte of a tagged line.
const TAG: u8 = 0x1e;

/// A partial line longer than this (a writer that never ends its line) is passed on as it is.
const MAX_PENDING: usize = 64 * 1024;

/// Append `line` (no newline in it) tagged for `route`, with its newline.
pub fn push_tagged(out: &mut Vec<u8>, route: Route, line: &[u8]) {
    match route {
        Route::Error => {}
        Route::Access(pool) => out.extend_from_slice(format!("\x1eA{pool} ").as_bytes()),
        Route::Slow(pool) => out.extend_from_slice(format!("\x1eS{pool} ").as_bytes()),
    }
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// Where a received line (without its newline) goes, and its text without the tag. A line
/// whose tag is malformed goes to the error log as it came.
pub fn route_of(line: &[u8]) -> (Route, &[u8]) {
    let untagged = (Route::Error, line);
    let Some(rest) = line.strip_prefix(&[TAG]) else {
        return untagged;
    };
    let Some((&kind, rest)) = rest.split_first() else {
        return untagged;
    };
    let Some(space) = rest.iter().position(|&b| b == b' ') else {
        return untagged;
    };
    let Some(pool) = std::str::from_utf8(&rest[..space])
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return untagged;
    };
    let text = &rest[space + 1..];
    match kind {
        b'A' => (Route::Access(pool), text),
        b'S' => (Route::Slow(pool), text),
        _ => untagged,
    }
}

/// Lines out of a byte stream that arrives in arbitrary pieces.
#[derive(Default)]
pub struct Splitter {
    pending: Vec<u8>,
}

impl Splitter {
    /// Feed the next piece; `line` gets every complete line (without its newline).
    pub fn feed(&mut self, mut piece: &[u8], line: &mut dyn FnMut(&[u8])) {
        while let Some(nl) = piece.iter().position(|&b| b == b'\n') {
            if self.pending.is_empty() {
                line(&piece[..nl]);
            } else {
                self.pending.extend_from_slice(&piece[..nl]);
                line(&self.pending);
                self.pending.clear();
            }
            piece = &piece[nl + 1..];
        }
        self.pending.extend_from_slice(piece);
        if self.pending.len() > MAX_PENDING {
            line(&self.pending);
            self.pending.clear();
        }
    }

    /// The end of the stream: a last line without its newline.
    pub fn finish(&mut self, line: &mut dyn FnMut(&[u8])) {
        if !self.pending.is_empty() {
            line(&self.pending);
            self.pending.clear();
        }
    }
}

/// Lines of one read, grouped by where they go (one write per file per read).
#[derive(Default)]
pub struct Batches {
    batches: Vec<(Route, Vec<u8>)>,
}

impl Batches {
    pub fn add(&mut self, line: &[u8]) {
        let (route, text) = route_of(line);
        let batch = match self.batches.iter().position(|(r, _)| *r == route) {
            Some(i) => &mut self.batches[i].1,
            None => {
                self.batches.push((route, Vec::new()));
                &mut self.batches.last_mut().expect("just pushed").1
            }
        };
        batch.extend_from_slice(text);
        batch.push(b'\n');
    }

    /// Hand each non-empty batch to `write`, then empty them (keeping their memory).
    pub fn drain(&mut self, write: &mut dyn FnMut(Route, &[u8])) {
        for (route, bytes) in &mut self.batches {
            if !bytes.is_empty() {
                write(*route, bytes);
                bytes.clear();
            }
        }
    }
}

/// Read the pipe until every write end is closed, passing each read's lines to `write`.
pub fn run(read_end: OwnedFd, write: &mut dyn FnMut(Route, &[u8])) {
    let mut pipe = std::fs::File::from(read_end);
    let mut buf = vec![0u8; 64 * 1024];
    let mut splitter = Splitter::default();
    let mut batches = Batches::default();
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                splitter.feed(&buf[..n], &mut |line| batches.add(line));
                batches.drain(write);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    splitter.finish(&mut |line| batches.add(line));
    batches.drain(write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for route in [
            Route::Error,
            Route::Access(0),
            Route::Access(12),
            Route::Slow(3),
        ] {
            let mut out = Vec::new();
            push_tagged(&mut out, route, b"GET /x 200");
            assert_eq!(out.last(), Some(&b'\n'));
            let line = &out[..out.len() - 1];
            assert_eq!(route_of(line), (route, &b"GET /x 200"[..]), "{route:?}");
        }
    }

    #[test]
    fn malformed_tags_go_to_the_error_log_whole() {
        let table: &[&[u8]] = &[
            b"\x1e",
            b"\x1eA",
            b"\x1eAx y",
            b"\x1eZ1 y",
            b"\x1eA1",
            b"plain",
        ];
        for line in table {
            assert_eq!(route_of(line), (Route::Error, *line), "{line:?}");
        }
    }

    #[test]
    fn lines_split_anywhere_arrive_whole_and_grouped() {
        let mut stream = Vec::new();
        push_tagged(&mut stream, Route::Access(1), b"first");
        push_tagged(&mut stream, Route::Error, b"worker says");
        push_tagged(&mut stream, Route::Access(1), b"second");
        push_tagged(&mut stream, Route::Slow(0), b"slow");
        for size in 1..stream.len() {
            let mut splitter = Splitter::default();
            let mut batches = Batches::default();
            let mut written: Vec<(Route, String)> = Vec::new();
            for piece in stream.chunks(size) {
                splitter.feed(piece, &mut |l| batches.add(l));
            }
            splitter.finish(&mut |l| batches.add(l));
            batches.drain(&mut |r, b| written.push((r, String::from_utf8_lossy(b).into())));
            let access: String = written
                .iter()
                .filter(|(r, _)| *r == Route::Access(1))
                .map(|(_, t)| t.as_str())
                .collect();
            assert_eq!(access, "first\nsecond\n", "pieces of {size}");
            assert!(written.contains(&(Route::Error, "worker says\n".into())));
            assert!(written.contains(&(Route::Slow(0), "slow\n".into())));
        }
    }

    #[test]
    fn a_last_line_without_newline_is_kept() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::File::from(write);
            std::io::Write::write_all(&mut f, b"\x1eA0 one\npanicked at").unwrap();
        });
        let mut got = Vec::new();
        run(read, &mut |r, b| got.push((r, b.to_vec())));
        writer.join().unwrap();
        assert!(got.contains(&(Route::Access(0), b"one\n".to_vec())));
        assert!(got.contains(&(Route::Error, b"panicked at\n".to_vec())));
    }
}
