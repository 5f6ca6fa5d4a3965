//! php-fpm's configuration dialect, read with positions: `[global]` and `[POOL]` sections,
//! `key = value` lines (unquoted, "double" or 'single' quoted), `;` and `#` comments, `include=`
//! with glob patterns (sorted, as glob(3)), and `$pool` expanded to the pool's name in pool
//! values. Every entry keeps the file and line it came from, so the converter can cite it and
//! every error names `file:line`. Pure apart from reading the files `include` names.

use std::path::{Path, PathBuf};

use super::ImportError;

/// Includes deeper than this are taken for a loop (php-fpm itself would recurse until it fails).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Where a line came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One `key = value` line, value unquoted and (in a pool) `$pool` expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub origin: Origin,
}

/// `[global]` (name "global") or one pool. A pool named twice is one section, as in php-fpm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub origin: Origin,
    pub entries: Vec<Entry>,
}

/// Everything read: the global section first, then pools in the order they were first named;
/// `includes` lists what each `include=` matched, `notes` what deserves a warning (an include
/// pattern that matched nothing, which php-fpm only warns about too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    pub global: Vec<Entry>,
    pub pools: Vec<Section>,
    pub files: Vec<PathBuf>,
    pub notes: Vec<String>,
}

impl Document {
    fn pool_mut(&mut self, name: &str, origin: Origin) -> usize {
        if let Some(i) = self.pools.iter().position(|p| p.name == name) {
            return i;
        }
        self.pools.push(Section {
            name: name.to_string(),
            origin,
            entries: Vec::new(),
        });
        self.pools.len() - 1
    }
}

/// Which section the next entry goes to; it carries across includes, as in php-fpm.
#[derive(Clone, Copy)]
enum Current {
    Global,
    Pool(usize),
}

/// Read `files` in order (each may include others) into one document.
pub fn read_files(files: &[PathBuf]) -> Result<Document, ImportError> {
    let mut doc = Document::default();
    let mut current = Current::Global;
    for file in files {
        read_file(file, 0, &mut doc, &mut current)?;
    }
    Ok(doc)
}

/// Parse one text as if it were the file `file` (includes are still read from disk).
pub fn read_str(text: &str, file: &Path) -> Result<Document, ImportError> {
    let mut doc = Document::default();
    let mut current = Current::Global;
    doc.files.push(file.to_path_buf());
    parse_text(text, file, 0, &mut doc, &mut current)?;
    Ok(doc)
}

fn read_file(
    file: &Path,
    depth: usize,
    doc: &mut Document,
    current: &mut Current,
) -> Result<(), ImportError> {
    let text = std::fs::read_to_string(file).map_err(|source| ImportError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    doc.files.push(file.to_path_buf());
    parse_text(&text, file, depth, doc, current)
}

fn parse_text(
    text: &str,
    file: &Path,
    depth: usize,
    doc: &mut Document,
    current: &mut Current,
) -> Result<(), ImportError> {
    for (index, raw_line) in text.lines().enumerate() {
        let origin = Origin {
            file: file.to_path_buf(),
            line: index + 1,
        };
        let syntax = |message: String| ImportError::Syntax {
            origin: origin.clone(),
            message,
        };
        match parse_line(raw_line).map_err(syntax)? {
            Line::Blank => {}
            Line::Section(name) => {
                *current = if name == "global" {
                    Current::Global
                } else {
                    Current::Pool(doc.pool_mut(&name, origin.clone()))
                };
            }
            Line::Entry { key, value } if key == "include" => {
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(syntax(format!(
                        "include nested deeper than {MAX_INCLUDE_DEPTH} files (an include loop?)"
                    )));
                }
                let pattern = resolve_include(&value, file);
                if !value.starts_with('/') {
                    doc.notes.push(format!(
                        "{origin}: include={value} read relative to this file's directory; php-fpm reads it relative to its prefix (-p, or the install prefix)"
                    ));
                }
                let matches = glob(&pattern).map_err(syntax)?;
                if matches.is_empty() {
                    doc.notes.push(format!(
                        "{origin}: include={value} matches no file (php-fpm only warns too)"
                    ));
                }
                for path in matches {
                    read_file(&path, depth + 1, doc, current)?;
                }
            }
            Line::Entry { key, value } => {
                if value.contains("${") {
                    doc.notes.push(format!(
                        "{origin}: {key} = {value}: php-fpm expands ${{NAME}} from its environment when it starts; copied as written"
                    ));
                }
                match *current {
                    Current::Global => doc.global.push(Entry { key, value, origin }),
                    Current::Pool(i) => {
                        let pool = &mut doc.pools[i];
                        let value = value.replace("$pool", &pool.name);
                        pool.entries.push(Entry { key, value, origin });
                    }
                }
            }
        }
    }
    Ok(())
}

/// A relative include is taken relative to the including file's directory. (php-fpm resolves
/// it against its prefix, `-p` or the install prefix; the converter says so in its output.)
fn resolve_include(pattern: &str, including: &Path) -> String {
    if pattern.starts_with('/') {
        return pattern.to_string();
    }
    let dir = including.parent().unwrap_or(Path::new("."));
    dir.join(pattern).to_string_lossy().into_owned()
}

/// One line of the dialect.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    Blank,
    Section(String),
    Entry { key: String, value: String },
}

/// Parse one line; the error says what is wrong (the caller adds file:line).
pub(crate) fn parse_line(line: &str) -> Result<Line, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
        return Ok(Line::Blank);
    }
    if let Some(rest) = trimmed.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err(format!("section header {trimmed:?} has no closing ']'"));
        };
        let after = rest[end + 1..].trim();
        if !after.is_empty() && !after.starts_with(';') && !after.starts_with('#') {
            return Err(format!("unexpected {after:?} after the section header"));
        }
        let name = rest[..end].trim();
        if name.is_empty() {
            return Err("empty section name []".to_string());
        }
        return Ok(Line::Section(name.to_string()));
    }
    let Some(eq) = trimmed.find('=') else {
        return Err(format!(
            "expected `key = value`, a [section] or a comment, got {trimmed:?}"
        ));
    };
    let key = normalize_key(trimmed[..eq].trim())?;
    let value = parse_value(trimmed[eq + 1..].trim())?;
    Ok(Line::Entry { key, value })
}

/// `php_value[ memory_limit ]` → `php_value[memory_limit]`; a key needs a name.
fn normalize_key(key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("a line starts with '=': the key is missing".to_string());
    }
    match key.find('[') {
        None if key.contains(']') => Err(format!("key {key:?} has ']' without '['")),
        None => Ok(key.to_string()),
        Some(open) => {
            let Some(inner) = key[open + 1..].strip_suffix(']') else {
                return Err(format!("key {key:?}: expected NAME[SUBKEY]"));
            };
            let (name, inner) = (key[..open].trim(), inner.trim());
            // `NAME[]` appends to a list (access.suppress_path[]), as in php's INI.
            if name.is_empty() || inner.contains(['[', ']']) {
                return Err(format!("key {key:?}: expected NAME[SUBKEY]"));
            }
            Ok(format!("{name}[{inner}]"))
        }
    }
}

/// The value after `=`: "double quoted" (backslash escapes `\"` and `\\`), 'single quoted'
/// (taken as written), or unquoted up to a `;` comment, trimmed.
fn parse_value(text: &str) -> Result<String, String> {
    let rest_is_comment = |rest: &str| {
        let rest = rest.trim();
        rest.is_empty() || rest.starts_with(';') || rest.starts_with('#')
    };
    if let Some(body) = text.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\'))) => out.push(e),
                    Some((_, other)) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => break,
                },
                '"' => {
                    let rest = &body[i + 1..];
                    if !rest_is_comment(rest) {
                        return Err(format!("unexpected {:?} after a quoted value", rest.trim()));
                    }
                    return Ok(out);
                }
                c => out.push(c),
            }
        }
        return Err(format!("value {text} has no closing '\"'"));
    }
    if let Some(body) = text.strip_prefix('\'') {
        let Some(end) = body.find('\'') else {
            return Err(format!("value {text} has no closing \"'\""));
        };
        if !rest_is_comment(&body[end + 1..]) {
            return Err(format!(
                "unexpected {:?} after a quoted value",
                body[end + 1..].trim()
            ));
        }
        return Ok(body[..end].to_string());
    }
    let end = text.find(';').unwrap_or(text.len());
    Ok(text[..end].trim().to_string())
}

/// The files matching a glob pattern (`*`, `?`, `[...]` per path component), sorted, regular
/// files only (php-fpm skips directories). A pattern without wildcards names one file, which
/// need not exist yet: reading it reports the error.
pub(crate) fn glob(pattern: &str) -> Result<Vec<PathBuf>, String> {
    if !pattern.contains(['*', '?', '[']) {
        return Ok(vec![PathBuf::from(pattern)]);
    }
    let absolute = pattern.starts_with('/');
    let mut candidates = vec![PathBuf::from(if absolute { "/" } else { "." })];
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let mut next = Vec::new();
        for dir in &candidates {
            if !part.contains(['*', '?', '[']) {
                next.push(dir.join(part));
                continue;
            }
            let Ok(listing) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = listing
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| fnmatch(part, name))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        if last {
            next.retain(|p| p.is_file());
        }
        candidates = next;
    }
    if !absolute {
        candidates = candidates
            .into_iter()
            .map(|p| p.strip_prefix(".").map(Path::to_path_buf).unwrap_or(p))
            .collect();
    }
    Ok(candidates)
}

/// Shell-style match of one name: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`; a leading `.` must be
/// matched literally, as glob(3) does.
pub(crate) fn fnmatch(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|skip| match_from(&p[1..], &n[skip..])),
        Some('?') => !n.is_empty() && match_from(&p[1..], &n[1..]),
        Some('[') => {
            let Some(close) = p.iter().skip(2).position(|&c| c == ']').map(|i| i + 2) else {
                return n.first() == Some(&'[') && match_from(&p[1..], &n[1..]);
            };
            let Some(&c) = n.first() else {
                return false;
            };
            let (negate, set) = match p[1] {
                '!' | '^' => (true, &p[2..close]),
                _ => (false, &p[1..close]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && match_from(&p[close + 1..], &n[1..])
        }
        Some(&c) => n.first() == Some(&c) && match_from(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str) -> Line {
        Line::Entry {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn lines() {
        let table: &[(&str, Line)] = &[
            ("", Line::Blank),
            ("   ; a comment", Line::Blank),
            ("# also a comment", Line::Blank),
            ("[global]", Line::Section("global".into())),
            (" [ www ] ; pool", Line::Section("www".into())),
            ("pm = dynamic", entry("pm", "dynamic")),
            ("pm=dynamic ; trailing", entry("pm", "dynamic")),
            (
                "listen = /run/php/$pool.sock",
                entry("listen", "/run/php/$pool.sock"),
            ),
            ("ping.response = \"po;ng\"", entry("ping.response", "po;ng")),
            ("x = \"a \\\"q\\\" b\" ; c", entry("x", "a \"q\" b")),
            ("x = 'it; is'", entry("x", "it; is")),
            ("x =", entry("x", "")),
            (
                "php_admin_value[ memory_limit ] = 32M",
                entry("php_admin_value[memory_limit]", "32M"),
            ),
            ("env[PATH] = $PATH", entry("env[PATH]", "$PATH")),
        ];
        for (text, want) in table {
            assert_eq!(&parse_line(text).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn bad_lines() {
        let table: &[(&str, &str)] = &[
            ("[www", "no closing ']'"),
            ("[]", "empty section"),
            ("[www] pm", "after the section header"),
            ("just words", "expected `key = value`"),
            ("= 3", "key is missing"),
            ("x = \"open", "no closing '\"'"),
            ("x = 'open", "no closing"),
            ("x = \"a\" b", "after a quoted value"),
            ("php_value[x = 1", "NAME[SUBKEY]"),
            ("php_value[a]b = 1", "NAME[SUBKEY]"),
            ("[x] = 1", "after the section header"),
        ];
        for (text, want) in table {
            let err = parse_line(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn fnmatch_table() {
        let table: &[(&str, &str, bool)] = &[
            ("*.conf", "www.conf", true),
            ("*.conf", "www.conf.bak", false),
            ("*.conf", ".hidden.conf", false),
            ("w?w.conf", "www.conf", true),
            ("[a-c]*.conf", "b.conf", true),
            ("[!a-c]*.conf", "b.conf", false),
            ("*", "", true),
        ];
        for (p, n, want) in table {
            assert_eq!(fnmatch(p, n), *want, "{p} vs {n}");
        }
    }

    #[test]
    fn pool_expansion_and_errors_name_the_line() {
        let doc = read_str(
            "[global]\npid = /run/$pool.pid\n[a]\nlisten = /run/$pool.sock\n[b]\nuser = x\n[a]\npm = static\n",
            Path::new("/etc/fpm.conf"),
        )
        .unwrap();
        assert_eq!(doc.global[0].value, "/run/$pool.pid");
        assert_eq!(doc.pools.len(), 2);
        assert_eq!(doc.pools[0].entries[0].value, "/run/a.sock");
        assert_eq!(doc.pools[0].entries[1].key, "pm");
        assert_eq!(doc.pools[0].entries[1].origin.line, 8);
        let doc = read_str("[a]\nlisten = ${LISTEN}\n", Path::new("/etc/e.conf")).unwrap();
        assert!(doc.notes[0].starts_with("/etc/e.conf:2: listen = ${LISTEN}: php-fpm expands"));
        let err = read_str("[a]\n\npm\n", Path::new("/etc/x.conf")).unwrap_err();
        assert!(err.to_string().starts_with("/etc/x.conf:3: "), "{err}");
    }

    #[test]
    fn includes_with_globs_relative_to_the_including_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("pool.d/sub.conf")).unwrap();
        std::fs::write(
            d.join("main.conf"),
            "[global]\nlog_level = debug\ninclude = pool.d/*.conf\n",
        )
        .unwrap();
        std::fs::write(d.join("pool.d/b.conf"), "[b]\npm = static\n").unwrap();
        std::fs::write(
            d.join("pool.d/a.conf"),
            "[a]\npm = ondemand\ninclude=../more/[x]*.conf\n",
        )
        .unwrap();
        std::fs::write(d.join("pool.d/.hidden.conf"), "[h]\n").unwrap();
        std::fs::write(d.join("pool.d/c.conf.dpkg-old"), "[old]\n").unwrap();
        std::fs::create_dir_all(d.join("more")).unwrap();
        // No section: it continues the including file's pool, as in php-fpm.
        std::fs::write(d.join("more/x1.conf"), "pm.max_children = 9\n").unwrap();
        let doc = read_files(&[d.join("main.conf")]).unwrap();
        let names: Vec<&str> = doc.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(doc.pools[0].entries[1].key, "pm.max_children");
        assert!(doc.pools[0].entries[1]
            .origin
            .file
            .ends_with("more/x1.conf"));
        assert_eq!(doc.files.len(), 4);

        std::fs::write(d.join("none.conf"), "include = nothing/*.conf\n").unwrap();
        let doc = read_files(&[d.join("none.conf")]).unwrap();
        assert!(doc.notes[0].contains("none.conf:1: include=nothing/*.conf read relative"));
        assert!(doc.notes[1].contains("none.conf:1: include=nothing/*.conf matches no file"));

        std::fs::write(d.join("loop.conf"), "include = loop.conf\n").unwrap();
        let err = read_files(&[d.join("loop.conf")]).unwrap_err().to_string();
        assert!(err.contains("loop.conf:1: include nested deeper"), "{err}");

        let err = read_files(&[d.join("missing.conf")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.conf"), "{err}");
    }
}
