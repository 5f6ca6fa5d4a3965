//! The queue probe against the real kernel: real sockets, real clients, compared with `ss`.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fastpm::listen::{bind, read_somaxconn, relisten, BindOptions, ListenAddress, Listener};
use fastpm::probe::{ProbeMethod, QueueProbe, QueueReading};
use nix::errno::Errno;
use nix::sys::socket::{
    bind as sys_bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
    SockaddrIn, UnixAddr,
};

fn options(backlog: u32) -> BindOptions {
    BindOptions {
        backlog,
        ..BindOptions::default()
    }
}

fn bind_unix(dir: &Path, backlog: u32) -> (Listener, ListenAddress) {
    let address = ListenAddress::Unix(dir.join("pool.sock"));
    (bind(&address, &options(backlog)).unwrap(), address)
}

fn bind_tcp(addr: &str, backlog: u32) -> (Listener, SocketAddr) {
    let listener = bind(&addr.parse().unwrap(), &options(backlog)).unwrap();
    let local = match listener.address().unwrap() {
        ListenAddress::Tcp(a) => a,
        other => panic!("not tcp: {other}"),
    };
    (listener, local)
}

/// TCP handshakes complete in softirq context: poll until the probe agrees (bounded).
fn read_until(probe: &mut QueueProbe, want: impl Fn(&QueueReading) -> bool) -> QueueReading {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let reading = probe.read().unwrap();
        if want(&reading) || Instant::now() > deadline {
            return reading;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A client connect that never blocks: Ok(socket) when the connection is queued or in
/// progress, Err(errno) when refused at once.
fn nonblocking_connect(
    family: AddressFamily,
    addr: &dyn nix::sys::socket::SockaddrLike,
) -> Result<OwnedFd, Errno> {
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    match connect(fd.as_raw_fd(), addr) {
        Ok(()) | Err(Errno::EINPROGRESS) => Ok(fd),
        Err(e) => Err(e),
    }
}

#[test]
fn unix_probe_counts_connections_not_yet_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, address) = bind_unix(dir.path(), 10);
    let mut probe = QueueProbe::for_listener(&listener).unwrap();
    assert_eq!(probe.method(), ProbeMethod::UnixDiag);
    assert_eq!(
        probe.read().unwrap(),
        QueueReading {
            queued: 0,
            backlog: 10,
            drops: None
        }
    );

    let ListenAddress::Unix(path) = &address else {
        unreachable!()
    };
    let clients: Vec<UnixStream> = (0..5).map(|_| UnixStream::connect(path).unwrap()).collect();
    assert_eq!(
        probe.read().unwrap(),
        QueueReading {
            queued: 5,
            backlog: 10,
            drops: None
        }
    );

    for _ in 0..2 {
        listener.accept().unwrap();
    }
    assert_eq!(
        probe.read().unwrap(),
        QueueReading {
            queued: 3,
            backlog: 10,
            drops: None
        }
    );
    drop(clients);
}

fn tcp_probe_counts(addr: &str) {
    let (listener, local) = bind_tcp(addr, 10);
    let mut probe = QueueProbe::for_listener(&listener).unwrap();
    assert_eq!(probe.method(), ProbeMethod::InetDiag);
    assert_eq!(
        probe.read().unwrap(),
        QueueReading {
            queued: 0,
            backlog: 10,
            drops: Some(0)
        }
    );

    let clients: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(local).unwrap()).collect();
    let reading = read_until(&mut probe, |r| r.queued == 5);
    assert_eq!(
        reading,
        QueueReading {
            queued: 5,
            backlog: 10,
            drops: Some(0)
        }
    );

    for _ in 0..2 {
        listener.accept().unwrap();
    }
    assert_eq!(
        probe.read().unwrap(),
        QueueReading {
            queued: 3,
            backlog: 10,
            drops: Some(0)
        }
    );

    // The TCP_INFO fallback sees the same queue (without drops).
    let mut fallback = QueueProbe::tcp_info(&listener).unwrap();
    assert_eq!(fallback.method(), ProbeMethod::TcpInfo);
    assert_eq!(
        fallback.read().unwrap(),
        QueueReading {
            queued: 3,
            backlog: 10,
            drops: None
        }
    );
    drop(clients);
}

#[test]
fn tcp_v4_probe_counts_connections_not_yet_accepted() {
    tcp_probe_counts("127.0.0.1:0");
}

#[test]
fn tcp_v6_probe_counts_connections_not_yet_accepted() {
    tcp_probe_counts("[::1]:0");
}

#[test]
fn backlog_above_somaxconn_is_clamped_by_the_kernel() {
    let somaxconn = read_somaxconn().unwrap();
    // 5000 on this machine (somaxconn 4096); always above whatever somaxconn is.
    let requested = 5000.max(somaxconn + 1);
    let dir = tempfile::tempdir().unwrap();
    let (unix, _) = bind_unix(dir.path(), requested);
    let (tcp, _) = bind_tcp("127.0.0.1:0", requested);
    for listener in [&unix, &tcp] {
        let reading = QueueProbe::for_listener(listener).unwrap().read().unwrap();
        assert_eq!(
            reading.backlog, somaxconn,
            "requested {requested}, {listener:?}"
        );
    }
}

#[test]
fn unix_queue_holds_backlog_plus_one_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, address) = bind_unix(dir.path(), 3);
    let mut probe = QueueProbe::for_listener(&listener).unwrap();
    let ListenAddress::Unix(path) = &address else {
        unreachable!()
    };
    let target = UnixAddr::new(path).unwrap();

    let mut queued = Vec::new();
    for i in 0..4 {
        let reading = probe.read().unwrap();
        assert!(
            !reading.is_full(),
            "full before connection {i}: {reading:?}"
        );
        queued
            .push(nonblocking_connect(AddressFamily::Unix, &target).expect("fits in backlog + 1"));
    }
    let reading = probe.read().unwrap();
    assert_eq!(
        reading,
        QueueReading {
            queued: 4,
            backlog: 3,
            drops: None
        }
    );
    assert!(reading.is_full());
    // The kernel agrees: the next non-blocking client is turned away (nginx's 502).
    assert_eq!(
        nonblocking_connect(AddressFamily::Unix, &target).err(),
        Some(Errno::EAGAIN)
    );
    listener.accept().unwrap();
    assert!(!probe.read().unwrap().is_full());
}

#[test]
fn tcp_overflow_is_counted_as_kernel_drops() {
    // backlog 2 → capacity 3; 10 clients. The surplus SYNs (or their final ACKs) are dropped
    // by the kernel, which counts every one in sk_drops (tcp_listendrop).
    let (listener, local) = bind_tcp("127.0.0.1:0", 2);
    let mut probe = QueueProbe::for_listener(&listener).unwrap();
    let SocketAddr::V4(v4) = local else {
        unreachable!()
    };
    let target = SockaddrIn::from(v4);
    let clients: Vec<OwnedFd> = (0..10)
        .map(|_| {
            nonblocking_connect(AddressFamily::Inet, &target).expect("loopback connect starts")
        })
        .collect();
    let reading = read_until(&mut probe, |r| r.queued == 3 && r.drops.unwrap_or(0) > 0);
    assert_eq!(reading.queued, 3, "capacity is backlog + 1: {reading:?}");
    assert_eq!(reading.backlog, 2);
    assert!(reading.is_full(), "{reading:?}");
    let drops = reading.drops.expect("inet_diag reports drops");
    assert!(drops > 0, "no drops counted: {reading:?}");
    drop(clients);
}

#[test]
fn relisten_changes_the_backlog_the_kernel_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (unix, _) = bind_unix(dir.path(), 10);
    let (tcp, _) = bind_tcp("127.0.0.1:0", 10);
    for listener in [&unix, &tcp] {
        let mut probe = QueueProbe::for_listener(listener).unwrap();
        assert_eq!(probe.read().unwrap().backlog, 10);
        relisten(listener, 3).unwrap();
        assert_eq!(probe.read().unwrap().backlog, 3);
        relisten(listener, 700).unwrap();
        assert_eq!(probe.read().unwrap().backlog, 700);
    }
}

/// (Recv-Q, Send-Q) of the listening socket whose local address is `local`, from `ss`.
fn ss_queue(args: &[&str], local: &str) -> (u32, u32) {
    let out = Command::new("ss")
        .args(args)
        .output()
        .expect("run ss (iproute2)");
    assert!(
        out.status.success(),
        "ss {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // Columns with -H: [Netid] State Recv-Q Send-Q Local Peer ...; find by the local address.
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let Some(pos) = fields.iter().position(|f| *f == local) {
            assert!(pos >= 2, "unexpected ss line {line:?}");
            return (
                fields[pos - 2].parse().unwrap(),
                fields[pos - 1].parse().unwrap(),
            );
        }
    }
    panic!("ss {args:?} does not list {local}:\n{text}");
}

#[test]
fn probe_agrees_with_ss() {
    let dir = tempfile::tempdir().unwrap();
    let (unix, address) = bind_unix(dir.path(), 17);
    let ListenAddress::Unix(path) = &address else {
        unreachable!()
    };
    let _unix_clients: Vec<UnixStream> =
        (0..4).map(|_| UnixStream::connect(path).unwrap()).collect();
    let reading = QueueProbe::for_listener(&unix).unwrap().read().unwrap();
    // ss -x prints a unix listener as `u_str LISTEN RECV-Q SEND-Q PATH INODE * 0`.
    let ss = ss_queue(&["-lnxH"], &format!("{}", path.display()));
    assert_eq!((reading.queued, reading.backlog), (4, 17));
    assert_eq!(ss, (reading.queued, reading.backlog), "ss -lnx vs probe");

    let (tcp, local) = bind_tcp("127.0.0.1:0", 13);
    let _tcp_clients: Vec<TcpStream> = (0..6).map(|_| TcpStream::connect(local).unwrap()).collect();
    let mut probe = QueueProbe::for_listener(&tcp).unwrap();
    let reading = read_until(&mut probe, |r| r.queued == 6);
    let ss = ss_queue(&["-lntH"], &local.to_string());
    assert_eq!((reading.queued, reading.backlog), (6, 13));
    assert_eq!(ss, (reading.queued, reading.backlog), "ss -lnt vs probe");
}

#[test]
fn inet_probe_finds_its_own_socket_among_reuseport_siblings() {
    // Two listeners on one address: a lookup by address may answer for either; the probe must
    // still report its own socket (matched by inode).
    let make = |port: u16, backlog: u32| -> Listener {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        setsockopt(&fd, sockopt::ReusePort, &true).unwrap();
        sys_bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).unwrap();
        let listener = Listener::Tcp(std::net::TcpListener::from(fd));
        relisten(&listener, backlog).unwrap();
        listener
    };
    let first = make(0, 3);
    let ListenAddress::Tcp(local) = first.address().unwrap() else {
        unreachable!()
    };
    let second = make(local.port(), 7);
    let third = make(local.port(), 11);
    for (listener, backlog) in [(&first, 3), (&second, 7), (&third, 11)] {
        let mut probe = QueueProbe::for_listener(listener).unwrap();
        for _ in 0..3 {
            assert_eq!(probe.read().unwrap().backlog, backlog);
        }
    }
}

/// The sampler's path for a unix listener (`QueueProbe::sample`): the same readings as asking
/// the kernel each time, but `unix_diag` — whose lookup walks every unix socket of the
/// namespace — is asked only when a connection waits, on the first sample, after `forget`
/// (a new backlog) and once per `REFRESH` (the spacing of dear walks: `unix_diag::decide`).
#[test]
fn unix_samples_ask_unix_diag_only_when_a_connection_waits() {
    use fastpm::probe::unix_diag::REFRESH;
    let dir = tempfile::tempdir().unwrap();
    let (listener, address) = bind_unix(dir.path(), 10);
    let ListenAddress::Unix(path) = &address else {
        unreachable!()
    };
    let mut probe = QueueProbe::for_listener(&listener).unwrap();
    let asks = |p: &QueueProbe| p.unix_diag_asks().expect("a unix probe counts its asks");
    let reading = |queued, backlog| QueueReading {
        queued,
        backlog,
        drops: None,
    };
    // While connections wait, a sample right after a walk may be skipped (walks are spaced by
    // their cost): the next sample, a little later, is taken.
    let sampled = |p: &mut QueueProbe| {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(reading) = p.sample().unwrap() {
                return reading;
            }
            assert!(Instant::now() < deadline, "every sample skipped");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let started = asks(&probe);
    // The first sample asks; then, while the queue stays empty, none does.
    assert_eq!(sampled(&mut probe), reading(0, 10));
    assert_eq!(asks(&probe), started + 1);
    for _ in 0..100 {
        assert_eq!(sampled(&mut probe), reading(0, 10));
    }
    assert_eq!(
        asks(&probe),
        started + 1,
        "an empty queue walked the sockets"
    );

    // Connections waiting: every sample asks, and counts them.
    let clients: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(path).unwrap()).collect();
    assert_eq!(sampled(&mut probe), reading(3, 10));
    assert_eq!(sampled(&mut probe), reading(3, 10));
    assert_eq!(asks(&probe), started + 3);
    listener.accept().unwrap();
    assert_eq!(sampled(&mut probe), reading(2, 10));
    for _ in 0..2 {
        listener.accept().unwrap();
    }
    let before = asks(&probe);
    assert_eq!(sampled(&mut probe), reading(0, 10));
    assert_eq!(asks(&probe), before, "emptied: known from epoll");
    // `read` always asks, and agrees.
    assert_eq!(probe.read().unwrap(), reading(0, 10));
    assert_eq!(asks(&probe), before + 1);

    // A new backlog: until told, samples repeat the last answer's (epoll sees no change); told
    // (the sampler does when the master stores a new `listen backlog`), the next one asks.
    relisten(&listener, 3).unwrap();
    assert_eq!(sampled(&mut probe), reading(0, 10));
    probe.forget();
    assert_eq!(sampled(&mut probe), reading(0, 3));
    assert_eq!(asks(&probe), before + 2);
    assert!(
        REFRESH >= Duration::from_secs(1),
        "a walk at most every {REFRESH:?}"
    );
    drop(clients);
}
