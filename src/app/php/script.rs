//! Which file a PHP request may run: the document-root rule. fastpm's `document_root` is
//! authoritative; the web server's `SCRIPT_FILENAME` (or `document_root` + `SCRIPT_NAME` when it
//! sends none) must name a regular file whose real path lies inside it, with an allowed
//! extension. Stricter than php-fpm, which trusts `SCRIPT_FILENAME` as sent.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Why a request does not run; each maps to php-fpm's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 404 "File not found.": missing, not a regular file, `..` in the path, or a real path
    /// outside `document_root` (an escape attempt looks the same as a missing file).
    NotFound,
    /// 403 "Access denied.": the extension is not in `limit_extensions`.
    Forbidden,
}

/// The path the web server asked for, before any file-system check.
pub fn requested_path(
    root: &Path,
    script_filename: Option<&[u8]>,
    script_name: Option<&[u8]>,
) -> Option<PathBuf> {
    match script_filename.filter(|f| !f.is_empty()) {
        Some(file) => Some(PathBuf::from(OsStr::from_bytes(file))),
        None => {
            let name = script_name.filter(|n| !n.is_empty())?;
            let relative = name.strip_prefix(b"/").unwrap_or(name);
            Some(root.join(OsStr::from_bytes(relative)))
        }
    }
}

/// Whether `path`'s file name ends with one of `extensions` (`[".php"]`); empty list = any.
pub fn extension_allowed(path: &Path, extensions: &[String]) -> bool {
    if extensions.is_empty() {
        return true;
    }
    let Some(name) = path.file_name() else {
        return false;
    };
    let name = name.as_bytes();
    extensions
        .iter()
        .any(|ext| name.len() > ext.len() && name.ends_with(ext.as_bytes()))
}

/// The real path of the script to run, or why not. `root` must already be canonical.
/// The extension is checked on the requested name (as php-fpm does, so a missing `.txt` is
/// 403 like an existing one) and again on the real path (a `.php` symlink to a `.txt` file
/// does not run it).
pub fn resolve_script(
    root: &Path,
    script_filename: Option<&[u8]>,
    script_name: Option<&[u8]>,
    extensions: &[String],
) -> Result<PathBuf, Refusal> {
    let requested = requested_path(root, script_filename, script_name).ok_or(Refusal::NotFound)?;
    if requested.as_os_str().as_bytes().contains(&0) {
        return Err(Refusal::NotFound);
    }
    if !extension_allowed(&requested, extensions) {
        return Err(Refusal::Forbidden);
    }
    if requested.components().any(|c| c == Component::ParentDir) {
        return Err(Refusal::NotFound);
    }
    let real = std::fs::canonicalize(&requested).map_err(|_| Refusal::NotFound)?;
    if real == root || !real.starts_with(root) {
        return Err(Refusal::NotFound);
    }
    if !extension_allowed(&real, extensions) {
        return Err(Refusal::Forbidden);
    }
    match std::fs::metadata(&real) {
        Ok(m) if m.is_file() => Ok(real),
        _ => Err(Refusal::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolves_only_regular_php_files_inside_the_root() {
        let base = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(base.path()).unwrap();
        let root = base.join("www");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(root.join("hello.php"), "<?php").unwrap();
        std::fs::write(root.join("sub/x.php"), "<?php").unwrap();
        std::fs::write(root.join("notes.txt"), "n").unwrap();
        std::fs::create_dir(root.join("dir.php")).unwrap();
        std::fs::write(base.join("outside/evil.php"), "<?php").unwrap();
        symlink(base.join("outside/evil.php"), root.join("link-out.php")).unwrap();
        symlink(root.join("hello.php"), root.join("link-in.php")).unwrap();
        symlink(root.join("notes.txt"), root.join("notes.php")).unwrap();
        symlink(base.join("outside"), root.join("outdir")).unwrap();
        let exts = vec![".php".to_string()];
        let r = |s: &str| root.join(s).display().to_string();
        let o = |s: &str| base.join(s).display().to_string();
        let ok = |s: &str| Ok(root.join(s));
        use Refusal::*;
        type Row<'a> = (Option<String>, Option<&'a str>, Result<PathBuf, Refusal>);
        let table: Vec<Row> = vec![
            (Some(r("hello.php")), None, ok("hello.php")),
            (Some(r("sub/x.php")), None, ok("sub/x.php")),
            (None, Some("/hello.php"), ok("hello.php")),
            (Some(String::new()), Some("/sub/x.php"), ok("sub/x.php")),
            (Some(r("link-in.php")), None, ok("hello.php")),
            (Some(r("missing.php")), None, Err(NotFound)),
            (Some(r("notes.txt")), None, Err(Forbidden)),
            (Some(r("missing.txt")), None, Err(Forbidden)),
            (Some(r("notes.php")), None, Err(Forbidden)),
            (Some(r("dir.php")), None, Err(NotFound)),
            (Some(o("outside/evil.php")), None, Err(NotFound)),
            (Some(r("../outside/evil.php")), None, Err(NotFound)),
            (Some(r("sub/../hello.php")), None, Err(NotFound)),
            (None, Some("/../outside/evil.php"), Err(NotFound)),
            (Some(r("link-out.php")), None, Err(NotFound)),
            (Some(r("outdir/evil.php")), None, Err(NotFound)),
            (Some(root.display().to_string()), None, Err(Forbidden)),
            (None, None, Err(NotFound)),
            (Some(r(".php")), None, Err(Forbidden)),
        ];
        for (file, name, want) in table {
            let got = resolve_script(
                &root,
                file.as_deref().map(str::as_bytes),
                name.map(str::as_bytes),
                &exts,
            );
            assert_eq!(got, want, "SCRIPT_FILENAME {file:?}, SCRIPT_NAME {name:?}");
        }
        // The exact root with any extension allowed: a directory, not a script.
        assert_eq!(
            resolve_script(&root, Some(root.as_os_str().as_bytes()), None, &[]),
            Err(NotFound)
        );
        assert_eq!(
            resolve_script(&root, Some(b"/www/a\0.php"), None, &exts),
            Err(NotFound)
        );
        // Any extension when the list is empty.
        assert_eq!(
            resolve_script(&root, Some(r("notes.txt").as_bytes()), None, &[]),
            ok("notes.txt")
        );
    }

    #[test]
    fn extension_table() {
        let php = vec![".php".to_string(), ".phtml".to_string()];
        let table = [
            ("a.php", true),
            ("a.phtml", true),
            ("a.php.txt", false),
            ("a.txt.php", true),
            (".php", false),
            ("a.PHP", false),
            ("php", false),
        ];
        for (name, want) in table {
            assert_eq!(extension_allowed(Path::new(name), &php), want, "{name}");
        }
        assert!(extension_allowed(Path::new("x"), &[]));
    }
}
