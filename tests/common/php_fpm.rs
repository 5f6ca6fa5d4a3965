//! The real php-fpm 8.2 (`/usr/sbin/php-fpm8.2`) as the reference a test compares fastpm with:
//! a generated config (pid, log and socket inside the test's directory, one static pool)
//! started in the foreground with `-F -R` (as root, as the benches run it), stopped with QUIT.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use super::daemon::Daemon;

/// Debian's php8.2-fpm binary.
pub const PHP_FPM: &str = "/usr/sbin/php-fpm8.2";

/// A running php-fpm master for one test; stopped when dropped.
pub struct PhpFpm {
    /// Its listening unix socket.
    pub socket: PathBuf,
    _process: Daemon,
}

impl PhpFpm {
    /// Starts php-fpm with pool `www` on `<dir>/php-fpm.sock` (owned by `socket_owner`, mode
    /// 0660, as Debian's pool has it for `www-data`), `children` static workers, and `ini`
    /// lines as `php_admin_value[...]`. Returns once the socket accepts.
    pub fn start(dir: &Path, socket_owner: &str, children: u32, ini: &[(&str, &str)]) -> PhpFpm {
        assert!(
            Path::new(PHP_FPM).exists(),
            "this test needs {PHP_FPM}; install the test dependencies with scripts/deps.sh test"
        );
        let socket = dir.join("php-fpm.sock");
        let ini: String = ini
            .iter()
            .map(|(k, v)| format!("php_admin_value[{k}] = {v}\n"))
            .collect();
        let conf = format!(
            "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\ndaemonize = no\n\
             [www]\nlisten = {sock}\nlisten.owner = {socket_owner}\nlisten.group = {socket_owner}\n\
             listen.mode = 0660\npm = static\npm.max_children = {children}\n{ini}",
            d = dir.display(),
            sock = socket.display(),
        );
        let conf_path = dir.join("php-fpm.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut process = Daemon::spawn(
            "php-fpm",
            Command::new(PHP_FPM)
                .args(["-F", "-R", "-y"])
                .arg(&conf_path)
                // It would otherwise report to a systemd that is not supervising it.
                .env_remove("NOTIFY_SOCKET")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            Signal::SIGQUIT,
        );
        process.wait_ready(
            || std::os::unix::net::UnixStream::connect(&socket).is_ok(),
            &[&dir.join("php-fpm.log")],
        );
        PhpFpm {
            socket,
            _process: process,
        }
    }
}
