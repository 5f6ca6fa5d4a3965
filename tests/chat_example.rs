//! The chat example (php-examples/chat.html + chat.php) as a user runs it: the shipped
//! conf/nginx.conf (rewritten only for ports and paths) in front of a `php` pool with real
//! php-cgi. Over HTTP: two long-poll loops and a poster — every message reaches both loops in
//! order with its id, a loop that was between polls gets what it missed from history, a quiet
//! hold ends in 204. In a real browser (headless chromium driven over its DevTools pipe): a
//! message typed into one page's form appears in two pages, text shown as text, and a page
//! opened later shows the room's history.

mod common;

use std::io::{PipeWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::http1::{self, HttpResponse};
use common::nginx::Nginx;
use common::{free_port, master_status, require, Server};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// The example running: fastpm, nginx on the shipped config, and the document root.
struct Chat {
    server: Server,
    nginx: Nginx,
    _site: tempfile::TempDir,
}

impl Drop for Chat {
    /// A failed test shows what nginx and fastpm logged (a 502 says nothing by itself).
    fn drop(&mut self) {
        if std::thread::panicking() {
            let nginx =
                std::fs::read_to_string(self.server.path("nginx-error.log")).unwrap_or_default();
            eprintln!(
                "nginx error log:\n{nginx}\nfastpm log:\n{}",
                self.server.log()
            );
        }
    }
}

/// The site as the shipped nginx.conf expects it: `<prefix>/php-examples` (its `root` is
/// relative to nginx's `-p` prefix).
fn site() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path())
        .unwrap()
        .join("php-examples");
    std::fs::create_dir(&root).unwrap();
    common::php_pages::copy_examples(&root);
    (dir, root)
}

/// `text` with `from` replaced by `to`; panics when `from` is not there (the shipped config
/// changed shape and the test must be told, not silently test something else).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "conf/nginx.conf no longer has {from:?}"
    );
    text.replace(from, to)
}

/// Start the chat: fastpm with the default pool's shape (4 thread workers, `php`) and
/// `hold_seconds` as chat.php's hold, and nginx on conf/nginx.conf.
fn start(hold_seconds: u32) -> Chat {
    let (site, root) = site();
    let status = free_port();
    let server = Server::start(&format!(
        r#"
[global]
status_listen = "127.0.0.1:{status}"
runtime_dir = "{{dir}}/rt"

[pool.www]
workers = "thread"
max_children = 4

[pool.www.listen]
address = "127.0.0.1:0"

[pool.www.app]
kind = "php"
php_cgi = "{php_cgi}"
document_root = "{root}"
env = {{ FASTPM_PUBLISH_URL = "http://127.0.0.1:{status}/publish/", CHAT_HOLD_SECONDS = "{hold_seconds}" }}
"#,
        php_cgi = require("php-cgi").display(),
        root = root.display(),
    ));
    let dir = server.dir.path();
    let port = free_port();
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/nginx.conf"))
            .unwrap();
    let d = dir.display();
    let mut conf = shipped;
    for (from, to) in [
        (
            "listen 127.0.0.1:8080;",
            format!("listen 127.0.0.1:{port};"),
        ),
        (
            "server 127.0.0.1:9000;",
            format!("server 127.0.0.1:{};", server.pool_port("www")),
        ),
        ("pid /tmp/fastpm-nginx.pid;", format!("pid {d}/nginx.pid;")),
        (
            "error_log stderr warn;",
            format!("error_log {d}/nginx-error.log warn;"),
        ),
        ("/tmp/fastpm-nginx-", format!("{d}/nginx-")),
    ] {
        conf = replace_once(&conf, from, &to);
    }
    // The test's files are root's and private; the shipped config runs workers as nobody.
    let conf = format!("user root;\n{conf}");
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let nginx = Nginx::start_config(dir, &conf_path, root.parent().unwrap(), port);
    Chat {
        server,
        nginx,
        _site: site,
    }
}

impl Chat {
    fn held(&self) -> u64 {
        let all = master_status(self.server.status_port());
        all["pools"][0]["held requests"].as_u64().unwrap_or(0)
    }

    fn wait_held(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.held() < n {
            assert!(Instant::now() < deadline, "{n} polls not held within 15 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What chat.html's form sends.
    fn post(&self, user: &str, text: &str) -> HttpResponse {
        let body = format!("user={}&text={}", form_encode(user), form_encode(text));
        http1::request(
            self.nginx.port,
            "POST",
            "/chat.php",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
    }
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn no_grip_headers(r: &HttpResponse) {
    for (name, _) in &r.headers {
        assert!(!name.to_ascii_lowercase().starts_with("grip-"), "{r:?}");
    }
}

/// chat.html's loop over HTTP: from `last_id=0` until `n` messages; (id, user, text) each.
fn poll_loop(port: u16, n: usize) -> Vec<(u64, String, String)> {
    let mut last = "0".to_string();
    let mut got = Vec::new();
    while got.len() < n {
        let r = http1::request(port, "GET", &format!("/chat.php?last_id={last}"), &[], b"");
        no_grip_headers(&r);
        match r.status {
            200 => {
                let id = r.header("Message-Id").expect("Message-Id").to_string();
                let m: Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(r.header("Messages-Lost"), None, "{r:?}");
                got.push((
                    id.parse().unwrap(),
                    m["user"].as_str().unwrap().to_string(),
                    m["text"].as_str().unwrap().to_string(),
                ));
                last = id;
            }
            204 => {}
            other => panic!("poll answered {other}: {r:?}"),
        }
    }
    got
}

#[test]
fn two_loops_and_a_poster_through_the_shipped_nginx_conf() {
    const MESSAGES: usize = 12;
    let chat = start(2);
    let port = chat.nginx.port;

    // The page itself: static, from nginx, nothing loaded from elsewhere.
    let page = http1::request(port, "GET", "/chat.html", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page
        .header("Content-Type")
        .unwrap()
        .starts_with("text/html"));
    let html = page.text();
    assert!(
        html.contains("chat.php") && html.contains("<script>"),
        "{html}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "an outside URL: {html}"
    );

    // Two loops wait (both held before the first message: it arrives live); the poster sends
    // with short, uneven gaps, so the loops are often between two polls when a message comes
    // and get it from history through last_id.
    let loops: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || poll_loop(port, MESSAGES)))
        .collect();
    chat.wait_held(2);
    for i in 1..=MESSAGES {
        let r = chat.post("ann", &format!("message {i} <b>&"));
        assert_eq!(r.status, 204, "{r:?}");
        std::thread::sleep(Duration::from_millis([0, 3, 11][i % 3]));
    }
    let want: Vec<(u64, String, String)> = (1..=MESSAGES)
        .map(|i| (i as u64, "ann".into(), format!("message {i} <b>&")))
        .collect();
    for l in loops {
        assert_eq!(l.join().unwrap(), want);
    }

    // A quiet hold ends with chat.php's own answer: 204, not cached; no Grip- header.
    let t = Instant::now();
    let r = http1::request(
        port,
        "GET",
        &format!("/chat.php?last_id={MESSAGES}"),
        &[],
        b"",
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("Cache-Control"), Some("no-store"), "{r:?}");
    no_grip_headers(&r);

    // Bad input is refused by chat.php, nothing published.
    assert_eq!(chat.post("ann", "   ").status, 400);
    assert_eq!(chat.post(&"u".repeat(65), "hi").status, 413);
    let r = http1::request(port, "GET", "/chat.php?last_id=abc", &[], b"");
    assert_eq!(r.status, 400, "{r:?}");
    let r = http1::request(port, "DELETE", "/chat.php", &[], b"");
    assert_eq!(
        (r.status, r.header("Allow")),
        (405, Some("GET, HEAD, POST")),
        "{r:?}"
    );
    let all = master_status(chat.server.status_port());
    assert_eq!(all["pools"][0]["messages delivered"], 2 * MESSAGES, "{all}");
}

/// Headless chromium driven over `--remote-debugging-pipe` (DevTools protocol: JSON messages
/// ending in NUL on fds 3 and 4). Stopped with TERM when dropped.
struct Browser {
    to: PipeWriter,
    replies: mpsc::Receiver<Value>,
    next_id: u64,
    _process: Daemon,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (commands, to) = std::io::pipe().unwrap();
        let (mut from, replies_out) = std::io::pipe().unwrap();
        // The shell gives chromium the pipes as fds 3 (commands) and 4 (replies).
        let mut command = Command::new(require("sh"));
        command
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null 2>/dev/null"#)
            .arg(require("chromium"))
            .args([
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(commands)
            .stdout(replies_out);
        let process = Daemon::spawn("chromium", &mut command, Signal::SIGTERM);
        // Our copies of chromium's ends go with the command: its exit is then our EOF.
        drop(command);
        let (send, replies) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            while let Ok(n @ 1..) = from.read(&mut chunk) {
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let message: Value = serde_json::from_slice(&buf[..end]).unwrap();
                    buf.drain(..=end);
                    // Replies carry the command's id; events are not needed.
                    if message.get("id").is_some() && send.send(message).is_err() {
                        return;
                    }
                }
            }
        });
        Browser {
            to,
            replies,
            next_id: 0,
            _process: process,
            _profile: profile,
        }
    }

    /// One command; its `result` (panics on an error reply or none within 20 s).
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            command["sessionId"] = s.into();
        }
        let mut bytes = command.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .replies
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// A new tab on `url`; the session to talk to it.
    fn open(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", json!({"url": url}));
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        attached["sessionId"].as_str().unwrap().to_string()
    }

    /// The value of a JavaScript expression in a tab.
    fn eval(&mut self, session: &str, expression: &str) -> Value {
        let r = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Poll `expression` until it equals `want` (10 s), for a page that updates itself.
    fn wait_for(&mut self, session: &str, expression: &str, want: &Value) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.eval(session, expression);
            if &got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{expression}: {got}, want {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The messages a page shows: "ID USER|TEXT" each, in order.
const SHOWN: &str = "[...document.querySelectorAll('#messages li.message')]\
    .map(li => li.dataset.id + ' ' + li.querySelector('.user').textContent + '|' \
    + li.lastChild.textContent)";

#[test]
fn chat_html_in_chromium_shows_what_is_posted() {
    let chat = start(30);
    let url = format!("http://127.0.0.1:{}/chat.html", chat.nginx.port);
    let mut browser = Browser::start();
    let a = browser.open(&url);
    let b = browser.open(&url);
    chat.wait_held(2);

    // Typed into page a's form and sent with its button.
    browser.eval(
        &a,
        "document.getElementById('user').value = 'dora'; \
         document.getElementById('text').value = 'typed in a browser'; \
         document.querySelector('#send button').click(); true",
    );
    let first = json!(["1 dora|typed in a browser"]);
    browser.wait_for(&a, SHOWN, &first);
    browser.wait_for(&b, SHOWN, &first);
    browser.wait_for(&a, "document.getElementById('text').value", &json!(""));

    // Posted from elsewhere; markup stays text.
    assert_eq!(chat.post("test", "<b>bold?</b>").status, 204);
    let both = json!(["1 dora|typed in a browser", "2 test|<b>bold?</b>"]);
    browser.wait_for(&a, SHOWN, &both);
    browser.wait_for(&b, SHOWN, &both);
    assert_eq!(
        browser.eval(&b, "document.querySelector('#messages b') === null"),
        json!(true)
    );

    // A page opened now shows the room's history (its loop starts at last_id=0).
    let c = browser.open(&url);
    browser.wait_for(&c, SHOWN, &both);
}
