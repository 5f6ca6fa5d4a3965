//! A real lighttpd (`/usr/sbin/lighttpd`) in front of fastpm or php-fpm for one test: a
//! self-contained config (port, document root, error log and upload directory inside the
//! test's directory) started in the foreground with `-D`, stopped with TERM when dropped.

use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use super::daemon::Daemon;
use super::{free_port, require};

/// A running lighttpd for one test; stopped when dropped.
pub struct Lighttpd {
    /// The loopback TCP port lighttpd listens on.
    pub port: u16,
    _process: Daemon,
}

impl Lighttpd {
    /// Writes `<dir>/<name>.conf` and starts lighttpd on it, serving `document_root`, with
    /// `site` (the `fastcgi.server` lines) appended. Returns once the port accepts; panics
    /// with lighttpd's error log if it exits first.
    pub fn start(dir: &Path, name: &str, document_root: &Path, site: &str) -> Lighttpd {
        let lighttpd = require("lighttpd");
        let port = free_port();
        let uploads = dir.join(format!("{name}-uploads"));
        std::fs::create_dir_all(&uploads).unwrap();
        let error_log = dir.join(format!("{name}-error.log"));
        let conf = format!(
            r#"server.modules = ( "mod_access", "mod_fastcgi" )
server.bind = "127.0.0.1"
server.port = {port}
server.document-root = "{root}"
server.errorlog = "{error_log}"
server.upload-dirs = ( "{uploads}" )
server.max-request-size = 65536
index-file.names = ( "index.php", "index.html" )
mimetype.assign = ( ".html" => "text/html", ".txt" => "text/plain" )
{site}
"#,
            root = document_root.display(),
            error_log = error_log.display(),
            uploads = uploads.display(),
        );
        let conf_path = dir.join(format!("{name}.conf"));
        std::fs::write(&conf_path, conf).unwrap();
        let stderr_log = dir.join(format!("{name}-stderr.log"));
        let mut process = Daemon::spawn(
            "lighttpd",
            Command::new(lighttpd)
                .arg("-D")
                .arg("-f")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(std::fs::File::create(&stderr_log).unwrap())),
            Signal::SIGTERM,
        );
        process.wait_for_port(port, &[&error_log, &stderr_log]);
        Lighttpd {
            port,
            _process: process,
        }
    }
}
