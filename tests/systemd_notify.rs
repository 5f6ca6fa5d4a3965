//! sd_notify against a real unix datagram socket standing in for systemd: a socket file and an
//! abstract `@name`, the messages as systemd receives them, and the no-op when unset.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use fastpm::master::notify::{parse_notify_socket, Notifier, NotifyError, NotifyTarget};

fn receive(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn systemd_notify_to_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&path).unwrap();
    let notifier = Notifier::from_value(path.to_str().unwrap()).unwrap();
    assert!(notifier.is_enabled());

    notifier.ready().unwrap();
    assert_eq!(
        receive(&systemd),
        format!("READY=1\nMAINPID={}", std::process::id())
    );
    notifier.status("2 pools, 8 workers\nREADY=1").unwrap();
    assert_eq!(receive(&systemd), "STATUS=2 pools, 8 workers READY=1");
    notifier.reloading().unwrap();
    assert_eq!(receive(&systemd), "RELOADING=1");
    notifier.stopping().unwrap();
    assert_eq!(receive(&systemd), "STOPPING=1");
}

#[test]
fn systemd_notify_to_abstract_socket() {
    let name = format!("fastpm-notify-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let systemd = UnixDatagram::bind_addr(&addr).unwrap();
    let notifier = Notifier::from_value(&format!("@{name}")).unwrap();
    notifier.stopping().unwrap();
    assert_eq!(receive(&systemd), "STOPPING=1");
}

#[test]
fn systemd_notify_unset_is_a_no_op() {
    let notifier = Notifier::from_value("").unwrap();
    assert!(!notifier.is_enabled());
    notifier.ready().unwrap();
    notifier.status("anything").unwrap();
    assert!(!Notifier::disabled().is_enabled());
}

#[test]
fn systemd_notify_socket_gone_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone");
    let notifier = Notifier::from_value(path.to_str().unwrap()).unwrap();
    let err = notifier.ready().unwrap_err();
    assert!(matches!(err, NotifyError::Send { .. }));
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
}

#[test]
fn systemd_notify_socket_values() {
    let cases = [
        ("", Ok(None)),
        (
            "/run/systemd/notify",
            Ok(Some(NotifyTarget::Path("/run/systemd/notify".into()))),
        ),
        (
            "@sd-notify",
            Ok(Some(NotifyTarget::Abstract(b"sd-notify".to_vec()))),
        ),
        (
            "@",
            Err("NOTIFY_SOCKET=\"@\" is neither an absolute path nor an @abstract name"),
        ),
        (
            "run/notify",
            Err("NOTIFY_SOCKET=\"run/notify\" is neither an absolute path nor an @abstract name"),
        ),
    ];
    for (value, want) in cases {
        let got = parse_notify_socket(value).map_err(|e| e.to_string());
        assert_eq!(got, want.map_err(str::to_string), "{value:?}");
    }
}
