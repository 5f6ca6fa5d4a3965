//! `runtime_dir` is checked, not trusted (issue 9 item 2), and php pools whose worker processes
//! drop privileges get a private directory they can bind php-cgi's socket in (issue 12 item 1).
//! Real binary, real php-cgi, real `cgi-fcgi`; the tests run as root, like the master.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{require, Server, FASTPM};
use nix::sys::signal::Signal;
use nix::unistd::User;

/// A thread pool of the built-in hello app on the default address `<runtime_dir>/w.sock`, so a
/// refused runtime_dir is also the place where a socket would have appeared.
const HELLO: &str = r#"
[global]
status_listen = ""
runtime_dir = "{rt}"

[pool.w]
workers = "thread"
max_children = 1

[pool.w.app]
kind = "hello"
"#;

fn uid_of(name: &str) -> u32 {
    User::from_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("user {name} exists"))
        .uid
        .as_raw()
}

/// A temporary directory others may pass through (0711), as `/run` is: a dropped-privilege
/// worker must reach what fastpm puts below it.
fn passable_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

fn write_config(dir: &Path, template: &str, rt: &Path) -> PathBuf {
    let path = dir.join("fastpm.toml");
    std::fs::write(&path, template.replace("{rt}", rt.to_str().unwrap())).unwrap();
    path
}

fn fastpm(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(FASTPM);
    cmd.args(args)
        .env_remove("LISTENQ")
        .env_remove("RUNTIME_DIRECTORY")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run fastpm")
}

/// `fastpm run` on a refused directory must exit on its own: bounded, never left running.
/// (Its output goes to a file: a worker that outlived a killed master would hold a pipe open.)
fn run_until_exit(config: &Path) -> Output {
    let log = config.with_file_name("run.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(FASTPM)
        .args(["run", "-c", config.to_str().unwrap()])
        .env_remove("RUNTIME_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            std::thread::sleep(Duration::from_secs(2));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "fastpm run kept running on a refused runtime_dir; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: Vec::new(),
        stderr: std::fs::read(&log).unwrap(),
    }
}

/// Both `check` and `run` exit 2 with one line that names `rt` and contains `reason`, and
/// nothing is created in (or through) `rt`.
fn assert_refused(config: &Path, rt: &Path, reason: &str) {
    let before = entries(rt);
    for (what, out) in [
        (
            "check",
            fastpm(&["check", "-c", config.to_str().unwrap()], &[]),
        ),
        ("run", run_until_exit(config)),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        let line = err
            .lines()
            .find(|l| l.starts_with("fastpm: "))
            .unwrap_or_else(|| panic!("{what}: no error line: {err}"));
        assert!(
            line.contains(&format!("runtime_dir {}", rt.display())),
            "{what}: {line}"
        );
        assert!(line.contains(reason), "{what}: want {reason:?}: {line}");
        assert_eq!(
            entries(rt),
            before,
            "{what} created something in {}",
            rt.display()
        );
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn runtime_dir_owned_by_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = dir.path().join("rt");
    std::fs::create_dir(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&rt, Some(uid_of("nobody")), None).unwrap();
    let config = write_config(dir.path(), HELLO, &rt);
    assert_refused(&config, &rt, "is owned by uid 65534 (nobody)");
}

#[test]
fn runtime_dir_writable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = dir.path().join("rt");
    std::fs::create_dir(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = write_config(dir.path(), HELLO, &rt);
    assert_refused(&config, &rt, "is writable by group or others (mode 0777)");
    // Still 0777: a refusal changes nothing.
    assert_eq!(std::fs::metadata(&rt).unwrap().mode() & 0o7777, 0o777);
}

#[test]
fn runtime_dir_that_is_a_symlink_is_refused() {
    // The attack: nobody points the name at a directory of its own.
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(uid_of("nobody")), None).unwrap();
    let rt = dir.path().join("rt");
    std::os::unix::fs::symlink(&theirs, &rt).unwrap();
    let config = write_config(dir.path(), HELLO, &rt);
    assert_refused(&config, &rt, "is a symlink");
    assert!(
        entries(&theirs).is_empty(),
        "nothing created through the link"
    );
    // Even a link to a directory fastpm would accept is refused.
    std::os::unix::fs::chown(&theirs, Some(0), None).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_refused(&config, &rt, "is a symlink");
    assert!(
        entries(&theirs).is_empty(),
        "nothing created through the link"
    );
}

#[test]
fn runtime_dir_under_a_parent_others_own_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("theirs");
    std::fs::create_dir(&parent).unwrap();
    std::os::unix::fs::chown(&parent, Some(uid_of("nobody")), None).unwrap();
    let rt = parent.join("rt");
    let config = write_config(dir.path(), HELLO, &rt);
    let out = fastpm(&["check", "-c", config.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "its parent {} is owned by uid 65534",
            parent.display()
        )),
        "{err}"
    );
    assert!(
        !rt.exists(),
        "not created under a parent someone else controls"
    );
}

#[test]
fn missing_runtime_dir_is_created_0700() {
    let dir = tempfile::tempdir().unwrap();
    let rt = dir.path().join("a/b/rt");
    let config = write_config(dir.path(), HELLO, &rt);
    let out = fastpm(&["check", "-c", config.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = std::fs::symlink_metadata(&rt).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o7777, 0o700, "runtime_dir mode");
    assert_eq!(meta.uid(), 0);
    // Parents fastpm had to create are not writable by others either.
    let parent = std::fs::metadata(dir.path().join("a/b")).unwrap();
    assert_eq!(parent.mode() & 0o022, 0, "{:o}", parent.mode());

    // `run` on a missing one: created 0700, and the pool's default socket is in it.
    std::fs::remove_dir_all(dir.path().join("a")).unwrap();
    // No graceful stop in these two: the master installs its signal handlers just after
    // "ready", so a TERM sent at once could find none. Dropping the server stops it.
    let server = start(dir, &config, &[]);
    assert!(
        rt.join("w.sock").exists(),
        "the pool's socket in runtime_dir"
    );
    let meta = std::fs::symlink_metadata(&rt).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o700, "runtime_dir mode after run");
    drop(server);
}

#[test]
fn runtime_directory_env_wins_over_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let configured = dir.path().join("rt");
    let systemd = dir.path().join("systemd-rt");
    let config = write_config(dir.path(), HELLO, &configured);
    let env = [("RUNTIME_DIRECTORY", systemd.to_str().unwrap())];
    let out = fastpm(&["check", "-c", config.to_str().unwrap()], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("runtime_dir = \"{}\"", systemd.display())),
        "{text}"
    );
    assert!(text.contains("$RUNTIME_DIRECTORY"), "{text}");
    assert!(
        text.contains(&format!("unix:{}/w.sock", systemd.display())),
        "{text}"
    );

    let server = start(dir, &config, &env);
    assert!(
        systemd.join("w.sock").exists(),
        "the pool's socket in $RUNTIME_DIRECTORY"
    );
    assert!(
        !configured.exists(),
        "the configured runtime_dir is not used"
    );
    drop(server);
}

/// `fastpm run -c config` with its log in `dir`, once it says ready, as a `common::Server`
/// (which owns `dir` and stops the master when dropped). The tests choose `dir`'s mode: a
/// dropped-privilege worker must be able to pass through it.
fn start(dir: tempfile::TempDir, config: &Path, env: &[(&str, &str)]) -> Server {
    launch(Command::new(FASTPM), dir, config, env)
}

/// Like [`start`], in a private mount namespace with an empty tmpfs on `/run`, so that the
/// default runtime_dir (`/run/fastpm` for root) is this test's alone.
fn start_with_private_run(dir: tempfile::TempDir, config: &Path) -> Server {
    let mut cmd = Command::new(require("unshare"));
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o mode=0755 fastpm-test /run && exec \"$0\" \"$@\"")
        .arg(FASTPM);
    launch(cmd, dir, config, &[])
}

fn launch(mut cmd: Command, dir: tempfile::TempDir, config: &Path, env: &[(&str, &str)]) -> Server {
    let log_path = dir.path().join("fastpm.log");
    let file = std::fs::File::create(&log_path).unwrap();
    cmd.args(["run", "-c", config.to_str().unwrap()])
        .env_remove("LISTENQ")
        .env_remove("RUST_LOG")
        .env_remove("RUNTIME_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut server = Server {
        child: cmd.spawn().unwrap(),
        dir,
        log_path,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !server.log().contains("ready:") {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("fastpm exited ({status}); log:\n{}", server.log());
        }
        assert!(
            Instant::now() < deadline,
            "not ready; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// A graceful stop that must succeed.
fn stop(server: &mut Server) {
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "{status}; log:\n{}", server.log());
}

const PHP_AS_WWW_DATA: &str = r#"
[global]
status_listen = ""
runtime_dir = "{rt}"

[pool.p]
workers = "{workers}"
max_children = 2
user = "www-data"

[pool.p.listen]
address = "unix:{base}/p.sock"

[pool.p.app]
kind = "php"
php_cgi = "{php_cgi}"
document_root = "{root}"
"#;

/// A php pool running as www-data: a world-readable document root with page.php, its config
/// and the base of `runtime_dir` in a directory others may pass through.
struct PhpSite {
    config: PathBuf,
    rt: PathBuf,
    sock: PathBuf,
    page: PathBuf,
}

fn php_site(workers: &str, base: &tempfile::TempDir) -> PhpSite {
    let root = base.path().join("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let page = root.join("page.php");
    std::fs::write(&page, "<?php echo 'page body ', 6 * 7;").unwrap();
    std::fs::set_permissions(&page, std::fs::Permissions::from_mode(0o644)).unwrap();
    let rt = base.path().join("rt");
    let template = PHP_AS_WWW_DATA
        .replace("{workers}", workers)
        .replace("{base}", base.path().to_str().unwrap())
        .replace("{php_cgi}", require("php-cgi").to_str().unwrap())
        .replace("{root}", root.to_str().unwrap());
    let config = write_config(base.path(), &template, &rt);
    PhpSite {
        sock: base.path().join("p.sock"),
        config,
        rt,
        page,
    }
}

/// One GET through `cgi-fcgi` (libfcgi, not our client): the whole response.
fn cgi_fcgi_get(sock: &Path, script: &Path) -> String {
    let out = Command::new(require("cgi-fcgi"))
        .args(["-bind", "-connect", sock.to_str().unwrap()])
        .env_clear()
        .env("REQUEST_METHOD", "GET")
        .env("SCRIPT_FILENAME", script)
        .env(
            "SCRIPT_NAME",
            format!("/{}", script.file_name().unwrap().to_string_lossy()),
        )
        .env("QUERY_STRING", "")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Processes named `name` below `ancestor` (any depth), with their real uid.
fn descendants_named(ancestor: u32, name: &str) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
        };
        if field("Name:").as_deref() != Some(name) {
            continue;
        }
        let uid: u32 = field("Uid:")
            .and_then(|v| v.split_whitespace().next().and_then(|u| u.parse().ok()))
            .unwrap_or(u32::MAX);
        let mut up = pid;
        while up > 1 {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{up}/stat")) else {
                break;
            };
            let Some((_, tail)) = stat.rsplit_once(") ") else {
                break;
            };
            up = tail
                .split(' ')
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if up == ancestor {
                found.push((pid, uid));
                break;
            }
        }
    }
    found
}

fn assert_php_answers(site: &PhpSite, server: &Server) {
    for _ in 0..4 {
        let response = cgi_fcgi_get(&site.sock, &site.page);
        assert!(
            response.starts_with("Status: 200") || !response.contains("Status:"),
            "{response}\nlog:\n{}",
            server.log()
        );
        assert!(
            response.contains("page body 42"),
            "{response}\nlog:\n{}",
            server.log()
        );
    }
}

#[test]
fn php_process_workers_as_www_data_answer_200() {
    let base = passable_tempdir();
    let site = php_site("process", &base);
    let mut server = start(base, &site.config, &[]);
    assert_php_answers(&site, &server);
    let www_data = uid_of("www-data");
    let php = descendants_named(server.child.id(), "php-cgi");
    assert!(!php.is_empty(), "php-cgi runs below the master");
    for (pid, uid) in &php {
        assert_eq!(*uid, www_data, "php-cgi {pid} runs as www-data");
    }
    // The pool's private directory: 0700, the pool user's; runtime_dir stays root's.
    let pool_dir = std::fs::symlink_metadata(site.rt.join("p")).unwrap();
    assert!(pool_dir.is_dir());
    assert_eq!(pool_dir.mode() & 0o7777, 0o700);
    assert_eq!(pool_dir.uid(), www_data);
    let rt = std::fs::symlink_metadata(&site.rt).unwrap();
    assert_eq!((rt.uid(), rt.mode() & 0o022), (0, 0));
    assert!(
        !server.log().contains("php-cgi cannot start"),
        "{}",
        server.log()
    );
    stop(&mut server);
}

#[test]
fn php_thread_workers_with_user_answer_200() {
    let base = passable_tempdir();
    let site = php_site("thread", &base);
    let mut server = start(base, &site.config, &[]);
    assert_php_answers(&site, &server);
    // Thread workers bind php-cgi's sockets in the master (root): the pool's private
    // directory stays root's, 0700.
    let pool_dir = std::fs::symlink_metadata(site.rt.join("p")).unwrap();
    assert!(pool_dir.is_dir());
    assert_eq!((pool_dir.uid(), pool_dir.mode() & 0o7777), (0, 0o700));
    stop(&mut server);
}

#[test]
fn php_workers_as_www_data_find_the_default_runtime_dir() {
    // No runtime_dir in the config: the master (root) uses /run/fastpm. Its workers read the
    // config again as www-data, for whom the default would be elsewhere; they must still bind
    // php-cgi's sockets in the master's directory.
    let base = passable_tempdir();
    let site = php_site("process", &base);
    let text = std::fs::read_to_string(&site.config).unwrap();
    let line = format!("runtime_dir = \"{}\"\n", site.rt.display());
    assert!(text.contains(&line), "{text}");
    std::fs::write(&site.config, text.replace(&line, "")).unwrap();
    let mut server = start_with_private_run(base, &site.config);
    assert_php_answers(&site, &server);
    stop(&mut server);
}

#[test]
fn php_pool_directory_of_someone_else_or_a_symlink_is_refused() {
    let base = passable_tempdir();
    let site = php_site("process", &base);
    std::fs::create_dir(&site.rt).unwrap();
    std::fs::set_permissions(&site.rt, std::fs::Permissions::from_mode(0o711)).unwrap();
    let pool_dir = site.rt.join("p");
    // Someone else's directory where the pool's sockets would go.
    std::fs::create_dir(&pool_dir).unwrap();
    std::fs::set_permissions(&pool_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&pool_dir, Some(uid_of("nobody")), None).unwrap();
    assert_refused(&site.config, &pool_dir, "is owned by uid 65534 (nobody)");
    // A link to a directory the pool's user owns: a link all the same.
    std::fs::remove_dir(&pool_dir).unwrap();
    let elsewhere = base.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::chown(&elsewhere, Some(uid_of("www-data")), None).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &pool_dir).unwrap();
    assert_refused(&site.config, &pool_dir, "is a symlink");
    assert!(
        entries(&elsewhere).is_empty(),
        "nothing bound through the link"
    );
}

#[test]
fn php_workers_that_could_not_reach_runtime_dir_are_refused_at_start() {
    // The base directory is 0700 root: www-data could not reach rt/p/ below it, and every
    // request would get 503 while the master said "ready". Refused up front instead, loudly.
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let site = php_site("process", &base);
    let out = run_until_exit(&site.config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("ready:"), "{err}");
    assert!(
        err.contains(&format!("runtime_dir {}", site.rt.display()))
            && err.contains("pool p: its user (uid 33) cannot reach")
            && err.contains(&base.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn lock_file_symlink_is_refused() {
    use fastpm::config::AcceptLock;
    use fastpm::worker::lock::{lock_file_path, LockShared};
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    for kind in [AcceptLock::Fcntl, AcceptLock::Flock] {
        std::os::unix::fs::symlink(&target, lock_file_path(dir.path(), "www")).unwrap();
        let err = LockShared::create(kind, dir.path(), "www").expect_err("symlink refused");
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(
            !target.exists(),
            "the link was not followed to create its target"
        );
        // A link to an existing file is not followed either: the file keeps its mode.
        std::fs::write(&target, "").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(LockShared::create(kind, dir.path(), "www").is_err());
        std::fs::remove_file(&target).unwrap();
        std::fs::remove_file(lock_file_path(dir.path(), "www")).unwrap();
    }
}

#[test]
fn socket_permissions_are_not_applied_through_a_symlink() {
    use fastpm::listen::unix_path::apply_permissions;
    use fastpm::listen::ListenAddress;
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    // What a local user could leave where the socket was just bound.
    let path = dir.path().join("www.sock");
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let address = ListenAddress::Unix(path.clone());
    let err = apply_permissions(&address, &path, 0o666, Some("nobody"), None)
        .expect_err("a symlink at the socket path is refused");
    assert!(err.to_string().contains("symlink"), "{err}");
    let meta = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        (meta.mode() & 0o777, meta.uid()),
        (0o600, 0),
        "victim untouched"
    );

    // A regular file (not the socket fastpm bound) is refused too.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "").unwrap();
    assert!(apply_permissions(&address, &path, 0o666, None, None).is_err());

    // The real thing works: a socket fastpm bound gets its mode and owner.
    std::fs::remove_file(&path).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    apply_permissions(&address, &path, 0o660, Some("www-data"), None).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(
        (meta.mode() & 0o777, meta.uid()),
        (0o660, uid_of("www-data"))
    );
}
