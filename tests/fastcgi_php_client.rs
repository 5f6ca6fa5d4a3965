//! Our client against a real FastCGI server: `php-cgi` accepting on a listening socket
//! passed as its fd 0 (how fastpm's php upstream runs it). It answers GET_VALUES, sends
//! END_REQUEST without an empty STDOUT record, and honours KEEP_CONN.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::process::{Child, Command, Stdio};

use fastpm::fastcgi::{connect_with_retry, get_values, round_trip, ClientRequest, RetryPolicy};
use fastpm::listen::ListenAddress;

/// Kills the php-cgi we started (by its pid) when the test ends, pass or fail.
struct PhpCgi(Child);

impl Drop for PhpCgi {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn params(script: &std::path::Path, query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let script = script.to_str().unwrap();
    [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "POST"),
        ("SCRIPT_FILENAME", script),
        ("SCRIPT_NAME", "/hello.php"),
        ("REQUEST_URI", "/hello.php"),
        ("QUERY_STRING", query),
        ("CONTENT_TYPE", "application/octet-stream"),
        ("CONTENT_LENGTH", "3"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REDIRECT_STATUS", "200"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

#[test]
fn php_cgi_answers_our_client() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hello.php");
    std::fs::write(
        &script,
        "<?php echo 'Hello ', $_GET['n'] ?? '?', ' ', file_get_contents('php://input');",
    )
    .unwrap();
    let sock = dir.path().join("php.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let child = Command::new("php-cgi")
        .stdin(Stdio::from(OwnedFd::from(listener)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_clear()
        .env("PHP_FCGI_MAX_REQUESTS", "100")
        .spawn()
        .expect("php-cgi (Debian package php8.2-cgi) must be installed");
    let _php = PhpCgi(child);

    let addr = ListenAddress::Unix(sock);
    let (mut stream, _) = connect_with_retry(&addr, &RetryPolicy::default()).unwrap();
    let values = get_values(
        &mut stream,
        &["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"],
    )
    .unwrap();
    let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"FCGI_MAX_CONNS"), "{values:?}");

    // Two requests on one kept connection.
    for n in ["one", "two"] {
        let response = round_trip(
            &mut stream,
            1,
            &ClientRequest {
                params: params(&script, &format!("n={n}")),
                body: b"abc".to_vec(),
                keep_conn: true,
            },
        )
        .unwrap();
        let text = String::from_utf8(response.stdout).unwrap();
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: text/html"),
            "{text}"
        );
        assert!(text.ends_with(&format!("Hello {n} abc")), "{text}");
        assert_eq!((response.app_status, response.protocol_status), (0, 0));
    }
}
