//! php-examples pages that every way of running PHP (php-cgi, shared php-cgi, embedded) must
//! answer alike through nginx: a status and headers set by the script, a redirect, the fatal
//! error page (logged by fastpm and passed on to nginx's log), a form POST, and the scripts
//! that must not run.

use std::path::Path;
use std::process::Command;

use super::nginx::curl;
use super::{require, Server};

/// A response body as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A copy of the repository's php-examples/ in `root` (an existing directory).
pub fn copy_examples(root: &Path) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("php-examples");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), root.join(entry.file_name())).unwrap();
    }
}

/// `root/link.php`, a symlink to a script in `outside` that [`refusals`] expects not to run.
pub fn link_out_of_root(root: &Path, outside: &Path) {
    std::fs::write(outside.join("evil.php"), "<?php echo 'EVIL RAN';").unwrap();
    std::os::unix::fs::symlink(outside.join("evil.php"), root.join("link.php")).unwrap();
}

/// `md5sum`'s digest of `path` (hex).
pub fn md5_of(path: &Path) -> String {
    let out = Command::new(require("md5sum")).arg(path).output().unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// hello.php, then info.php with a query, through the nginx at `base` in front of a copy of
/// php-examples in `root`: the script path PHP saw is the real one, the query arrived. Returns
/// info.php's page (for checks of the SAPI that ran it).
pub fn hello_and_info(base: &str, root: &Path) -> String {
    let (code, body) = curl(&[], &format!("{base}/hello.php"));
    assert_eq!((code, text(&body)), (200, "Hello from PHP\n".to_string()));
    let (code, body) = curl(&[], &format!("{base}/info.php?x=1"));
    let body = text(&body);
    assert_eq!(code, 200, "{body}");
    let want = format!("SCRIPT_FILENAME={}\n", root.join("info.php").display());
    assert!(body.contains(&want), "{body}");
    assert!(body.contains("QUERY_STRING=x=1\n"), "{body}");
    body
}

/// The checks, through the nginx at `base` (`http://127.0.0.1:PORT`) in front of `server`.
pub fn headers_error_and_post(base: &str, server: &Server) {
    let (code, head) = curl(&["-D", "-"], &format!("{base}/headers.php?code=201"));
    let head = text(&head).to_ascii_lowercase();
    assert_eq!(code, 201, "{head}");
    assert!(head.contains("x-fastpm-example: headers"), "{head}");
    assert!(head.contains("set-cookie: example=cookie-value"), "{head}");
    let (code, head) = curl(
        &["-D", "-"],
        &format!("{base}/headers.php?code=302&location=/there"),
    );
    assert_eq!(code, 302);
    assert!(text(&head)
        .to_ascii_lowercase()
        .contains("location: /there"));

    let (code, body) = curl(&[], &format!("{base}/error.php"));
    assert_eq!(code, 500, "{}", text(&body));
    assert!(
        server.log().contains("undefined_function_for_the_example"),
        "php's error is logged:\n{}",
        server.log()
    );
    let nginx_log = std::fs::read_to_string(server.path("nginx-error.log")).unwrap_or_default();
    assert!(
        nginx_log.contains("FastCGI sent in stderr")
            && nginx_log.contains("undefined_function_for_the_example"),
        "php's STDERR reaches nginx as php-fpm's does: {nginx_log}"
    );

    let (code, body) = curl(&["-d", "a=1&b=two"], &format!("{base}/post.php"));
    let body = text(&body);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("method=POST\nlength=9\n"), "{body}");
    assert!(body.contains("post[a]=1\npost[b]=two\n"), "{body}");
}

/// The test's env.php (`var_export([getenv('FASTPM_TEST'), getenv('HOME'), THIRD,
/// ini_get('memory_limit')])`, THIRD the test's own) through the nginx at `base`: the pool's
/// `env` (FASTPM_TEST = from-config) reaches PHP, fastpm's own environment does not
/// (clear_env: no HOME), `ini` (memory_limit = 77M) is applied, and THIRD is `third` (as
/// var_export writes it).
pub fn env_and_ini(base: &str, third: &str) {
    let (code, body) = curl(&[], &format!("{base}/env.php"));
    let body = text(&body);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("0 => 'from-config'"), "{body}");
    assert!(body.contains("1 => false"), "HOME must not leak: {body}");
    assert!(body.contains(&format!("2 => {third}")), "{body}");
    assert!(body.contains("3 => '77M'"), "{body}");
}

/// What must not run: a file that is not a .php script (403), a missing script (404), a
/// `link.php` symlink out of the document root (404).
pub fn refusals(base: &str) {
    let (code, body) = curl(&[], &format!("{base}/notes.txt"));
    assert_eq!((code, text(&body)), (403, "Access denied.\n".to_string()));
    let (code, body) = curl(&[], &format!("{base}/missing.php"));
    assert_eq!((code, text(&body)), (404, "File not found.\n".to_string()));
    let (code, body) = curl(&[], &format!("{base}/link.php"));
    assert_eq!(code, 404, "a symlink out of document_root does not run");
    assert!(!text(&body).contains("EVIL"));
}
