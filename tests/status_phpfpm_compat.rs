//! Compatibility with the real php-fpm 8.2: start it on a private unix socket with
//! `pm.status_path = /status`, read its status through `cgi-fcgi` (libfcgi, an independent
//! FastCGI client) in every format, and check that every key, line layout, metric name and
//! content type php-fpm produces is also what fastpm produces. Needs `/usr/sbin/php-fpm8.2`
//! and `cgi-fcgi`; fails (never skips) when they are missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fastpm::scoreboard::Scoreboard;
use fastpm::status::{render_pool, Format, PoolInfo, PoolSnapshot, Query};
use serde_json::Value;

const PHP_FPM: &str = "/usr/sbin/php-fpm8.2";

/// php-fpm running in the foreground; stopped (SIGQUIT to the master, then waited for) on drop.
struct PhpFpm {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl PhpFpm {
    fn start() -> PhpFpm {
        assert!(
            Path::new(PHP_FPM).exists(),
            "{PHP_FPM} is required (apt-get install php8.2-fpm)"
        );
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fpm.sock");
        // php-fpm refuses to run pool workers as root without a user.
        let user = if nix::unistd::geteuid().is_root() {
            "user = nobody\ngroup = nogroup\n"
        } else {
            ""
        };
        let conf = format!(
            "[global]\npid = {dir}/fpm.pid\nerror_log = {dir}/error.log\ndaemonize = no\n\
             [www]\n{user}listen = {sock}\npm = static\npm.max_children = 2\n\
             pm.status_path = /status\n",
            dir = dir.path().display(),
            sock = socket.display(),
        );
        let conf_path = dir.path().join("fpm.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(PHP_FPM)
            .args(["-n", "-y"])
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let fpm = PhpFpm {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while fpm.get("").is_none() {
            assert!(Instant::now() < deadline, "php-fpm did not start answering");
            std::thread::sleep(Duration::from_millis(50));
        }
        fpm
    }

    /// (content type, body) of `/status?QUERY`, or `None` when php-fpm does not answer yet.
    fn get(&self, query: &str) -> Option<(String, String)> {
        let out = Command::new("cgi-fcgi")
            .args(["-bind", "-connect"])
            .arg(&self.socket)
            .env("SCRIPT_NAME", "/status")
            .env("SCRIPT_FILENAME", "/status")
            .env("REQUEST_METHOD", "GET")
            .env("QUERY_STRING", query)
            .output()
            .expect("cgi-fcgi is required (apt-get install libfcgi-bin)");
        let raw = String::from_utf8(out.stdout).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let content_type = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            })?
            .1
            .trim()
            .to_string();
        Some((content_type, body.to_string()))
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// fastpm's answer for a pool with two live workers (like php-fpm's two).
fn ours(format: Format, full: bool) -> (String, String) {
    let board = Scoreboard::create(&[2]).unwrap();
    board.slots(0)[0].claim(10);
    board.slots(0)[1].claim(11);
    board.slots(0)[1].begin_request(b"GET", b"/status?json", b"");
    let info = PoolInfo {
        name: "www".into(),
        process_manager: "static".into(),
        listen_address: "unix:/tmp/x.sock".into(),
        listen_backlog: 511,
        somaxconn: Some(4096),
        max_children: 2,
    };
    let s = PoolSnapshot::collect(&info, board.pool(0), board.slots(0), full);
    let r = render_pool(&s, &Query { format, full });
    (r.content_type.to_string(), r.body)
}

fn object_keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn assert_subset(theirs: &BTreeSet<String>, ours: &BTreeSet<String>, what: &str) {
    let missing: Vec<_> = theirs.difference(ours).collect();
    assert!(
        missing.is_empty(),
        "{what}: php-fpm has {missing:?} that fastpm lacks"
    );
}

/// Keys of text lines (`key:   value`) of a pool block and of the first worker block.
fn text_keys(body: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut blocks = body.split("\n************************\n");
    let keys = |block: &str| {
        block
            .lines()
            .filter_map(|l| l.split_once(':').map(|(k, _)| k.to_string()))
            .collect::<BTreeSet<_>>()
    };
    let pool = keys(blocks.next().unwrap());
    let process = blocks.next().map(keys).unwrap_or_default();
    (pool, process)
}

/// Where a line's value starts (after `key:` and the padding).
fn value_column(line: &str) -> usize {
    let colon = line.find(':').unwrap();
    colon + 1 + line[colon + 1..].len() - line[colon + 1..].trim_start().len()
}

#[test]
fn php_fpm_keys_are_a_subset_of_fastpm_keys_in_every_format() {
    let fpm = PhpFpm::start();

    // JSON, pool and per-process keys.
    let (their_type, their_json) = fpm.get("json&full").unwrap();
    let (our_type, our_json) = ours(Format::Json, true);
    assert_eq!(our_type, their_type);
    let theirs: Value = serde_json::from_str(&their_json).unwrap();
    let ours_v: Value = serde_json::from_str(&our_json).unwrap();
    assert_subset(
        &object_keys(&theirs),
        &object_keys(&ours_v),
        "JSON pool keys",
    );
    let their_process = &theirs["processes"][0];
    let our_process = &ours_v["processes"][0];
    assert_subset(
        &object_keys(their_process),
        &object_keys(our_process),
        "JSON process keys",
    );
    for key in object_keys(&theirs) {
        assert_eq!(
            std::mem::discriminant(&theirs[&key]),
            std::mem::discriminant(&ours_v[&key]),
            "JSON type of {key:?}"
        );
    }
    for key in object_keys(their_process) {
        let same = match (&their_process[&key], &our_process[&key]) {
            (Value::Number(_), Value::Number(_)) | (Value::String(_), Value::String(_)) => true,
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        };
        assert!(same, "JSON process type of {key:?}");
    }

    // Plain text: keys, and the value column of every php-fpm line.
    let (their_type, their_text) = fpm.get("full").unwrap();
    let (our_type, our_text) = ours(Format::Text, true);
    assert_eq!(our_type, their_type);
    let (their_pool, their_proc) = text_keys(&their_text);
    let (our_pool, our_proc) = text_keys(&our_text);
    assert!(
        !their_proc.is_empty(),
        "php-fpm printed no worker block:\n{their_text}"
    );
    assert_subset(&their_pool, &our_pool, "text pool keys");
    assert_subset(&their_proc, &our_proc, "text process keys");
    for theirs_line in their_text
        .lines()
        .filter(|l| l.contains(':') && !l.starts_with("start time"))
    {
        let key = theirs_line.split_once(':').unwrap().0;
        let ours_line = our_text
            .lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .unwrap();
        assert_eq!(value_column(ours_line), value_column(theirs_line), "{key}");
    }
    // The pool block is a prefix of ours in key order (php-fpm's keys come first).
    let their_order: Vec<_> = their_text
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| l.split(':').next().unwrap())
        .collect();
    let our_order: Vec<_> = our_text
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .take(their_order.len())
        .collect();
    assert_eq!(our_order, their_order);

    // OpenMetrics: every php-fpm metric name is one of ours.
    let (their_type, their_om) = fpm.get("openmetrics").unwrap();
    let (our_type, our_om) = ours(Format::OpenMetrics, false);
    assert_eq!(our_type, their_type);
    let names = |body: &str| -> BTreeSet<String> {
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split([' ', '{']).next().unwrap().to_string())
            .collect()
    };
    assert_subset(
        &names(&their_om),
        &names(&our_om),
        "OpenMetrics metric names",
    );
    assert!(their_om.ends_with("# EOF\n") && our_om.ends_with("# EOF\n"));

    // XML element names.
    let (their_type, their_xml) = fpm.get("xml&full").unwrap();
    let (our_type, our_xml) = ours(Format::Xml, true);
    assert_eq!(our_type, their_type);
    let elements = |body: &str| -> BTreeSet<String> {
        body.split('<')
            .filter_map(|t| t.split('>').next())
            .filter(|t| !t.starts_with(['/', '?']) && !t.is_empty())
            .map(str::to_string)
            .collect()
    };
    assert_subset(&elements(&their_xml), &elements(&our_xml), "XML elements");

    // HTML: the same content type, and every row heading php-fpm shows.
    let (their_type, their_html) = fpm.get("html&full").unwrap();
    let (our_type, our_html) = ours(Format::Html, true);
    assert_eq!(our_type, their_type);
    for th in their_html
        .split("<th>")
        .skip(1)
        .map(|t| t.split('<').next().unwrap())
    {
        assert!(
            our_html.contains(&format!("<th>{th}</th>")),
            "HTML heading {th:?}"
        );
    }
}
