//! Binding listening sockets for real: unix socket files (stale, live, not a socket,
//! permissions), TCP v4/v6, errors as one line, accepted streams.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use fastpm::listen::{bind, BindOptions, ListenAddress, ListenError, Listener, Peer, Stream};
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::socket::{
    connect, getsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, UnixAddr,
};

fn unix_address(dir: &Path, name: &str) -> (ListenAddress, PathBuf) {
    let path = dir.join(name);
    (ListenAddress::Unix(path.clone()), path)
}

fn with_backlog(backlog: u32) -> BindOptions {
    BindOptions {
        backlog,
        ..BindOptions::default()
    }
}

#[test]
fn stale_unix_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (address, path) = unix_address(dir.path(), "stale.sock");
    drop(UnixListener::bind(&path).unwrap()); // the server died; its file stayed
    assert!(path.exists());
    let refused = UnixStream::connect(&path).unwrap_err();
    assert_eq!(
        refused.raw_os_error(),
        Some(libc::ECONNREFUSED),
        "the file is stale"
    );

    let listener = bind(&address, &BindOptions::default()).unwrap();
    // The path now leads to the new listener (a stale file would still refuse).
    let _client = UnixStream::connect(&path).unwrap();
    let (_stream, peer) = listener.accept().unwrap();
    assert_eq!(peer, Peer::Unix);
}

#[test]
fn live_unix_socket_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let (address, path) = unix_address(dir.path(), "live.sock");
    let other_server = UnixListener::bind(&path).unwrap();
    let err = bind(&address, &BindOptions::default()).unwrap_err();
    assert!(matches!(err, ListenError::InUse { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.starts_with(&format!(
            "cannot bind {address}: another server is listening"
        )),
        "{message}"
    );
    // The other server still owns its socket.
    let _client = UnixStream::connect(&path).unwrap();
    other_server.accept().unwrap();
}

#[test]
fn live_unix_socket_with_a_full_queue_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (address, path) = unix_address(dir.path(), "busy.sock");
    let busy = bind(&address, &with_backlog(0)).unwrap();
    // backlog 0 holds one connection; fill it so the next connect gets EAGAIN.
    let target = UnixAddr::new(&path).unwrap();
    let filler = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK,
        None,
    )
    .unwrap();
    connect(filler.as_raw_fd(), &target).unwrap();
    let err = bind(&address, &BindOptions::default()).unwrap_err();
    assert!(matches!(err, ListenError::InUse { .. }), "{err:?}");
    drop(busy);
}

#[test]
fn non_socket_at_the_path_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (address, path) = unix_address(dir.path(), "precious.txt");
    std::fs::write(&path, b"keep me").unwrap();
    let err = bind(&address, &BindOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot bind {address}: {} exists and is not a socket; refusing to remove it",
            path.display()
        )
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

#[test]
fn unix_mode_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o600, 0o660, 0o666] {
        let (address, path) = unix_address(dir.path(), &format!("mode{mode:o}.sock"));
        let options = BindOptions {
            mode,
            ..BindOptions::default()
        };
        let _listener = bind(&address, &options).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "mode {mode:o}");
    }
}

#[test]
fn unix_owner_and_group_are_applied_by_name_or_number() {
    let dir = tempfile::tempdir().unwrap();
    let (address, path) = unix_address(dir.path(), "owned.sock");
    let options = BindOptions {
        owner: Some("nobody".into()),
        group: Some("nogroup".into()),
        ..BindOptions::default()
    };
    let _named = bind(&address, &options).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));

    let (address, path) = unix_address(dir.path(), "numbered.sock");
    let options = BindOptions {
        owner: Some("12345".into()),
        group: Some("".into()), // empty = unchanged (the config's default)
        ..BindOptions::default()
    };
    let _numbered = bind(&address, &options).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (12345, nix::unistd::getgid().as_raw())
    );
}

#[test]
fn unknown_owner_or_group_is_named_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let (address, path) = unix_address(dir.path(), "x.sock");
    let options = BindOptions {
        owner: Some("no-such-user-fastpm".into()),
        ..BindOptions::default()
    };
    let err = bind(&address, &options).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot set owner of {address}: no user named \"no-such-user-fastpm\"")
    );
    assert!(!path.exists(), "half-configured socket file left behind");

    let options = BindOptions {
        group: Some("no-such-group-fastpm".into()),
        ..BindOptions::default()
    };
    let err = bind(&address, &options).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot set group of {address}: no group named \"no-such-group-fastpm\"")
    );
    assert!(!path.exists());
}

#[test]
fn bind_errors_are_one_line_naming_the_address() {
    let address: ListenAddress = "unix:/nonexistent-fastpm-dir/x.sock".parse().unwrap();
    let err = bind(&address, &BindOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot bind unix:/nonexistent-fastpm-dir/x.sock: No such file or directory (os error 2)"
    );
    assert_eq!(
        err.os_error().and_then(|e| e.raw_os_error()),
        Some(libc::ENOENT)
    );

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = ListenAddress::Tcp(taken.local_addr().unwrap());
    let err = bind(&address, &BindOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot bind {address}: Address already in use (os error 98)")
    );
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn systemd_address_without_activation_is_a_clear_error() {
    // Socket activation itself is tested in tests/systemd_activation.rs (a child with LISTEN_*).
    let address: ListenAddress = "systemd:www".parse().unwrap();
    let err = bind(&address, &BindOptions::default()).unwrap_err();
    assert!(matches!(err, ListenError::Bind { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("cannot bind systemd:www: not started by systemd socket activation"),
        "{text}"
    );
    assert!(!text.contains('\n'));
}

#[test]
fn sockets_are_close_on_exec_and_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let (unix_addr, _) = unix_address(dir.path(), "flags.sock");
    let unix = bind(&unix_addr, &BindOptions::default()).unwrap();
    let v4 = bind(&"127.0.0.1:0".parse().unwrap(), &BindOptions::default()).unwrap();
    let v6 = bind(&"[::1]:0".parse().unwrap(), &BindOptions::default()).unwrap();
    for listener in [&unix, &v4, &v6] {
        let fd_flags =
            FdFlag::from_bits_truncate(fcntl(listener.as_raw_fd(), FcntlArg::F_GETFD).unwrap());
        assert!(fd_flags.contains(FdFlag::FD_CLOEXEC), "{listener:?}");
        let fl = OFlag::from_bits_truncate(fcntl(listener.as_raw_fd(), FcntlArg::F_GETFL).unwrap());
        assert!(!fl.contains(OFlag::O_NONBLOCK), "{listener:?}");
    }
}

#[test]
fn ipv6_listener_is_v6_only_and_tcp_has_reuseaddr() {
    let v6 = bind(&"[::]:0".parse().unwrap(), &BindOptions::default()).unwrap();
    let Listener::Tcp(tcp6) = &v6 else {
        panic!("not tcp")
    };
    assert!(getsockopt(tcp6, sockopt::Ipv6V6Only).unwrap());
    assert!(getsockopt(tcp6, sockopt::ReuseAddr).unwrap());
    // v6-only: the same port is still free for IPv4.
    let port = tcp6.local_addr().unwrap().port();
    let v4 = bind(
        &ListenAddress::Tcp(SocketAddr::from(([0, 0, 0, 0], port))),
        &BindOptions::default(),
    );
    assert!(v4.is_ok(), "{:?}", v4.err());
}

#[test]
fn accept_gives_a_stream_and_the_peer() {
    let listener = bind(&"127.0.0.1:0".parse().unwrap(), &BindOptions::default()).unwrap();
    let ListenAddress::Tcp(local) = listener.address().unwrap() else {
        panic!()
    };
    assert_ne!(local.port(), 0, "address() reports the real port");
    let mut client = TcpStream::connect(local).unwrap();
    let (stream, peer) = listener.accept().unwrap();
    assert_eq!(peer, Peer::Tcp(client.local_addr().unwrap()));
    assert_eq!(peer.ip(), Some("127.0.0.1".parse().unwrap()));
    let Stream::Tcp(tcp) = &stream else {
        panic!("not tcp")
    };
    assert!(
        tcp.nodelay().unwrap(),
        "TCP_NODELAY on accepted connections"
    );

    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    (&stream).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    (&stream).write_all(b"pong").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");

    let dir = tempfile::tempdir().unwrap();
    let (address, path) = unix_address(dir.path(), "accept.sock");
    let unix = bind(&address, &BindOptions::default()).unwrap();
    assert_eq!(unix.address().unwrap(), address);
    let mut client = UnixStream::connect(&path).unwrap();
    let (mut stream, peer) = unix.accept().unwrap();
    assert_eq!(peer, Peer::Unix);
    client.write_all(b"hi").unwrap();
    let mut buf = [0u8; 2];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
}

#[test]
fn cloned_listener_shares_the_queue() {
    let listener = bind(&"127.0.0.1:0".parse().unwrap(), &BindOptions::default()).unwrap();
    let clone = listener.try_clone().unwrap();
    let ListenAddress::Tcp(local) = listener.address().unwrap() else {
        panic!()
    };
    let _client = TcpStream::connect(local).unwrap();
    clone.accept().unwrap();
}

#[test]
fn inherited_descriptors_are_adopted_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (address, _) = unix_address(dir.path(), "inherit.sock");
    let unix = bind(&address, &BindOptions::default()).unwrap();
    let adopted = Listener::from_inherited(OwnedFd::from(unix)).unwrap();
    assert!(adopted.is_unix());
    assert_eq!(adopted.address().unwrap(), address);

    let tcp = bind(&"[::1]:0".parse().unwrap(), &BindOptions::default()).unwrap();
    let before = tcp.address().unwrap();
    let adopted = Listener::from_inherited(OwnedFd::from(tcp)).unwrap();
    assert!(!adopted.is_unix());
    assert_eq!(adopted.address().unwrap(), before);

    // A connected (not listening) socket and a plain file are refused.
    let (a, _b) = UnixStream::pair().unwrap();
    let err = Listener::from_inherited(OwnedFd::from(a)).unwrap_err();
    assert!(
        err.to_string().contains("not a listening stream socket"),
        "{err}"
    );
    let file = std::fs::File::open("/dev/null").unwrap();
    assert!(Listener::from_inherited(OwnedFd::from(file)).is_err());
}
