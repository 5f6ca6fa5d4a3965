//! The README's opening commands work as printed: the embedded default config is started as
//! `scripts/run.sh` starts it (`fastpm run` without -c, in the repository's top directory, with
//! php-cgi present so pool `www` serves php-examples/), then every command of the README's
//! "Try it from another shell" block is read from README.md and run, each checked for what it
//! must print.
//!
//! The default's addresses are fixed (127.0.0.1:9000, status 127.0.0.1:9180) and its
//! runtime_dir is /run/fastpm (as root): the server runs in private network and mount
//! namespaces (a fresh loopback, a private /run) so it clashes with nothing else on the machine,
//! and the commands join its namespaces with `nsenter`. Not a private /tmp: the repository (and
//! so the binary) may itself live under /tmp, as a CI clone does.
//!
//! The same way, the web-server examples in conf/ (nginx, Apache httpd, lighttpd) are started
//! with the command their own comments print and must serve php-examples/ through the default.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use common::daemon::Daemon;
use common::{require, FASTPM};

/// What each README command must print (the first key found in the command line wins).
const EXPECTED: [(&str, &str); 6] = [
    ("fastpm request", "Hello from PHP"),
    ("fastpm status --watch", "listen queue len:"),
    ("fastpm status", "pool:                 www"),
    ("/status?json", "\"pool\":\"www\""),
    ("/history?json", "\"listen queue len\":"),
    ("/metrics", "phpfpm_up{pool=\"www\"} 1"),
];

/// The commands of the first code block after "Try it from another shell", comments removed.
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let after = readme
        .split_once("Try it from another shell")
        .expect("README.md has the \"Try it from another shell\" block")
        .1;
    let block = after
        .split_once("```sh\n")
        .expect("a ```sh block")
        .1
        .split_once("```")
        .expect("the block ends")
        .0;
    block
        .lines()
        .map(|line| line.split_once(" #").map_or(line, |(cmd, _)| cmd).trim())
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// A command line split into words: whitespace separates, '…' quotes (all the README uses).
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quote in {line:?}");
    if started {
        words.push(word);
    }
    words
}

/// Starts the embedded default in its own network and mount namespaces; stopped with TERM
/// (its php-cgi children die with their workers) when the returned value is dropped. Returns
/// it and its log file.
fn start_default(dir: &Path) -> (Daemon, PathBuf) {
    require("php-cgi");
    require("ip");
    let log = dir.join("fastpm.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut server = Daemon::spawn(
        "fastpm run",
        Command::new(require("unshare"))
            .args(["-n", "-m", "--propagation", "private", "sh", "-c"])
            .arg("ip link set lo up && mount -t tmpfs -o mode=0755 tmpfs /run && exec \"$0\" run")
            .arg(FASTPM)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("LISTENQ")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out),
        Signal::SIGTERM,
    );
    server.wait_ready(
        || std::fs::read_to_string(&log).is_ok_and(|text| text.contains("ready:")),
        &[&log],
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("try: fastpm request 127.0.0.1:9000 /hello.php"),
        "the default pool serves php-examples through php-cgi: {text}"
    );
    (server, log)
}

#[test]
fn readme_opening_commands_work_as_printed_on_the_embedded_default() {
    let commands = readme_commands();
    assert!(commands.len() >= 5, "{commands:?}");
    let dir = tempfile::tempdir().unwrap();
    let (server, log) = start_default(dir.path());
    let netns = format!("--net=/proc/{}/ns/net", server.id());
    let nsenter = require("nsenter");
    for (i, line) in commands.iter().enumerate() {
        let (_, want) = EXPECTED
            .iter()
            .find(|(key, _)| line.contains(key))
            .unwrap_or_else(|| panic!("no expectation for the README command {line:?}"));
        let mut argv = words(line);
        // The README runs the release build that scripts/run.sh makes; this is the same code.
        if argv[0] == "target/release/fastpm" {
            argv[0] = FASTPM.to_string();
        }
        let out_path = dir.path().join(format!("out-{i}"));
        let mut child = Command::new(&nsenter)
            .arg(&netns)
            .arg("--")
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // `status --watch` is a live view only on a terminal; into this file it prints the
        // status once and exits, like the other commands (tests/status_watch.rs has the view).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = std::fs::read_to_string(&out_path).unwrap_or_default();
            if let Some(status) = child.try_wait().unwrap() {
                let out = std::fs::read_to_string(&out_path).unwrap_or_default();
                assert!(
                    status.success() && out.contains(want),
                    "{line}: {status}, want {want:?} in:\n{out}\nfastpm log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{line}: no {want:?} within 10 s; it printed:\n{out}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn words_split_like_the_shell_for_the_readme() {
    assert_eq!(
        words("curl -s 'http://127.0.0.1:9180/status?json'"),
        ["curl", "-s", "http://127.0.0.1:9180/status?json"]
    );
    assert_eq!(words("a  b ''"), ["a", "b", ""]);
}

/// `curl` inside the namespaces of `pid`: (status code, body).
fn ns_curl(pid: u32, url: &str) -> (u16, String) {
    let out = Command::new(require("nsenter"))
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args([
            "--",
            "curl",
            "-s",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            url,
        ])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn conf_examples_serve_the_default_as_their_comments_say() {
    let dir = tempfile::tempdir().unwrap();
    let (server, log) = start_default(dir.path());
    let top = Path::new(env!("CARGO_MANIFEST_DIR"));
    let info = format!(
        "SCRIPT_FILENAME={}\n",
        std::fs::canonicalize(top.join("php-examples/info.php"))
            .unwrap()
            .display()
    );
    // (conf file, the start command its comment prints, its port)
    let examples: [(&str, &str, u16); 3] = [
        (
            "conf/nginx.conf",
            "nginx -p \"$PWD\" -c conf/nginx.conf",
            8080,
        ),
        (
            "conf/apache2.conf",
            "/usr/sbin/apache2 -f \"$PWD/conf/apache2.conf\" -DFOREGROUND",
            8081,
        ),
        (
            "conf/lighttpd.conf",
            "lighttpd -D -f conf/lighttpd.conf",
            8082,
        ),
    ];
    for (conf, command, port) in examples {
        let text = std::fs::read_to_string(top.join(conf)).unwrap();
        assert!(text.contains(command), "{conf} no longer says {command:?}");
        let program = command.split_whitespace().next().unwrap();
        require(program.rsplit('/').next().unwrap());
        let out = dir.path().join(format!("{program}.log").replace('/', "_"));
        // In the default's network and mount namespaces (their /run is private too), in the
        // repository's top directory, through sh as the comment's command is typed.
        let mut web = Daemon::spawn(
            "web server",
            Command::new(require("nsenter"))
                .arg(format!("--net=/proc/{}/ns/net", server.id()))
                .arg(format!("--mount=/proc/{}/ns/mnt", server.id()))
                // Entering a mount namespace goes to its root directory otherwise.
                .arg(format!("--wd={}", top.display()))
                .args(["--", "sh", "-c", &format!("exec {command}")])
                .current_dir(top)
                .env("PWD", top)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(std::fs::File::create(&out).unwrap()),
            Signal::SIGTERM,
        );
        let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
        web.wait_ready(|| ns_curl(server.id(), &url("/hello.php")).0 != 0, &[&out]);
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(
            ns_curl(server.id(), &url("/hello.php")),
            (200, "Hello from PHP\n".to_string()),
            "{conf}: {}",
            log_text()
        );
        let (code, body) = ns_curl(server.id(), &url("/info.php/extra/path"));
        assert!(code == 200 && body.contains(&info), "{conf}: {code} {body}");
        assert_eq!(ns_curl(server.id(), &url("/missing.php")).0, 404, "{conf}");
        // The default pool answers no ping of its own (ping_path is off, as in php-fpm): the
        // location reaches the php app, which refuses the path (403 for a non-.php name, 404
        // behind Apache, as php-fpm answers there).
        let (code, body) = ns_curl(server.id(), &url("/ping"));
        assert!(
            matches!(code, 403 | 404) && body != "pong",
            "{conf}: {code} {body}"
        );
    }
}
