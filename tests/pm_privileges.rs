//! Dropping a worker's privileges: name resolution in the master, and a real child process that
//! drops to `nobody` between fork and exec (the tests run as root, as the master does).

use std::process::Command;

use fastpm::sys::child::ChildSetup;
use fastpm::sys::privileges::{resolve, Credentials, PrivilegeError};
use nix::unistd::{Group, User};

fn nobody() -> User {
    User::from_name("nobody")
        .unwrap()
        .expect("user nobody exists")
}

#[test]
fn pm_privileges_resolve_names_and_numbers() {
    let nobody = nobody();
    let creds = resolve(Some("nobody"), None).unwrap().unwrap();
    assert_eq!(creds.uid, nobody.uid.as_raw());
    assert_eq!(creds.gid, nobody.gid.as_raw());
    assert_eq!(creds.groups[0], creds.gid);

    let by_number = resolve(Some(&nobody.uid.to_string()), None)
        .unwrap()
        .unwrap();
    assert_eq!(by_number, creds);

    let daemon = Group::from_name("daemon")
        .unwrap()
        .expect("group daemon exists");
    let with_group = resolve(Some("nobody"), Some("daemon")).unwrap().unwrap();
    assert_eq!(with_group.gid, daemon.gid.as_raw());

    // A numeric uid with no passwd entry still works when a group is given.
    let bare = resolve(Some("54321"), Some("54321")).unwrap().unwrap();
    assert_eq!(
        bare,
        Credentials {
            uid: 54321,
            gid: 54321,
            groups: vec![54321]
        }
    );
}

#[test]
fn pm_privileges_resolve_errors() {
    assert!(resolve(None, None).unwrap().is_none());
    assert!(resolve(Some(""), Some("")).unwrap().is_none());
    let cases: [(Option<&str>, Option<&str>, &str); 4] = [
        (
            Some("no-such-user-fastpm"),
            None,
            "no user named \"no-such-user-fastpm\"",
        ),
        (
            Some("nobody"),
            Some("no-such-group-fastpm"),
            "no group named \"no-such-group-fastpm\"",
        ),
        (
            None,
            Some("daemon"),
            "group = \"daemon\" is set without user",
        ),
        (Some("54321"), None, "user \"54321\" has no passwd entry"),
    ];
    for (user, group, want) in cases {
        let err: PrivilegeError = resolve(user, group).unwrap_err();
        assert!(err.to_string().contains(want), "{user:?} {group:?}: {err}");
    }
}

#[test]
fn pm_privileges_child_drops_to_nobody() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root, like the master"
    );
    let creds = resolve(Some("nobody"), Some("daemon")).unwrap().unwrap();
    let mut cmd = Command::new("sh");
    // `id -u -r` is the real uid; the last line checks root is really gone.
    cmd.args([
        "-c",
        "id -u; id -u -r; id -g; id -G; cat /proc/self/status | grep ^Uid",
    ]);
    ChildSetup::new()
        .run_as(Some(creds.clone()))
        .apply(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let uid = creds.uid.to_string();
    assert_eq!(lines[0], uid);
    assert_eq!(lines[1], uid);
    assert_eq!(lines[2], creds.gid.to_string());
    let groups: Vec<u32> = lines[3].split(' ').map(|g| g.parse().unwrap()).collect();
    assert!(!groups.contains(&0), "root group kept: {groups:?}");
    assert!(groups.contains(&creds.gid));
    // Uid: real effective saved filesystem — all nobody.
    let ids: Vec<&str> = lines[4].split_whitespace().skip(1).collect();
    assert_eq!(ids, [uid.as_str(); 4]);
}

#[test]
fn pm_privileges_failed_drop_stops_the_child() {
    // setgroups needs root; a child that is already unprivileged cannot switch, and the spawn
    // fails instead of running the program with the wrong ids.
    let nobody = nobody();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "exit 0"]);
    // First drop to nobody (std's own uid/gid switch runs before the hook), then try (and
    // fail) to become 54321.
    std::os::unix::process::CommandExt::uid(&mut cmd, nobody.uid.as_raw());
    std::os::unix::process::CommandExt::gid(&mut cmd, nobody.gid.as_raw());
    ChildSetup::new()
        .run_as(Some(Credentials {
            uid: 54321,
            gid: 54321,
            groups: vec![54321],
        }))
        .apply(&mut cmd);
    let err = cmd.status().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
}
