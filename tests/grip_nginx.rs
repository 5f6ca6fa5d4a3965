//! GRIP from real relayed apps through a real nginx (DESIGN.md §8, issue 10's second
//! done-when line): a `php` pool of 4 worker processes (real php-cgi) holds 300 clients whose
//! script answered `Grip-Hold`, while a normal page still answers in < 100 ms; one publish
//! answers all 300; no `Grip-*` header reaches a client; the php-cgi count stays 4 throughout.
//! Also: a hold's timeout answer is the script's own response, a `prev-id` resume answers at
//! once with the message's id, and a `kind = "cgi"` shell script holds the same way.

mod common;

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http1::{self, HttpResponse};
use common::longpoll::{pool_named, publish_cli, wait_until};
use common::nginx::Nginx;
use common::procs::descendants;
use common::{require, Server};

const HELD: usize = 300;
const WORKERS: usize = 4;

/// nginx's side of a held request: the client's connection and the upstream one, so 300 held
/// need 600 and more; 256 (the shared prologue's) would refuse them.
const NGINX_CONNECTIONS: u32 = 2048;

/// A document root holding a copy of php-examples (grip.php, hello.php).
fn php_site() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    common::php_pages::copy_examples(root.path());
    root
}

fn start_fastpm(kind: &str, workers: usize, root: &Path) -> Server {
    let php_cgi = require("php-cgi");
    Server::start(&format!(
        r#"
[global]
status_listen = "127.0.0.1:0"
runtime_dir = "{{dir}}/rt"
shutdown_timeout = "5s"

[pool.app]
workers = "process"
max_children = {workers}

[pool.app.listen]
address = "unix:{{dir}}/app.sock"

[pool.app.app]
kind = "{kind}"
php_cgi = "{php_cgi}"
document_root = "{root}"
"#,
        php_cgi = php_cgi.display(),
        root = root.display(),
    ))
}

/// nginx in front of the pool, as docs/COMET.md says to configure it for held requests.
fn start_nginx(server: &Server, root: &Path) -> Nginx {
    let dir = server.dir.path().display().to_string();
    let root = root.display();
    Nginx::start_with(server.dir.path(), NGINX_CONNECTIONS, |port| {
        format!(
            r#"
    upstream app {{
        server unix:{dir}/app.sock;
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_keep_conn on;
            # Above every Grip-Timeout the scripts ask for, or nginx answers 504 first.
            fastcgi_read_timeout 120s;
            fastcgi_pass app;
        }}
    }}"#
        )
    })
}

/// The php-cgi processes that serve requests, anywhere below the master: with the default
/// `php_children = "shared"` the pool's php-cgi parent (a child of the master) only forks and
/// supervises, so it is not counted; with "per-worker" each worker's php-cgi is a child of its
/// worker process. Either way, one per worker.
fn php_cgi_pids(master: i32) -> Vec<i32> {
    descendants(master)
        .into_iter()
        .filter(|p| p.name == "php-cgi" && p.ppid != master)
        .map(|p| p.pid)
        .collect()
}

/// Counts php-cgi below the master every 20 ms until stopped: every count it saw.
struct PhpCgiWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<usize>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PhpCgiWatch {
    /// Samples a stop waits for: a test that ran faster than that is still watched through.
    const MIN_SAMPLES: usize = 5;

    fn start(master: i32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (flag, counts) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let n = php_cgi_pids(master).len();
                counts.lock().unwrap().push(n);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stop (once it has [`Self::MIN_SAMPLES`]) and give every count seen.
    fn counts(mut self) -> Vec<usize> {
        wait_until("php-cgi samples", Duration::from_secs(10), || {
            self.seen.lock().unwrap().len() >= Self::MIN_SAMPLES
        });
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// The `Grip-*` headers a client received (there must be none).
fn grip_headers(r: &HttpResponse) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("grip-"))
        .map(|(n, v)| format!("{n}: {v}"))
        .collect()
}

/// Whether nothing has been answered on `s` yet (the request is still held).
fn unanswered(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let r = s.peek(&mut b);
    s.set_nonblocking(false).unwrap();
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[test]
fn three_hundred_held_by_php_one_publish_answers_all_and_php_cgi_stays_four() {
    let root = php_site();
    let server = start_fastpm("php", WORKERS, root.path());
    let nginx = start_nginx(&server, root.path());
    let master = server.pid();
    wait_until("4 php-cgi", Duration::from_secs(10), || {
        php_cgi_pids(master).len() == WORKERS
    });
    let mut php_at_start = php_cgi_pids(master);
    php_at_start.sort();
    let watch = PhpCgiWatch::start(master);

    let t = Instant::now();
    let mut clients: Vec<TcpStream> = (0..HELD)
        .map(|_| {
            http1::send(
                nginx.port,
                "GET",
                "/grip.php?channel=room&timeout=60",
                &[],
                b"",
            )
        })
        .collect();
    wait_until("300 held", Duration::from_secs(30), || {
        pool_named(&server, "app")["held requests"] == HELD
    });
    eprintln!(
        "{HELD} requests held {:?} after the first was sent",
        t.elapsed()
    );

    // A normal page while they wait: under 100 ms (the median of 20 tries, so that a busy
    // shared machine does not fail it; every try under 1 s — a page that waits for a worker
    // pinned by a hold waits the hold's 60 s).
    let mut page_ms = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = http1::request(nginx.port, "GET", "/hello.php", &[], b"");
        page_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!((r.status, r.text().as_str()), (200, "Hello from PHP\n"));
    }
    eprintln!("hello.php while {HELD} are held, ms: {page_ms:.1?}");
    let mut sorted = page_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let (median, slowest) = (sorted[sorted.len() / 2], sorted[sorted.len() - 1]);
    assert!(
        median < 100.0,
        "a normal page took {median:.1} ms (median): {page_ms:.1?}"
    );
    assert!(
        slowest < 1000.0,
        "a normal page took {slowest:.1} ms: {page_ms:.1?}"
    );
    for (i, c) in clients.iter().enumerate() {
        assert!(unanswered(c), "client {i} answered before any publish");
    }

    let t = Instant::now();
    let answer = publish_cli(server.status_port(), "room", "hello, 300");
    assert!(
        answer.contains(&format!(r#""subscribers":{HELD}"#)),
        "publish answered {answer}"
    );
    let answers = Mutex::new(Vec::with_capacity(HELD));
    std::thread::scope(|scope| {
        for chunk in clients.chunks_mut(HELD / 4) {
            let answers = &answers;
            scope.spawn(move || {
                for c in chunk {
                    let r = http1::read(c).expect("a held client answered");
                    answers.lock().unwrap().push((r, t.elapsed()));
                }
            });
        }
    });
    let answers = answers.into_inner().unwrap();
    let last = answers.iter().map(|(_, at)| *at).max().unwrap();
    eprintln!("publish → all {HELD} answered through nginx: {last:?}");
    assert_eq!(answers.len(), HELD);
    for (r, _) in &answers {
        assert_eq!((r.status, r.text().as_str()), (200, "hello, 300"), "{r:?}");
        assert_eq!(grip_headers(r), Vec::<String>::new(), "{r:?}");
        assert_eq!(r.header("Message-Id"), Some("1"), "{r:?}");
        // The publisher's response, not the script's timeout answer.
        assert_eq!(r.header("X-Grip-Example"), None, "{r:?}");
    }

    // The workers are still there and free.
    let r = http1::request(nginx.port, "GET", "/hello.php", &[], b"");
    assert_eq!(r.status, 200);
    let counts = watch.counts();
    assert!(
        counts.len() >= 5 && counts.iter().all(|&n| n == WORKERS),
        "php-cgi counts seen: {counts:?}"
    );
    let mut php_at_end = php_cgi_pids(master);
    php_at_end.sort();
    assert_eq!(php_at_end, php_at_start, "php-cgi replaced");
    let st = pool_named(&server, "app");
    assert_eq!(st["held requests"], 0, "{st}");
    assert_eq!(st["max held requests"], HELD, "{st}");
    assert_eq!(st["messages delivered"], HELD, "{st}");
}

#[test]
fn php_timeout_answer_is_the_scripts_own_and_prev_id_resumes() {
    let root = php_site();
    let server = start_fastpm("php", 2, root.path());
    let nginx = start_nginx(&server, root.path());

    // Nothing published: after Grip-Timeout, the script's own status, headers and body.
    let t = Instant::now();
    let r = http1::request(
        nginx.port,
        "GET",
        "/grip.php?channel=quiet&timeout=1&code=202",
        &[],
        b"",
    );
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(5),
        "answered after {waited:?}"
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.text(), "no message on quiet within 1 s\n");
    assert_eq!(r.header("X-Grip-Example"), Some("timeout"), "{r:?}");
    assert_eq!(r.header("Cache-Control"), Some("no-store"), "{r:?}");
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; charset=utf-8"),
        "{r:?}"
    );
    assert_eq!(grip_headers(&r), Vec::<String>::new(), "{r:?}");
    assert_eq!(r.header("Message-Id"), None, "{r:?}");
    let st = pool_named(&server, "app");
    assert_eq!(st["held timeouts"], 1, "{st}");

    // Two messages nobody waited for; prev-id=1 answers at once with the second, and its id.
    for m in ["first", "second"] {
        let answer = publish_cli(server.status_port(), "later", m);
        assert!(answer.contains(r#""subscribers":0"#), "{answer}");
    }
    let t = Instant::now();
    let r = http1::request(
        nginx.port,
        "GET",
        "/grip.php?channel=later&prev_id=1",
        &[],
        b"",
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!((r.status, r.text().as_str()), (200, "second"), "{r:?}");
    assert_eq!(r.header("Message-Id"), Some("2"), "{r:?}");
    assert_eq!(grip_headers(&r), Vec::<String>::new(), "{r:?}");
}

/// A shell CGI script that holds on the channel named by its query string.
const GRIP_SH: &str = "#!/bin/sh\n\
printf 'Status: 202 Accepted\\r\\nGrip-Hold: response\\r\\nGrip-Channel: %s\\r\\nGrip-Timeout: 1\\r\\nContent-Type: text/plain\\r\\nX-Cgi: grip\\r\\n\\r\\nnothing on %s\\n' \"$QUERY_STRING\" \"$QUERY_STRING\"\n";

#[test]
fn cgi_script_holds_too() {
    require("sh");
    let root = tempfile::tempdir().unwrap();
    let script: PathBuf = root.path().join("grip.sh");
    std::fs::write(&script, GRIP_SH).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = start_fastpm("cgi", 2, root.path());
    let nginx = start_nginx(&server, root.path());

    let mut held = http1::send(nginx.port, "GET", "/grip.sh?cgichan", &[], b"");
    wait_until("1 held", Duration::from_secs(10), || {
        pool_named(&server, "app")["held requests"] == 1
    });
    let answer = publish_cli(server.status_port(), "cgichan", "from the publisher");
    assert!(answer.contains(r#""subscribers":1"#), "{answer}");
    let r = http1::read(&mut held).expect("answered");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "from the publisher"),
        "{r:?}"
    );
    assert_eq!(grip_headers(&r), Vec::<String>::new(), "{r:?}");
    assert_eq!(r.header("X-Cgi"), None, "{r:?}");

    let r = http1::request(nginx.port, "GET", "/grip.sh?other", &[], b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (202, "nothing on other\n"),
        "{r:?}"
    );
    assert_eq!(r.header("X-Cgi"), Some("grip"), "{r:?}");
    assert_eq!(grip_headers(&r), Vec::<String>::new(), "{r:?}");
}
