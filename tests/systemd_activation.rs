//! systemd socket activation: parsing `LISTEN_*` (pure, as a table), and `bind("systemd:NAME")`
//! in a real child process that inherited listening sockets at descriptors 3 and 4, started the
//! way systemd starts a service (`LISTEN_PID` = the child's own pid, set by a shell that then
//! execs the child).
//!
//! The child is this test binary re-executed into the test `systemd_child_main`.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fastpm::listen::systemd::{find, parse_activation, ActivationError, PassedSocket};
use fastpm::listen::{bind, BindOptions, ListenAddress};

/// Child entry point (run by the tests below with `--exact`; run alone, it checks that it answers as one). Binds `systemd:$NAME`, writes
/// what happened to `$FASTPM_SD_OUT`, and for a good socket answers one connection.
#[test]
fn systemd_child_main() {
    let Ok(name) = std::env::var("FASTPM_SD_CHILD") else {
        return common::child_entry_point_answers("systemd_child_main", "FASTPM_SD_CHILD");
    };
    if name == "probe" {
        println!("{}", common::CHILD_PROBE_OK);
        return;
    }
    let out = PathBuf::from(std::env::var("FASTPM_SD_OUT").unwrap());
    let address = ListenAddress::Systemd(name);
    let listener = match bind(&address, &BindOptions::default()) {
        Ok(l) => l,
        Err(e) => {
            std::fs::write(&out, format!("error: {e}")).unwrap();
            return;
        }
    };
    let flags = nix::fcntl::fcntl(listener.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
    let cloexec = flags & libc::FD_CLOEXEC != 0;
    let again = bind(&address, &BindOptions::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "taken twice!".into());
    let report = format!(
        "ok fd={} unix={} cloexec={cloexec} again=[{again}]",
        listener.as_raw_fd(),
        listener.is_unix()
    );
    std::fs::write(&out, &report).unwrap();
    let (mut stream, _) = listener.accept().unwrap();
    stream.write_all(b"hello from the activated child").unwrap();
}

/// What the child is given at descriptors 3, 4, ….
enum Passed<'a> {
    Unix(&'a UnixListener),
    Tcp(&'a TcpListener),
    File(&'a std::fs::File),
}

impl Passed<'_> {
    fn raw(&self) -> RawFd {
        match self {
            Passed::Unix(l) => l.as_raw_fd(),
            Passed::Tcp(l) => l.as_raw_fd(),
            Passed::File(f) => f.as_raw_fd(),
        }
    }
}

/// Start the child like systemd would; `own_pid` false gives it someone else's LISTEN_PID.
fn spawn_child(
    passed: &[Passed<'_>],
    names: Option<&str>,
    want: &str,
    out: &Path,
    own_pid: bool,
) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    let pid = if own_pid {
        "$$".to_string()
    } else {
        std::process::id().to_string()
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("LISTEN_PID={pid} exec \"$0\" \"$@\""))
        .arg(exe)
        .args(["--exact", "systemd_child_main", "--nocapture"])
        .env("LISTEN_FDS", passed.len().to_string())
        .env("FASTPM_SD_CHILD", want)
        .env("FASTPM_SD_OUT", out)
        .stdout(Stdio::null());
    match names {
        Some(n) => cmd.env("LISTEN_FDNAMES", n),
        None => cmd.env_remove("LISTEN_FDNAMES"),
    };
    let sources: Vec<RawFd> = passed.iter().map(Passed::raw).collect();
    // SAFETY: only fcntl/dup2/close (async-signal-safe, no allocation) run in the child: first
    // every source is copied above 200, so placing them at 3, 4 … cannot clobber one another.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0; 8];
            for (i, fd) in sources.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD, 200);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high.iter().take(sources.len()).enumerate() {
                if libc::dup2(*fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(*fd);
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

fn wait_report(out: &Path, child: &mut std::process::Child) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(out) {
            if !text.is_empty() {
                return text;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            if let Ok(text) = std::fs::read_to_string(out) {
                return text;
            }
            panic!("child exited without a report: {status}");
        }
        assert!(std::time::Instant::now() < deadline, "no report from child");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn systemd_bind_takes_the_named_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("www.sock");
    let unix = UnixListener::bind(&sock).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let out = dir.path().join("report");
    let mut child = spawn_child(
        &[Passed::Tcp(&tcp), Passed::Unix(&unix)],
        Some("other:www"),
        "www",
        &out,
        true,
    );
    let report = wait_report(&out, &mut child);
    assert!(
        report.starts_with("ok fd=4 unix=true cloexec=true again=[cannot bind systemd:www: the socket named \"www\" was already taken"),
        "{report}"
    );
    // The child accepts on the socket we created: the connection reaches it.
    let mut stream = UnixStream::connect(&sock).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "hello from the activated child");
    assert!(child.wait().unwrap().success());
}

#[test]
fn systemd_missing_name_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let unix = UnixListener::bind(dir.path().join("a.sock")).unwrap();
    let out = dir.path().join("report");
    let mut child = spawn_child(&[Passed::Unix(&unix)], Some("api"), "www", &out, true);
    let report = wait_report(&out, &mut child);
    assert_eq!(
        report,
        "error: cannot bind systemd:www: systemd passed no socket named \"www\" (passed: api); set FileDescriptorName=www in the .socket unit"
    );
    child.wait().unwrap();
}

#[test]
fn systemd_sockets_for_another_pid_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let unix = UnixListener::bind(dir.path().join("a.sock")).unwrap();
    let out = dir.path().join("report");
    let mut child = spawn_child(&[Passed::Unix(&unix)], Some("www"), "www", &out, false);
    let report = wait_report(&out, &mut child);
    assert!(
        report.starts_with(&format!(
            "error: cannot bind systemd:www: LISTEN_PID={} is not this process",
            std::process::id()
        )),
        "{report}"
    );
    child.wait().unwrap();
}

#[test]
fn systemd_passed_descriptor_that_is_not_a_listener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("plain")).unwrap();
    let out = dir.path().join("report");
    let mut child = spawn_child(&[Passed::File(&file)], None, "unknown", &out, true);
    let report = wait_report(&out, &mut child);
    assert!(
        report.starts_with("error: cannot bind systemd:unknown: the socket named \"unknown\" (descriptor 3) cannot be used:"),
        "{report}"
    );
    child.wait().unwrap();
}

#[test]
fn systemd_parse_activation_table() {
    let sock = |name: &str, fd| PassedSocket {
        name: name.into(),
        fd,
    };
    type Case<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Result<Vec<PassedSocket>, ActivationError>,
    );
    let cases: Vec<Case> = vec![
        (None, None, None, Err(ActivationError::NotActivated)),
        (Some("7"), None, None, Err(ActivationError::NotActivated)),
        (None, Some("1"), None, Err(ActivationError::NotActivated)),
        (
            Some("8"),
            Some("1"),
            None,
            Err(ActivationError::WrongPid {
                listen_pid: 8,
                ours: 7,
            }),
        ),
        (
            Some("x"),
            Some("1"),
            None,
            Err(ActivationError::NotANumber {
                var: "LISTEN_PID",
                value: "x".into(),
            }),
        ),
        (
            Some("7"),
            Some("-1"),
            None,
            Err(ActivationError::NotANumber {
                var: "LISTEN_FDS",
                value: "-1".into(),
            }),
        ),
        (Some("7"), Some("0"), None, Ok(vec![])),
        (Some("7"), Some("0"), Some(""), Ok(vec![])),
        (
            Some("7"),
            Some("2"),
            None,
            Ok(vec![sock("unknown", 3), sock("unknown", 4)]),
        ),
        (
            Some("7"),
            Some("3"),
            Some("www:api:www-tcp"),
            Ok(vec![sock("www", 3), sock("api", 4), sock("www-tcp", 5)]),
        ),
        (
            Some("7"),
            Some("2"),
            Some("www"),
            Err(ActivationError::NameCount { names: 1, fds: 2 }),
        ),
    ];
    for (pid, fds, names, want) in cases {
        assert_eq!(
            parse_activation(pid, fds, names, 7),
            want,
            "{pid:?} {fds:?} {names:?}"
        );
    }
}

#[test]
fn systemd_find_by_name() {
    let passed = parse_activation(Some("1"), Some("2"), Some("a:b"), 1).unwrap();
    assert_eq!(find(&passed, "b").unwrap().fd, 4);
    assert_eq!(
        find(&passed, "c").unwrap_err().to_string(),
        "systemd passed no socket named \"c\" (passed: a, b); set FileDescriptorName=c in the .socket unit"
    );
    assert_eq!(
        find(&[], "c").unwrap_err(),
        ActivationError::NameNotFound {
            name: "c".into(),
            passed: "none".into()
        }
    );
}
