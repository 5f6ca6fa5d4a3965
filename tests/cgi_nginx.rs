//! `kind = "cgi"` end to end: real nginx → fastpm → a shell CGI script per request.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::nginx::Nginx;
use common::{require, Server};

const SCRIPTS: &[(&str, &str, u32)] = &[
    (
        "form.sh",
        "#!/bin/sh\nbody=$(cat)\nprintf 'Status: 201 Created\\r\\nContent-Type: text/plain\\r\\nX-Cgi: yes\\r\\n\\r\\n'\nprintf 'method=%s\\nquery=%s\\nbody=%s\\nproxy=%s\\n' \"$REQUEST_METHOD\" \"$QUERY_STRING\" \"$body\" \"$HTTP_PROXY\"\n",
        0o755,
    ),
    ("redirect.sh", "#!/bin/sh\necho 'Location: /elsewhere'\necho\n", 0o755),
    ("dies.sh", "#!/bin/sh\necho 'dying early' >&2\nexit 3\n", 0o755),
    ("slow.sh", "#!/bin/sh\nsleep 5\necho 'Content-Type: text/plain'\necho\necho late\n", 0o755),
    ("big.sh", "#!/bin/sh\necho 'Content-Type: application/octet-stream'\necho\nhead -c 3000000 /dev/zero\n", 0o755),
    ("plain.sh", "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho hi\n", 0o644),
];

fn start() -> (Server, Nginx, tempfile::TempDir) {
    require("sh");
    let root = tempfile::tempdir().unwrap();
    for (name, text, mode) in SCRIPTS {
        let path = root.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let config = format!(
        r#"
[global]
status_listen = ""
runtime_dir = "{{dir}}/rt"

[pool.c]
workers = "thread"
max_children = 2
request_timeout = "1s"

[pool.c.listen]
address = "unix:{{dir}}/c.sock"

[pool.c.app]
kind = "cgi"
document_root = "{}"
"#,
        root.path().display()
    );
    let server = Server::start(&config);
    let dir = server.dir.path().display().to_string();
    let nginx = Nginx::start(server.dir.path(), |port| {
        format!(
            r#"
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_pass unix:{dir}/c.sock;
        }}
    }}"#,
            root = root.path().display()
        )
    });
    (server, nginx, root)
}

/// (status code, headers and body as text).
fn curl(args: &[&str], url: &str) -> (u16, String) {
    let args: Vec<&str> = ["-i"].into_iter().chain(args.iter().copied()).collect();
    let (code, out) = common::nginx::curl(&args, url);
    (code, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn cgi_script_gets_method_query_and_body_and_its_status_reaches_the_client() {
    let (_server, nginx, _root) = start();
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let (code, text) = curl(
        &[
            "--data-binary",
            "hello body",
            "-H",
            "Proxy: http://evil.example:1",
        ],
        &format!("{base}/form.sh?a=1&b=2"),
    );
    assert_eq!(code, 201, "{text}");
    assert!(text.to_ascii_lowercase().contains("x-cgi: yes"), "{text}");
    assert!(
        text.ends_with("method=POST\nquery=a=1&b=2\nbody=hello body\nproxy=\n"),
        "{text}"
    );
    let (code, text) = curl(&[], &format!("{base}/form.sh"));
    assert_eq!(code, 201, "{text}");
    assert!(
        text.ends_with("method=GET\nquery=\nbody=\nproxy=\n"),
        "{text}"
    );
}

#[test]
fn cgi_redirect_errors_and_limits() {
    let (server, nginx, root) = start();
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let (code, text) = curl(&[], &format!("{base}/redirect.sh"));
    assert_eq!(code, 302, "{text}");
    assert!(text.to_ascii_lowercase().contains("location: "), "{text}");

    let (code, text) = curl(&[], &format!("{base}/dies.sh"));
    assert_eq!(code, 502, "{text}");
    let log = server.log();
    assert!(log.contains("ended before sending its headers"), "{log}");
    assert!(
        log.contains("dying early"),
        "the script's stderr is logged: {log}"
    );

    let (code, _) = curl(&[], &format!("{base}/plain.sh"));
    assert_eq!(code, 403, "not executable");
    let (code, _) = curl(&[], &format!("{base}/missing.sh"));
    assert_eq!(code, 404);

    let started = Instant::now();
    let (code, _) = curl(&[], &format!("{base}/slow.sh"));
    assert_eq!(code, 504);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "killed at request_timeout"
    );

    let out = Command::new(require("curl"))
        .args(["-s", "--max-time", "20", "-o", "-"])
        .arg(format!("{base}/big.sh"))
        .output()
        .unwrap();
    assert_eq!(out.stdout.len(), 3_000_000, "streamed output arrives whole");
    assert!(out.stdout.iter().all(|&b| b == 0));
    assert!(Path::new(root.path()).exists());
}
