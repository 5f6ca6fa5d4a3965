//! The client threads of `fastpm bench`: connect (non-blocking, no retry), send, read the
//! answer until END_REQUEST or the timeout, record, repeat — until the duration or the request
//! count runs out.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::outcome::{http_status, Outcome};
use super::summary::{Summary, Tally};
use crate::fastcgi::client::{
    connect_with_retry, encode_request, ClientError, ClientRequest, ClientResponse, ClientStream,
    RetryPolicy,
};
use crate::fastcgi::{PairTooLong, ResponseReader};
use crate::listen::ListenAddress;

/// The request id every bench request uses (one request per connection at a time).
const REQUEST_ID: u16 = 1;
/// Stack of a client thread: a client holds a few buffers, nothing deep; hundreds of clients
/// should not reserve hundreds of default 2 MiB stacks.
const CLIENT_STACK: usize = 256 * 1024;
/// Read size for responses.
const READ_CHUNK: usize = 16 * 1024;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchPlan {
    /// Where to connect: a unix socket or a loopback TCP address.
    pub address: ListenAddress,
    /// Closed-loop clients (threads), each with at most one request in flight.
    pub clients: usize,
    /// Stop starting requests after this long (`-d`).
    pub duration: Option<Duration>,
    /// Stop after this many attempts in total (`-n`).
    pub count: Option<u64>,
    /// Give up on one attempt (connect + request + response) after this long and close the
    /// connection, as nginx does at its `fastcgi_read_timeout`.
    pub timeout: Duration,
    /// Reuse connections (FCGI_KEEP_CONN) instead of one connection per request.
    pub keep: bool,
    /// The request every client sends (its `keep_conn` is set from `keep`).
    pub request: ClientRequest,
    /// After an instant failure — a failed connect (EAGAIN, ECONNREFUSED…) or an answer that
    /// is not 2xx (a shed 503) — a client waits this long before its next attempt, like a user
    /// who got an error page and reloads: a closed loop over instant failures would otherwise
    /// spin and measure only how fast the server says no. (A timeout has waited already.)
    pub error_pause: Duration,
    /// Also count outcomes per interval of this length since the start (`--timeline-ms`), so
    /// goodput can be plotted over time; `None` = only the totals.
    pub timeline: Option<Duration>,
}

/// A plan that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("bench only loads loopback or unix addresses, not {0}")]
    NotLoopback(String),
    #[error("cannot dial {0}: only unix:PATH and IP:PORT addresses")]
    Unsupported(String),
    #[error("bench needs at least one client")]
    NoClients,
    #[error("bench needs a duration (-d) or a request count (-n)")]
    Unbounded,
    #[error("the timeline interval must be at least 1 ms")]
    ZeroTimeline,
    #[error(transparent)]
    Encode(#[from] PairTooLong),
    #[error("cannot start a client thread: {0}")]
    Spawn(io::Error),
}

impl BenchPlan {
    fn check(&self) -> Result<(), PlanError> {
        match &self.address {
            ListenAddress::Tcp(sock) if !sock.ip().is_loopback() => {
                return Err(PlanError::NotLoopback(self.address.to_string()))
            }
            ListenAddress::Systemd(_) => {
                return Err(PlanError::Unsupported(self.address.to_string()))
            }
            _ => {}
        }
        if self.clients == 0 {
            return Err(PlanError::NoClients);
        }
        if self.duration.is_none() && self.count.is_none() {
            return Err(PlanError::Unbounded);
        }
        if self.timeline.is_some_and(|t| t < Duration::from_millis(1)) {
            return Err(PlanError::ZeroTimeline);
        }
        Ok(())
    }
}

/// Run the plan and summarise.
pub fn run(plan: &BenchPlan) -> Result<Summary, PlanError> {
    plan.check()?;
    let mut request = plan.request.clone();
    request.keep_conn = plan.keep;
    let mut bytes = Vec::new();
    encode_request(&mut bytes, REQUEST_ID, &request)?;
    let issued = AtomicU64::new(0);
    let started = Instant::now();
    let stop_at = plan.duration.map(|d| started + d);
    let mut tally = new_tally(plan);
    std::thread::scope(|scope| -> Result<(), PlanError> {
        let mut handles = Vec::with_capacity(plan.clients);
        for i in 0..plan.clients {
            let client = Client {
                plan,
                bytes: &bytes,
                issued: &issued,
                started,
                stop_at,
            };
            let handle = std::thread::Builder::new()
                .name(format!("bench-{i}"))
                .stack_size(CLIENT_STACK)
                .spawn_scoped(scope, move || client.run())
                .map_err(PlanError::Spawn)?;
            handles.push(handle);
        }
        for handle in handles {
            // A client thread has no panicking path; if one did, its counts are lost, not the
            // whole run's.
            if let Ok(t) = handle.join() {
                tally.merge(t);
            }
        }
        Ok(())
    })?;
    Ok(Summary::new(
        plan.address.to_string(),
        plan.clients,
        started.elapsed(),
        tally,
        plan.timeline,
    ))
}

/// A tally that keeps end times only when the plan asks for a timeline.
fn new_tally(plan: &BenchPlan) -> Tally {
    if plan.timeline.is_some() {
        Tally::timed()
    } else {
        Tally::default()
    }
}

/// Why an exchange on a connected stream ended without an answer.
#[derive(Debug, PartialEq, Eq)]
enum ExchangeError {
    Timeout,
    /// Closed or broken; `answered_any` = some response bytes had arrived.
    Broken {
        answered_any: bool,
    },
}

struct Client<'a> {
    plan: &'a BenchPlan,
    bytes: &'a [u8],
    issued: &'a AtomicU64,
    /// When the run started: the timeline's zero.
    started: Instant,
    stop_at: Option<Instant>,
}

impl Client<'_> {
    /// May this client start another attempt?
    fn another(&self) -> bool {
        if self.stop_at.is_some_and(|t| Instant::now() >= t) {
            return false;
        }
        match self.plan.count {
            Some(n) => self.issued.fetch_add(1, Relaxed) < n,
            None => true,
        }
    }

    fn run(self) -> Tally {
        let mut tally = new_tally(self.plan);
        // Every attempt is recorded with when it ended, relative to the run's start.
        let run_started = self.started;
        let record = |tally: &mut Tally, outcome, took: Instant, protocol_status| {
            tally.record(
                outcome,
                took.elapsed(),
                protocol_status,
                run_started.elapsed(),
            )
        };
        let mut kept: Option<ClientStream> = None;
        while self.another() {
            let started = Instant::now();
            let give_up = started + self.plan.timeout;
            let reused = kept.is_some();
            let mut stream = match kept.take() {
                Some(s) => s,
                None => match connect(&self.plan.address, self.plan.timeout) {
                    Ok(s) => s,
                    Err(outcome) => {
                        record(&mut tally, outcome, started, 0);
                        if outcome != Outcome::Timeout {
                            std::thread::sleep(self.plan.error_pause);
                        }
                        continue;
                    }
                },
            };
            let mut result = exchange(&mut stream, self.bytes, give_up);
            if reused
                && result
                    == Err(ExchangeError::Broken {
                        answered_any: false,
                    })
            {
                // The server closed the kept connection meanwhile: not this request's fault.
                let connect_within = left(give_up).unwrap_or(Duration::from_millis(1));
                result = match connect(&self.plan.address, connect_within) {
                    Ok(s) => {
                        stream = s;
                        exchange(&mut stream, self.bytes, give_up)
                    }
                    Err(outcome) => {
                        record(&mut tally, outcome, started, 0);
                        continue;
                    }
                };
            }
            match result {
                Ok(response) => {
                    let status = http_status(&response.stdout);
                    record(
                        &mut tally,
                        Outcome::Answered { status },
                        started,
                        response.protocol_status,
                    );
                    if self.plan.keep {
                        kept = Some(stream);
                    }
                    if !(200..300).contains(&status) {
                        std::thread::sleep(self.plan.error_pause);
                    }
                }
                Err(ExchangeError::Timeout) => record(&mut tally, Outcome::Timeout, started, 0),
                Err(ExchangeError::Broken { .. }) => {
                    record(&mut tally, Outcome::Broken, started, 0)
                }
            }
        }
        tally
    }
}

/// One connect: a single non-blocking attempt on unix (EAGAIN is an outcome), a connect with
/// `timeout` on TCP (dropped SYNs are retransmitted meanwhile, as for nginx).
fn connect(address: &ListenAddress, timeout: Duration) -> Result<ClientStream, Outcome> {
    match address {
        ListenAddress::Tcp(sock) => {
            let stream = TcpStream::connect_timeout(sock, timeout.max(Duration::from_millis(1)))
                .map_err(|e| Outcome::of_connect_error(&e))?;
            let _ = stream.set_nodelay(true);
            Ok(ClientStream::Tcp(stream))
        }
        _ => match connect_with_retry(address, &RetryPolicy::no_retry()) {
            Ok((stream, _)) => Ok(stream),
            Err(ClientError::Connect { source, .. }) => Err(Outcome::of_connect_error(&source)),
            Err(_) => Err(Outcome::ConnectError),
        },
    }
}

/// Time left until `give_up`, at least 1 ms (a zero socket timeout means "forever").
fn left(give_up: Instant) -> Option<Duration> {
    let now = Instant::now();
    (now < give_up).then(|| (give_up - now).max(Duration::from_millis(1)))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Send `bytes` and read the answer until END_REQUEST or `give_up`.
fn exchange(
    stream: &mut ClientStream,
    bytes: &[u8],
    give_up: Instant,
) -> Result<ClientResponse, ExchangeError> {
    let broken = |answered_any| ExchangeError::Broken { answered_any };
    let timeout = left(give_up).ok_or(ExchangeError::Timeout)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|_| broken(false))?;
    if let Err(e) = stream.write_all(bytes) {
        return Err(if is_timeout(&e) {
            ExchangeError::Timeout
        } else {
            broken(false)
        });
    }
    let mut reader = ResponseReader::new(REQUEST_ID);
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut answered_any = false;
    loop {
        let timeout = left(give_up).ok_or(ExchangeError::Timeout)?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|_| broken(answered_any))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err(broken(answered_any)),
            Ok(n) => {
                answered_any = true;
                pending.extend_from_slice(&chunk[..n]);
                let used = reader.feed(&pending).map_err(|_| broken(true))?;
                pending.drain(..used);
                if reader.is_done() {
                    return reader.finish().map_err(|_| broken(true));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(ExchangeError::Timeout),
            Err(_) => return Err(broken(answered_any)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(address: &str, clients: usize, duration: Option<u64>, count: Option<u64>) -> BenchPlan {
        BenchPlan {
            address: address.parse().unwrap(),
            clients,
            duration: duration.map(Duration::from_secs),
            count,
            timeout: Duration::from_secs(1),
            keep: false,
            request: ClientRequest::default(),
            error_pause: Duration::from_millis(10),
            timeline: None,
        }
    }

    #[test]
    fn plans_are_checked() {
        assert!(plan("127.0.0.1:9000", 1, Some(1), None).check().is_ok());
        assert!(plan("unix:/tmp/x.sock", 1, None, Some(5)).check().is_ok());
        assert!(matches!(
            plan("10.1.2.3:9000", 1, Some(1), None).check(),
            Err(PlanError::NotLoopback(_))
        ));
        assert!(matches!(
            plan("127.0.0.1:9000", 0, Some(1), None).check(),
            Err(PlanError::NoClients)
        ));
        assert!(matches!(
            plan("127.0.0.1:9000", 1, None, None).check(),
            Err(PlanError::Unbounded)
        ));
        let mut p = plan("127.0.0.1:9000", 1, Some(1), None);
        p.timeline = Some(Duration::from_micros(500));
        assert!(matches!(p.check(), Err(PlanError::ZeroTimeline)));
    }

    #[test]
    fn missing_socket_is_a_connect_error_and_count_bounds_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix:{}/none.sock", dir.path().display());
        let mut p = plan(&address, 3, None, Some(7));
        p.error_pause = Duration::ZERO;
        let s = run(&p).unwrap();
        assert_eq!(s.requests, 7);
        assert_eq!(s.outcomes["connect_error"], 7);
        assert_eq!(s.latency_ms, None);
        assert_eq!(s.timeline, None);
        p.timeline = Some(Duration::from_millis(100));
        let s = run(&p).unwrap();
        let t = s.timeline.expect("timeline asked for");
        let counted: u64 = t.iter().map(|b| b.outcomes["connect_error"]).sum();
        assert_eq!(counted, 7);
    }
}
