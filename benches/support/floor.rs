//! The floor server: the least work a FastCGI server can do and still answer correctly — N
//! threads blocking in `accept()` on one unix listener, each reads the request records up to
//! the empty STDIN record, writes a canned response with one write, and closes. fastpm's
//! `hello` app is measured against it: the gap is what fastpm's machinery costs.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};

use crate::fcgi;

/// A request bigger than this is not one of ours: drop the connection.
const MAX_REQUEST: usize = 64 * 1024;

/// The running floor server; dropping it stops the threads.
pub struct FloorServer {
    /// Where it listens, also used to wake the threads at shutdown.
    path: PathBuf,
    /// Tells a thread that the connection it just accepted is a shutdown wake-up.
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// A unix listener with an explicit backlog (std's `bind` picks its own).
fn listen_unix(path: &Path, backlog: i32) -> io::Result<UnixListener> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    socket::listen(&fd, Backlog::new(backlog)?)?;
    Ok(UnixListener::from(fd))
}

impl FloorServer {
    /// Binds `path` with `backlog` and starts `threads` accept threads answering `body`.
    pub fn start(path: &Path, threads: usize, backlog: i32, body: &[u8]) -> io::Result<Self> {
        let listener = listen_unix(path, backlog)?;
        let response: Arc<[u8]> = fcgi::canned_response(body).into();
        let stopping = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            let listener = listener.try_clone()?;
            let response = Arc::clone(&response);
            let stopping = Arc::clone(&stopping);
            let handle = thread::Builder::new()
                .name(format!("floor-{index}"))
                .spawn(move || accept_loop(&listener, &response, &stopping))?;
            handles.push(handle);
        }
        Ok(FloorServer {
            path: path.to_path_buf(),
            stopping,
            threads: handles,
        })
    }
}

/// The body of the floor's own process (see `Placement::Process`): serve until a signal ends the
/// process. Returns only if the listener cannot be set up.
pub fn serve_until_killed(path: &Path, threads: usize, backlog: i32, body: &[u8]) -> io::Error {
    match FloorServer::start(path, threads, backlog, body) {
        Ok(_server) => loop {
            thread::park();
        },
        Err(err) => err,
    }
}

fn accept_loop(listener: &UnixListener, response: &[u8], stopping: &AtomicBool) {
    let mut received = Vec::with_capacity(4096);
    loop {
        let Ok((stream, _)) = listener.accept() else {
            if stopping.load(Ordering::Relaxed) {
                return;
            }
            continue;
        };
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        // A broken client only loses its own connection.
        let _ = serve(stream, response, &mut received);
    }
}

/// Reads records until the empty STDIN record, then answers.
fn serve(mut stream: UnixStream, response: &[u8], received: &mut Vec<u8>) -> io::Result<()> {
    received.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 || received.len() + n > MAX_REQUEST {
            return Ok(());
        }
        received.extend_from_slice(&chunk[..n]);
        let mut rest = &received[..];
        while let Some((record, used)) = fcgi::parse_record(rest)
            .map_err(|bad| io::Error::new(io::ErrorKind::InvalidData, format!("{bad:?}")))?
        {
            if record.kind == fcgi::STDIN && record.content.is_empty() {
                return stream.write_all(response);
            }
            rest = &rest[used..];
        }
        let consumed = received.len() - rest.len();
        received.drain(..consumed);
    }
}

impl Drop for FloorServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // Each thread takes exactly one wake-up connection and returns.
        let wakers: Vec<_> = self
            .threads
            .iter()
            .filter_map(|_| UnixStream::connect(&self.path).ok())
            .collect();
        if wakers.len() == self.threads.len() {
            for handle in self.threads.drain(..) {
                let _ = handle.join();
            }
        }
        // Otherwise a thread may never wake: leave it blocked, the process is ending anyway.
        drop(wakers);
        let _ = std::fs::remove_file(&self.path);
    }
}
