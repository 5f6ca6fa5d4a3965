//! A per-worker cache of resolved scripts, as PHP's own realpath cache: resolving a script costs
//! one `readlink` per path component plus a `stat` (about six syscalls, a third of a hello
//! request's), so a path that resolved inside `document_root` is trusted for [`SCRIPT_CACHE_TTL`].
//! Only successes are kept: a new file is found at once, a refused path is checked every time.
//! A symlink changed inside the document root is seen within the TTL; the window adds nothing
//! to the one that always exists between the check and php-cgi opening the file by name.

use super::{sent_filename, Resolved};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a resolved script is trusted.
pub const SCRIPT_CACHE_TTL: Duration = Duration::from_secs(2);

/// Entries kept at most; the cache is emptied when full (scripts are few, requests many).
pub const SCRIPT_CACHE_MAX: usize = 1024;

/// Requested path (SCRIPT_FILENAME, or NUL + SCRIPT_NAME) → resolved script, with the time it
/// was resolved.
#[derive(Default)]
pub struct ScriptCache {
    entries: HashMap<Vec<u8>, (Resolved, Instant)>,
}

impl ScriptCache {
    /// The cache key for a request: SCRIPT_FILENAME when it names a file (see
    /// `sent_filename`), else NUL + SCRIPT_NAME (a NUL never appears in a usable path, so the
    /// two cannot collide).
    pub fn key<'a>(
        root: &Path,
        script_filename: Option<&'a [u8]>,
        script_name: Option<&'a [u8]>,
    ) -> (&'a [u8], bool) {
        match sent_filename(root, script_filename, script_name) {
            Some(file) => (file, false),
            None => (script_name.unwrap_or(b""), true),
        }
    }

    /// The script cached for this key, if still fresh at `now`.
    pub fn get(&self, key: &[u8], by_name: bool, now: Instant) -> Option<&Resolved> {
        let hit = if by_name {
            let mut k = Vec::with_capacity(key.len() + 1);
            k.push(0);
            k.extend_from_slice(key);
            self.entries.get(&k)
        } else {
            self.entries.get(key)
        };
        hit.filter(|(_, at)| now.saturating_duration_since(*at) < SCRIPT_CACHE_TTL)
            .map(|(path, _)| path)
    }

    pub fn insert(&mut self, key: &[u8], by_name: bool, real: Resolved, now: Instant) {
        if self.entries.len() >= SCRIPT_CACHE_MAX {
            self.entries.clear();
        }
        let mut k = Vec::with_capacity(key.len() + 1);
        if by_name {
            k.push(0);
        }
        k.extend_from_slice(key);
        self.entries.insert(k, (real, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn script(p: &str) -> Resolved {
        Resolved {
            path: PathBuf::from(p),
            path_info: None,
        }
    }

    #[test]
    fn entries_expire_and_names_do_not_collide_with_files() {
        let mut cache = ScriptCache::default();
        let t0 = Instant::now();
        cache.insert(b"/www/a.php", false, script("/real/a.php"), t0);
        assert_eq!(
            cache.get(b"/www/a.php", false, t0),
            Some(&script("/real/a.php"))
        );
        assert_eq!(cache.get(b"/www/a.php", true, t0), None);
        assert_eq!(cache.get(b"/www/a.php", false, t0 + SCRIPT_CACHE_TTL), None);
        cache.insert(b"/a.php", true, script("/real/a.php"), t0);
        assert!(cache.get(b"/a.php", true, t0).is_some());
        assert!(cache.get(b"/a.php", false, t0).is_none());
        for i in 0..SCRIPT_CACHE_MAX + 1 {
            cache.insert(format!("/x{i}").as_bytes(), false, script("/r"), t0);
        }
        assert!(cache.entries.len() <= SCRIPT_CACHE_MAX);
    }

    #[test]
    fn key_prefers_script_filename() {
        assert_eq!(
            ScriptCache::key(Path::new("/srv"), Some(b"/f"), Some(b"/n")),
            (&b"/f"[..], false)
        );
        assert_eq!(
            ScriptCache::key(Path::new("/srv"), Some(b""), Some(b"/n")),
            (&b"/n"[..], true)
        );
        assert_eq!(
            ScriptCache::key(Path::new("/srv"), None, None),
            (&b""[..], true)
        );
        assert_eq!(
            ScriptCache::key(Path::new("/srv"), Some(b"/n"), Some(b"/n")),
            (&b"/n"[..], true)
        );
    }
}
