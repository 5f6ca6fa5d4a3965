//! A real Apache httpd (`/usr/sbin/apache2`) in front of fastpm or php-fpm for one test: a
//! self-contained config (its own ServerRoot, pid, logs, runtime dir and mutexes inside the
//! test's directory, `Listen 127.0.0.1:PORT`, only the modules a PHP site needs, loaded from
//! Debian's module directory) started with `-DFOREGROUND`, stopped with TERM when dropped.
//!
//! httpd refuses `User root`, so its workers run as `www-data`: the FastCGI socket, the document
//! root and every directory above them must be reachable by that user (see [`open_to_www_data`]).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use super::daemon::Daemon;
use super::{free_port, require};

/// Debian's place for httpd's modules.
const MODULES: &str = "/usr/lib/apache2/modules";

/// Loaded by every test config: the event MPM, access control, MIME types, directory indexes,
/// `SetEnvIf` (Debian's php-fpm snippet uses it for `Authorization`), and mod_proxy_fcgi with
/// the balancer pieces (mod_proxy_balancer needs slotmem_shm and an lbmethod).
const MODULE_LIST: [(&str, &str); 10] = [
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("mime_module", "mod_mime.so"),
    ("dir_module", "mod_dir.so"),
    ("setenvif_module", "mod_setenvif.so"),
    ("proxy_module", "mod_proxy.so"),
    ("proxy_fcgi_module", "mod_proxy_fcgi.so"),
    ("proxy_balancer_module", "mod_proxy_balancer.so"),
    ("lbmethod_byrequests_module", "mod_lbmethod_byrequests.so"),
    ("slotmem_shm_module", "mod_slotmem_shm.so"),
];

/// A running httpd for one test; stopped when dropped.
pub struct Apache {
    /// The loopback TCP port httpd listens on.
    pub port: u16,
    /// Stopped with TERM (the parent stops its children).
    _process: Daemon,
}

impl Apache {
    /// Writes `<dir>/<name>.conf` (name: several servers may share `dir`) and starts httpd on
    /// it, serving `document_root`, with `site` (the PHP handler lines) appended. Returns once
    /// the port accepts; panics with httpd's error log if it exits first.
    pub fn start(dir: &Path, name: &str, document_root: &Path, site: &str) -> Apache {
        let apache2 = require("apache2");
        let port = free_port();
        let run = dir.join(format!("{name}-run"));
        std::fs::create_dir_all(&run).unwrap();
        let modules: String = MODULE_LIST
            .iter()
            .map(|(id, file)| format!("LoadModule {id} {MODULES}/{file}\n"))
            .collect();
        let error_log = dir.join(format!("{name}-error.log"));
        let conf = format!(
            r#"ServerRoot {run}
ServerName localhost
Listen 127.0.0.1:{port}
PidFile {run}/httpd.pid
DefaultRuntimeDir {run}
Mutex file:{run} default
ErrorLog {error_log}
LogLevel warn
User www-data
Group www-data
{modules}
TypesConfig /etc/mime.types
DirectoryIndex index.php index.html
LimitRequestBody 0
DocumentRoot {root}
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory {root}>
    Require all granted
</Directory>
{site}
"#,
            run = run.display(),
            error_log = error_log.display(),
            root = document_root.display(),
        );
        let conf_path = dir.join(format!("{name}.conf"));
        std::fs::write(&conf_path, conf).unwrap();
        let stderr_log = dir.join(format!("{name}-stderr.log"));
        let mut process = Daemon::spawn(
            "apache2",
            Command::new(apache2)
                .arg("-f")
                .arg(&conf_path)
                .arg("-DFOREGROUND")
                // Only apache2ctl reads /etc/apache2/envvars; a stray APACHE_CONFDIR in the
                // environment must not pull Debian's own config in.
                .env_remove("APACHE_CONFDIR")
                .stdout(Stdio::null())
                .stderr(Stdio::from(std::fs::File::create(&stderr_log).unwrap())),
            Signal::SIGTERM,
        );
        process.wait_for_port(port, &[&error_log, &stderr_log]);
        Apache {
            port,
            _process: process,
        }
    }
}

/// Lets httpd's `www-data` workers through `dir` and each directory above it: adds search
/// permission (o+x) only (a test's temporary directories are 0700; listing and reading stay
/// closed). For the socket's directory and the document root.
pub fn open_to_www_data(dir: &Path) {
    for p in dir.ancestors() {
        let mode = std::fs::metadata(p).unwrap().permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o001)).unwrap();
        }
    }
}
