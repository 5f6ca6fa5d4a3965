//! Dialling a FastCGI server the way nginx does — a non-blocking `connect()` that fails at
//! once with `EAGAIN` when a unix socket's accept queue is full, or `ECONNREFUSED` — and
//! retrying those two with mod_cgid's sliding timer (100 ms, doubling up to 2 s) until a
//! deadline. The schedule is a pure function; the system calls are at the edge.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

use super::client::ClientError;
use crate::listen::ListenAddress;

/// When and how long to retry a refused or queue-full connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait before the first retry (mod_cgid: 100 ms).
    pub first_delay: Duration,
    /// The wait doubles up to this (mod_cgid: 2 s).
    pub max_delay: Duration,
    /// No retry starts after this much time since the first attempt.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            give_up_after: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// No retries at all: one attempt (for callers that measure refusals, like a benchmark).
    pub fn no_retry() -> Self {
        Self {
            first_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            give_up_after: Duration::ZERO,
        }
    }

    /// The wait before retry number `retry` (0 = the first retry): `first_delay · 2^retry`,
    /// at most `max_delay`.
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.first_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// How long to sleep before retry number `retry` when `elapsed` has passed since the first
    /// attempt, or `None` to give up. The sleep never runs past the deadline.
    pub fn next_sleep(&self, retry: u32, elapsed: Duration) -> Option<Duration> {
        let remaining = self.give_up_after.checked_sub(elapsed)?;
        if remaining.is_zero() {
            return None;
        }
        Some(self.delay(retry).min(remaining))
    }
}

/// Whether a connect error is worth retrying: the accept queue was full (`EAGAIN`) or nobody
/// listens yet (`ECONNREFUSED`).
pub fn is_retryable(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EAGAIN) | Some(libc::ECONNREFUSED)
    ) || matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused
    )
}

/// A connected stream to a FastCGI server (blocking): the same unix-or-TCP stream the server
/// side accepts, so both directions share one type.
pub type ClientStream = crate::listen::Stream;

/// One non-blocking connect to a unix socket; blocking again once connected.
fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    connect(fd.as_raw_fd(), &addr)?;
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// One TCP connect. std's `connect_timeout` is a non-blocking connect + poll; the timeout
/// covers dropped SYNs (a full queue on TCP), which the kernel retransmits meanwhile.
fn connect_tcp(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(addr, timeout.max(Duration::from_millis(1)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connect like nginx does: NON-BLOCKING connect. On a unix socket whose accept queue is full
/// the kernel answers EAGAIN; on a refused TCP/unix connect ECONNREFUSED. On either, retry
/// with the sliding timer of `policy` until `give_up_after`; logs nothing. Returns the
/// stream (blocking) and how many attempts it took.
pub fn connect_with_retry(
    addr: &ListenAddress,
    policy: &RetryPolicy,
) -> Result<(ClientStream, u32), ClientError> {
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let result = match addr {
            ListenAddress::Unix(path) => connect_unix(path).map(ClientStream::Unix),
            ListenAddress::Tcp(sock) => {
                let remaining = policy.give_up_after.saturating_sub(started.elapsed());
                connect_tcp(sock, remaining.max(Duration::from_secs(1))).map(ClientStream::Tcp)
            }
            ListenAddress::Systemd(_) => return Err(ClientError::Unsupported(addr.to_string())),
        };
        let error = match result {
            Ok(stream) => return Ok((stream, attempts)),
            Err(e) => e,
        };
        let sleep = if is_retryable(&error) {
            policy.next_sleep(attempts - 1, started.elapsed())
        } else {
            None
        };
        match sleep {
            Some(d) => std::thread::sleep(d),
            None => {
                return Err(ClientError::Connect {
                    address: addr.to_string(),
                    attempts,
                    source: error,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn sliding_timer_schedule() {
        let p = RetryPolicy::default();
        let delays: Vec<u64> = (0..8).map(|r| p.delay(r).as_millis() as u64).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(p.delay(40), ms(2000), "no overflow on huge retry counts");
        assert_eq!(p.delay(u32::MAX), ms(2000));
    }

    #[test]
    fn next_sleep_table() {
        let p = RetryPolicy {
            first_delay: ms(100),
            max_delay: ms(2000),
            give_up_after: ms(1000),
        };
        let table = [
            (0, 0, Some(100)),
            (1, 100, Some(200)),
            (3, 700, Some(300)), // 800 wanted, 300 left
            (2, 999, Some(1)),
            (0, 1000, None),
            (0, 5000, None),
        ];
        for (retry, elapsed, want) in table {
            assert_eq!(
                p.next_sleep(retry, ms(elapsed))
                    .map(|d| d.as_millis() as u64),
                want,
                "retry {retry} at {elapsed} ms"
            );
        }
        assert_eq!(RetryPolicy::no_retry().next_sleep(0, Duration::ZERO), None);
    }

    #[test]
    fn retryable_errors() {
        let table = [
            (libc::EAGAIN, true),
            (libc::ECONNREFUSED, true),
            (libc::ENOENT, false),
            (libc::EACCES, false),
            (libc::ETIMEDOUT, false),
        ];
        for (errno, want) in table {
            assert_eq!(
                is_retryable(&io::Error::from_raw_os_error(errno)),
                want,
                "errno {errno}"
            );
        }
    }

    #[test]
    fn unix_connect_succeeds_at_once_and_refusal_is_retried_until_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let addr = ListenAddress::Unix(path.clone());
        let (mut stream, attempts) = connect_with_retry(&addr, &RetryPolicy::default()).unwrap();
        assert_eq!(attempts, 1);
        let (mut server, _) = listener.accept().unwrap();
        stream.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");

        // A socket file nobody listens on: ECONNREFUSED, retried.
        drop(listener);
        let policy = RetryPolicy {
            first_delay: ms(10),
            max_delay: ms(40),
            give_up_after: ms(150),
        };
        let started = Instant::now();
        let err = connect_with_retry(&addr, &policy).unwrap_err();
        let took = started.elapsed();
        let ClientError::Connect {
            attempts, source, ..
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!(source.raw_os_error(), Some(libc::ECONNREFUSED));
        // 10 + 20 + 40 + 40 + 40 = 150: six attempts.
        assert!((5..=7).contains(&attempts), "{attempts} attempts");
        assert!(took >= ms(150) && took < ms(1000), "{took:?}");
    }

    #[test]
    fn full_accept_queue_gives_eagain_and_is_retried() {
        use nix::sys::socket::{bind, listen, Backlog};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sock");
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(fd.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
        // Backlog 0 holds one connection (capacity is backlog + 1).
        listen(&fd, Backlog::new(0).unwrap()).unwrap();
        let listener = UnixListener::from(fd);
        let addr = ListenAddress::Unix(path.clone());
        let mut queued = Vec::new();
        let full = loop {
            match connect_unix(&path) {
                Ok(s) => queued.push(s),
                Err(e) => break e,
            }
            assert!(queued.len() < 10, "queue never filled");
        };
        assert_eq!(full.raw_os_error(), Some(libc::EAGAIN), "{full:?}");
        assert!(is_retryable(&full));

        // Drain the queue after a while: the retrying connect then gets in.
        let drainer = std::thread::spawn(move || {
            std::thread::sleep(ms(250));
            let mut accepted = Vec::new();
            for _ in 0..queued.len() + 1 {
                accepted.push(listener.accept().unwrap().0);
            }
            accepted
        });
        let policy = RetryPolicy {
            first_delay: ms(50),
            max_delay: ms(100),
            give_up_after: ms(5000),
        };
        let (_stream, attempts) = connect_with_retry(&addr, &policy).unwrap();
        assert!(attempts >= 2, "{attempts} attempts");
        drainer.join().unwrap();
    }

    #[test]
    fn tcp_connects_and_a_refused_port_is_retried() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = ListenAddress::Tcp(listener.local_addr().unwrap());
        let (stream, attempts) = connect_with_retry(&addr, &RetryPolicy::default()).unwrap();
        assert_eq!(attempts, 1);
        assert!(matches!(stream, ClientStream::Tcp(_)));
        drop(listener);
        let policy = RetryPolicy {
            first_delay: ms(10),
            max_delay: ms(20),
            give_up_after: ms(60),
        };
        let err = connect_with_retry(&addr, &policy).unwrap_err();
        let ClientError::Connect {
            attempts, source, ..
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused);
        assert!(attempts >= 3, "{attempts} attempts");
    }

    #[test]
    fn missing_socket_is_not_retried() {
        let addr = ListenAddress::Unix("/nonexistent/fastpm-test.sock".into());
        let err = connect_with_retry(&addr, &RetryPolicy::default()).unwrap_err();
        assert!(
            matches!(err, ClientError::Connect { attempts: 1, ref source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        let systemd = ListenAddress::Systemd("www".into());
        assert!(matches!(
            connect_with_retry(&systemd, &RetryPolicy::default()),
            Err(ClientError::Unsupported(_))
        ));
    }
}
