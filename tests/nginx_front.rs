//! nginx in front, fastpm behind — the ordinary deployment — and `cgi-fcgi` (libfcgi) as an
//! independent FastCGI client. Both are real programs; the tests fail when they are missing.

mod common;

use std::process::{Command, Stdio};

use common::nginx::{curl, kept_connections_to, Nginx};
use common::{require, Server};

const POOLS: &str = r#"
[global]
status_listen = ""
runtime_dir = "{dir}/rt"

[pool.h]
workers = "thread"
max_children = 2
status_path = "/status"
ping_path = "/ping"

[pool.h.listen]
address = "unix:{dir}/h.sock"

[pool.h.app]
kind = "hello"

[pool.e]
workers = "thread"
max_children = 2

[pool.e.listen]
address = "unix:{dir}/e.sock"

[pool.e.app]
kind = "echo"
"#;

fn start_nginx(server: &Server) -> Nginx {
    let dir = server.dir.path().display().to_string();
    Nginx::start(server.dir.path(), |port| {
        format!(
            r#"
    upstream echo_keep {{
        server unix:{dir}/e.sock;
        keepalive 2;
    }}
    server {{
        listen 127.0.0.1:{port};
        root {dir};
        location /echo {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_pass unix:{dir}/e.sock;
        }}
        location /keep {{
            include /etc/nginx/fastcgi_params;
            fastcgi_keep_conn on;
            fastcgi_pass echo_keep;
        }}
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_pass unix:{dir}/h.sock;
        }}
    }}"#
        )
    })
}

#[test]
fn nginx_serves_hello_ping_and_status() {
    let server = Server::start(POOLS);
    let nginx = start_nginx(&server);
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let (code, body) = curl(&[], &format!("{base}/hello"));
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("Hello from fastpm pool h"));
    let (code, body) = curl(&[], &format!("{base}/ping"));
    assert_eq!((code, String::from_utf8_lossy(&body).trim()), (200, "pong"));
    let (code, body) = curl(&[], &format!("{base}/status?json"));
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_slice(&body).expect("status JSON");
    assert_eq!(status["pool"], "h");
    assert!(status["accepted conn"].as_u64().unwrap() >= 2, "{status}");
    let (code, body) = curl(&[], &format!("{base}/status"));
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("listen queue len:"));
}

#[test]
fn nginx_post_bodies_arrive_intact() {
    let server = Server::start(POOLS);
    let nginx = start_nginx(&server);
    let url = format!("http://127.0.0.1:{}/echo/post", nginx.port);
    for size in [0usize, 1, 32768, 1 << 20, 10 << 20] {
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let file = server.path("body.bin");
        std::fs::write(&file, &body).unwrap();
        let data = format!("@{}", file.display());
        let (code, out) = curl(
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &data,
            ],
            &url,
        );
        assert_eq!(code, 200, "size {size}");
        let at = out
            .windows(2)
            .position(|w| w == b"\n\n")
            .expect("blank line after params");
        assert_eq!(
            &out[at + 2..],
            body.as_slice(),
            "body of {size} bytes echoed back intact"
        );
        if size > 0 {
            let head = String::from_utf8_lossy(&out[..at]);
            assert!(head.contains(&format!("CONTENT_LENGTH={size}\n")), "{head}");
        }
    }
}

#[test]
fn nginx_keep_conn_reuses_connections() {
    let server = Server::start(POOLS);
    let nginx = start_nginx(&server);
    for i in 0..20 {
        let (code, out) = curl(&[], &format!("http://127.0.0.1:{}/keep/{i}", nginx.port));
        assert_eq!(code, 200);
        assert!(String::from_utf8_lossy(&out).contains(&format!("SCRIPT_NAME=/keep/{i}")));
    }
    // With keep-conn nginx keeps its upstream connection open between requests: the pool's
    // socket still has an established connection after the last response (without keep-conn,
    // both sides close after every request).
    let sock = server.path("e.sock");
    let out = Command::new(require("ss"))
        .args(["-xH", "state", "established"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let held = text
        .lines()
        .filter(|l| l.contains(sock.to_str().unwrap()))
        .count();
    assert!(
        held >= 1,
        "no kept connection to {}:\n{text}",
        sock.display()
    );
}

/// nginx's `keepalive` larger than the pool (conf/nginx.conf keeps 8 for 4 workers): nginx
/// keeps more idle connections than there are workers and sends requests down any of them,
/// or down new ones that wait in the listen queue. Those must not wait for an idle connection to time
/// out (10 s): idle kept connections wait in the front, holding no worker, and every request
/// is answered promptly, with no error.
#[test]
fn nginx_keepalive_larger_than_the_pool_does_not_stall_queued_requests() {
    let server = Server::start(
        r#"
[global]
status_listen = ""
runtime_dir = "{dir}/rt"

[pool.s]
workers = "thread"
max_children = 2

[pool.s.listen]
address = "unix:{dir}/s.sock"

[pool.s.app]
kind = "sleep"
"#,
    );
    let nginx = Nginx::start(
        server.dir.path(),
        kept_connections_to(&server.path("s.sock"), 8),
    );
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let url = format!("http://127.0.0.1:{}/s?ms={}", nginx.port, 20 + i);
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let (code, body) = curl(&[], &url);
                    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client failed");
    }
    // 30 requests of 20-25 ms over 2 workers: about 0.4 s of work. A stall behind an idle kept
    // connection costs 10 s.
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "30 requests took {took:?}: queued requests waited for idle kept connections to time out"
    );
}

#[test]
fn cgi_fcgi_client_gets_answers() {
    let cgi_fcgi = require("cgi-fcgi");
    let server = Server::start(POOLS);
    let sock = server.path("h.sock");
    let out = Command::new(&cgi_fcgi)
        .args(["-bind", "-connect"])
        .arg(&sock)
        .env_clear()
        .env("REQUEST_METHOD", "GET")
        .env("SCRIPT_NAME", "/hello")
        .env("SCRIPT_FILENAME", "/hello")
        .env("QUERY_STRING", "")
        .output()
        .expect("run cgi-fcgi");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Hello from fastpm pool h"), "{text}");
    let out = Command::new(&cgi_fcgi)
        .args(["-bind", "-connect"])
        .arg(&sock)
        .env_clear()
        .env("REQUEST_METHOD", "GET")
        .env("SCRIPT_NAME", "/status")
        .env("QUERY_STRING", "json&full")
        .output()
        .expect("run cgi-fcgi");
    let text = String::from_utf8_lossy(&out.stdout);
    let json = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or(&text);
    let status: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        status["processes"].as_array().map(|a| a.len()),
        Some(2),
        "{status}"
    );
    // Echo pool: a POST body through cgi-fcgi's stdin.
    let mut child = Command::new(&cgi_fcgi)
        .args(["-bind", "-connect"])
        .arg(server.path("e.sock"))
        .env_clear()
        .env("REQUEST_METHOD", "POST")
        .env("SCRIPT_NAME", "/echo")
        .env("CONTENT_LENGTH", "11")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello world")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("\n\nhello world"));
}
