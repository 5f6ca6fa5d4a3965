//! Finding the php-cgi binary, so the master can choose between the `php` app and the built-in
//! `hello` fallback (the choice itself is the master's).

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where `name` resolves on `PATH` (or `name` itself when it contains a `/`), if it is an
/// executable file.
pub fn php_cgi_on_path(name: &str) -> Option<PathBuf> {
    find_executable(name, std::env::var_os("PATH").as_deref())
}

/// `php_cgi_on_path` with the search path given (testable without touching the environment).
pub fn find_executable(name: &str, search_path: Option<&OsStr>) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        let path = PathBuf::from(name);
        return is_executable(&path).then_some(path);
    }
    std::env::split_paths(search_path?)
        // An empty PATH entry means the current directory (POSIX); keep that meaning.
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            }
        })
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
