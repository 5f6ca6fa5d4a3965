//! Which file a PHP request may run: the document-root rule. fastpm's `document_root` is
//! authoritative; the web server's `SCRIPT_FILENAME` (or `document_root` + `SCRIPT_NAME` when it
//! sends none, or one equal to `SCRIPT_NAME`) must name a regular file whose real path lies
//! inside it, with an allowed extension. Stricter than php-fpm, which trusts `SCRIPT_FILENAME`
//! as sent.
//!
//! Apache's mod_proxy_fcgi sends `SCRIPT_FILENAME` as a proxy URL
//! (`proxy:fcgi://localhost/srv/www/hello.php`, `proxy:balancer://NAME/…` from older httpd), and
//! through `ProxyPass` with the path info still on it (`…/hello.php/extra/path`, no
//! `PATH_INFO`). php-fpm strips the prefix and splits the path info off; so does [`resolve`],
//! before the same document-root and extension rules.

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

/// The `SCRIPT_FILENAME` that names a file, if any: not one that is absent, empty, or equal to
/// `SCRIPT_NAME`. A web server computes SCRIPT_FILENAME as its document root + SCRIPT_NAME;
/// one equal to SCRIPT_NAME carries no document root (what `fastpm request ADDR /x.php` and
/// `cgi-fcgi` users send, the convention php-fpm needs), so `document_root` + SCRIPT_NAME is
/// meant — unless the value is itself a path inside `root` (a client that sends the full path
/// as both), which names its file as it stands.
pub fn sent_filename<'a>(
    root: &Path,
    script_filename: Option<&'a [u8]>,
    script_name: Option<&[u8]>,
) -> Option<&'a [u8]> {
    script_filename.filter(|f| {
        !f.is_empty()
            && (Some(*f) != script_name || Path::new(OsStr::from_bytes(f)).starts_with(root))
    })
}

/// The path the web server asked for, before any file-system check.
pub fn requested_path(
    root: &Path,
    script_filename: Option<&[u8]>,
    script_name: Option<&[u8]>,
) -> Option<PathBuf> {
    match sent_filename(root, script_filename, script_name) {
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
/// The extension is checked on the requested name (so a missing `.txt` is 403 like an existing
/// one, which php-fpm answers 404) and again on the real path (a `.php` symlink to a `.txt`
/// file does not run it; php-fpm runs it).
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

/// A script that may run, and the path info split off an Apache proxy `SCRIPT_FILENAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The real path (canonical, inside `document_root`).
    pub path: PathBuf,
    /// What followed the script in an Apache `proxy:` `SCRIPT_FILENAME` (`/extra/path`); `None`
    /// when nothing did (always, for other web servers).
    pub path_info: Option<Vec<u8>>,
}

/// What an Apache `proxy:` `SCRIPT_FILENAME` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApacheProxyPath<'a> {
    /// Not one of Apache's proxy forms: use it as it is.
    NotProxy,
    /// The file-system path after `proxy:fcgi://HOST[:PORT]` or `proxy:balancer://NAME`.
    Path(&'a [u8]),
    /// A proxy form that names no usable path: no `/` after the host, or a `?` that php-fpm
    /// would cut but that came from the URL's path (see [`apache_proxy_path`]).
    Unusable,
}

/// `proxy:fcgi://` and `proxy:balancer://`, compared without regard to case as php-fpm does.
const APACHE_PROXY_PREFIXES: [&[u8]; 2] = [b"proxy:fcgi://", b"proxy:balancer://"];

/// The path inside an Apache proxy `SCRIPT_FILENAME`, as php-fpm reads it: after the prefix,
/// skip the host (everything up to the first `/`), and drop a query string that mod_rewrite
/// appended (`RewriteRule … [P]` proxies `…/x.php?a=1`).
///
/// One deliberate difference: php-fpm cuts at the first `?` whatever its origin, so a request
/// for `/admin.php%3Fx.php` (Apache decodes `%3F` into the file name, `<FilesMatch \.php$>`
/// matches the whole name and access rules for `admin.php` do not) runs `admin.php`. Here a
/// `?` is cut only when the request's own path (`REQUEST_URI` up to its query) has no encoded
/// `?` in it; otherwise the form is [`ApacheProxyPath::Unusable`] (404).
pub fn apache_proxy_path<'a>(
    script_filename: &'a [u8],
    request_uri: Option<&[u8]>,
) -> ApacheProxyPath<'a> {
    let Some(prefix) = APACHE_PROXY_PREFIXES.iter().find(|prefix| {
        script_filename.len() >= prefix.len()
            && script_filename[..prefix.len()].eq_ignore_ascii_case(prefix)
    }) else {
        return ApacheProxyPath::NotProxy;
    };
    let after_prefix = &script_filename[prefix.len()..];
    let Some(slash) = after_prefix.iter().position(|&b| b == b'/') else {
        return ApacheProxyPath::Unusable;
    };
    let path = &after_prefix[slash..];
    match path.iter().position(|&b| b == b'?') {
        None => ApacheProxyPath::Path(path),
        Some(question) if query_came_from_rewrite(request_uri) => {
            ApacheProxyPath::Path(&path[..question])
        }
        Some(_) => ApacheProxyPath::Unusable,
    }
}

/// Whether a `?` in Apache's proxy file name can only be a query string mod_rewrite appended:
/// the URL's path (before its own `?`) holds no `%3F`, the only way a client puts a `?` into
/// the file name itself.
fn query_came_from_rewrite(request_uri: Option<&[u8]>) -> bool {
    let Some(uri) = request_uri else {
        return false;
    };
    let path = uri.split(|&b| b == b'?').next().unwrap_or(b"");
    !path.windows(3).any(|w| w.eq_ignore_ascii_case(b"%3f"))
}

/// The script a request runs, from its `SCRIPT_FILENAME`, `SCRIPT_NAME` and `REQUEST_URI`, as
/// php-fpm (`cgi.fix_pathinfo`) finds it, then checked by [`resolve_script`]'s rules:
///
/// - An Apache proxy form is stripped first (see [`apache_proxy_path`]).
/// - When the path is not itself a file, its longest leading part that is a regular file inside
///   `root` is the script (`/srv/www/hello.php/extra/path` → `hello.php`): lighttpd's
///   `broken-scriptfilename` and httpd's `ProxyPass` send the path info on the end of
///   SCRIPT_FILENAME (lighttpd a bare `/` when there is none).
/// - For Apache the part after the script is returned as the path info (httpd cannot send
///   PATH_INFO for `ProxyPass`); other servers send PATH_INFO themselves.
/// - An Apache path with no such part is 404, as php-fpm answers; other servers' keep
///   [`resolve_script`]'s answer for the whole path (a `.txt` is 403, found or not).
pub fn resolve(
    root: &Path,
    script_filename: Option<&[u8]>,
    script_name: Option<&[u8]>,
    request_uri: Option<&[u8]>,
    extensions: &[String],
) -> Result<Resolved, Refusal> {
    let (path, from_apache) = match sent_filename(root, script_filename, script_name) {
        None => {
            let path = resolve_script(root, None, script_name, extensions)?;
            return Ok(Resolved {
                path,
                path_info: None,
            });
        }
        Some(file) => match apache_proxy_path(file, request_uri) {
            ApacheProxyPath::NotProxy => (file, false),
            ApacheProxyPath::Path(path) => (path, true),
            ApacheProxyPath::Unusable => return Err(Refusal::NotFound),
        },
    };
    let (script, path_info) = match split_path_info(root, path) {
        Some(split) => split,
        None if from_apache && !exists_inside(root, path) => return Err(Refusal::NotFound),
        None => (path, &b""[..]),
    };
    let path = resolve_script(root, Some(script), None, extensions)?;
    Ok(Resolved {
        path,
        path_info: (from_apache && !path_info.is_empty()).then(|| path_info.to_vec()),
    })
}

/// Whether `path` names something (of any type) that lies inside `root` by name.
fn exists_inside(root: &Path, path: &[u8]) -> bool {
    let path = Path::new(OsStr::from_bytes(path));
    path.starts_with(root) && !path.as_os_str().as_bytes().contains(&0) && path.exists()
}

/// `path` split at the end of its longest leading part (itself included) that is a regular
/// file whose real path lies inside `root`: (script, path info). `None` when no part is one.
/// Parts outside `root` are never looked at, so the answer tells nothing about files elsewhere.
fn split_path_info<'a>(root: &Path, path: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
    let is_script = |candidate: &[u8]| {
        let candidate = Path::new(OsStr::from_bytes(candidate));
        if !candidate.starts_with(root) || candidate.components().any(|c| c == Component::ParentDir)
        {
            return false;
        }
        std::fs::canonicalize(candidate)
            .is_ok_and(|real| real != root && real.starts_with(root) && real.is_file())
    };
    if path.contains(&0) {
        return None;
    }
    if is_script(path) {
        return Some((path, b""));
    }
    let mut end = path.len();
    while let Some(slash) = path[..end].iter().rposition(|&b| b == b'/') {
        if slash > 0 && is_script(&path[..slash]) {
            return Some(path.split_at(slash));
        }
        end = slash;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// `<base>/www` (the document root: scripts, a text file, a directory named .php, links
    /// in and out) beside `<base>/outside/evil.php`. Returns (guard, base, root).
    fn site() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
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
        (dir, base, root)
    }

    #[test]
    fn resolves_only_regular_php_files_inside_the_root() {
        let (_dir, base, root) = site();
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
            // SCRIPT_FILENAME equal to SCRIPT_NAME carries no document root: document_root's.
            (
                Some("/hello.php".into()),
                Some("/hello.php"),
                ok("hello.php"),
            ),
            (
                Some("/sub/x.php".into()),
                Some("/sub/x.php"),
                ok("sub/x.php"),
            ),
            (Some("/hello.php".into()), Some("/other.php"), Err(NotFound)),
            (Some("/hello".into()), Some("/hello"), Err(Forbidden)),
            (
                Some("/../outside/evil.php".into()),
                Some("/../outside/evil.php"),
                Err(NotFound),
            ),
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
    fn apache_proxy_forms_table() {
        use ApacheProxyPath::*;
        let plain = Some(&b"/hello.php"[..]);
        let table: [(&str, Option<&[u8]>, ApacheProxyPath); 17] = [
            ("/srv/www/hello.php", plain, NotProxy),
            ("", plain, NotProxy),
            (
                "proxy:fcgi://localhost/srv/www/hello.php",
                plain,
                Path(b"/srv/www/hello.php"),
            ),
            (
                "proxy:fcgi://127.0.0.1:9000/srv/www/hello.php",
                plain,
                Path(b"/srv/www/hello.php"),
            ),
            (
                "PROXY:FCGI://localhost/srv/a.php",
                plain,
                Path(b"/srv/a.php"),
            ),
            (
                "proxy:balancer://php/srv/www/hello.php",
                plain,
                Path(b"/srv/www/hello.php"),
            ),
            (
                "proxy:Balancer://php-cluster/srv/a.php/x/y",
                plain,
                Path(b"/srv/a.php/x/y"),
            ),
            (
                "proxy:fcgi://localhost/srv/a.php/extra/path",
                plain,
                Path(b"/srv/a.php/extra/path"),
            ),
            ("proxy:fcgi://localhost/", plain, Path(b"/")),
            ("proxy:fcgi://localhost", plain, Unusable),
            ("proxy:balancer://", plain, Unusable),
            ("proxy:http://localhost/srv/a.php", plain, NotProxy),
            ("proxy:fcgi:/localhost/srv/a.php", plain, NotProxy),
            // A query string mod_rewrite appended to the proxied URL: cut, as php-fpm does.
            (
                "proxy:fcgi://h/srv/a.php?x=1",
                Some(b"/a.php?x=1"),
                Path(b"/srv/a.php"),
            ),
            (
                "proxy:fcgi://h/srv/a.php?x=1",
                Some(b"/rewritten"),
                Path(b"/srv/a.php"),
            ),
            // A `?` the client encoded into the path (`/admin.php%3Fx.php`): not cut.
            (
                "proxy:fcgi://h/srv/admin.php?x.php",
                Some(b"/admin.php%3fx.php"),
                Unusable,
            ),
            ("proxy:fcgi://h/srv/admin.php?x.php", None, Unusable),
        ];
        for (filename, uri, want) in table {
            assert_eq!(
                apache_proxy_path(filename.as_bytes(), uri),
                want,
                "{filename:?} (REQUEST_URI {uri:?})"
            );
        }
        // An encoded `?` only in the query part does not count.
        assert_eq!(
            apache_proxy_path(b"proxy:fcgi://h/srv/a.php?q=%3F", Some(b"/a.php?q=%3F")),
            Path(b"/srv/a.php")
        );
    }

    #[test]
    fn resolve_strips_apache_proxy_forms_and_splits_path_info() {
        let (_dir, base, root) = site();
        let exts = vec![".php".to_string()];
        let r = root.display().to_string();
        let o = base.join("outside").display().to_string();
        let ok = |s: &str, info: Option<&str>| {
            Ok(Resolved {
                path: root.join(s),
                path_info: info.map(|i| i.as_bytes().to_vec()),
            })
        };
        use Refusal::*;
        let table: Vec<(String, Result<Resolved, Refusal>)> = vec![
            (
                format!("proxy:fcgi://localhost{r}/hello.php"),
                ok("hello.php", None),
            ),
            (
                format!("proxy:balancer://php{r}/sub/x.php"),
                ok("sub/x.php", None),
            ),
            (
                format!("proxy:fcgi://localhost{r}/hello.php/extra/path"),
                ok("hello.php", Some("/extra/path")),
            ),
            (
                format!("proxy:balancer://php{r}/sub/x.php/a/"),
                ok("sub/x.php", Some("/a/")),
            ),
            (
                format!("proxy:fcgi://localhost{r}/hello.php?a=1"),
                ok("hello.php", None),
            ),
            (
                format!("proxy:fcgi://localhost{r}/missing.php"),
                Err(NotFound),
            ),
            // No file along the path: 404, as php-fpm answers.
            (
                format!("proxy:fcgi://localhost{r}/missing.php/x"),
                Err(NotFound),
            ),
            (
                format!("proxy:fcgi://localhost{r}/missing.txt"),
                Err(NotFound),
            ),
            (
                "proxy:fcgi://localhost/etc/passwd".to_string(),
                Err(NotFound),
            ),
            (
                format!("proxy:fcgi://localhost{r}/notes.txt"),
                Err(Forbidden),
            ),
            // The split finds notes.txt; limit_extensions still refuses it.
            (
                format!("proxy:fcgi://localhost{r}/notes.txt/x.php"),
                Err(Forbidden),
            ),
            (format!("proxy:fcgi://localhost{o}/evil.php"), Err(NotFound)),
            (
                format!("proxy:fcgi://localhost{o}/evil.php/x.php"),
                Err(NotFound),
            ),
            (
                format!("proxy:fcgi://localhost{r}/outdir/evil.php"),
                Err(NotFound),
            ),
            (
                format!("proxy:fcgi://localhost{r}/outdir/evil.php/x.php"),
                Err(NotFound),
            ),
            (
                format!("proxy:fcgi://localhost{r}/../outside/evil.php"),
                Err(NotFound),
            ),
            (
                format!("proxy:fcgi://localhost{r}/sub/../hello.php/x.php"),
                Err(NotFound),
            ),
            (format!("proxy:fcgi://localhost{r}"), Err(Forbidden)),
            ("proxy:fcgi://localhost".to_string(), Err(NotFound)),
            (format!("{r}/hello.php"), ok("hello.php", None)),
            // Other web servers: split too (lighttpd's broken-scriptfilename), but the path
            // info is theirs to send.
            (format!("{r}/hello.php/extra"), ok("hello.php", None)),
            (format!("{r}/hello.php/"), ok("hello.php", None)),
            (format!("{r}/notes.txt/x.php"), Err(Forbidden)),
            (format!("{r}/missing.php/x"), Err(Forbidden)),
            (format!("{r}/missing.txt"), Err(Forbidden)),
            (format!("{o}/evil.php/x"), Err(Forbidden)),
            (format!("{r}/outdir/evil.php/x.php"), Err(NotFound)),
        ];
        for (filename, want) in table {
            let got = resolve(
                &root,
                Some(filename.as_bytes()),
                Some(b"/hello.php"),
                Some(b"/hello.php"),
                &exts,
            );
            assert_eq!(got, want, "SCRIPT_FILENAME {filename:?}");
        }
        assert_eq!(
            resolve(&root, None, Some(b"/hello.php"), None, &exts),
            ok("hello.php", None)
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
