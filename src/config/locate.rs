//! Finding the dotted key for a byte offset (serde errors carry only a span) and the span of a
//! dotted key (rules about tables, such as a bad pool name). Uses toml_edit's parsed document,
//! which keeps the span of every key and value; for text that does not parse, a line-based guess.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

/// One step of a key path: a table key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Is `key` writable without quotes in TOML (`A-Za-z0-9_-`)?
pub fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `key` as one segment of a dotted path: bare when possible, else a quoted TOML string.
pub fn key_segment(key: &str) -> String {
    if is_bare_key(key) {
        key.to_string()
    } else {
        toml_edit::Value::from(key).to_string().trim().to_string()
    }
}

fn format_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&key_segment(key));
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

/// The dotted path of the deepest key or value covering `offset`, if any.
pub(crate) fn path_at(doc: &ImDocument<&str>, offset: usize) -> Option<String> {
    search_table(doc.as_table(), offset).map(|segments| format_path(&segments))
}

fn search_table(table: &Table, offset: usize) -> Option<Vec<Segment>> {
    for (name, item) in table.iter() {
        let key_span = table.key(name).and_then(|k| k.span());
        if contains(key_span, offset) {
            return Some(vec![Segment::Key(name.to_string())]);
        }
        if let Some(mut inner) = search_item(item, offset) {
            inner.insert(0, Segment::Key(name.to_string()));
            return Some(inner);
        }
    }
    None
}

/// Path below `item` covering `offset`: empty when `item` itself covers it.
fn search_item(item: &Item, offset: usize) -> Option<Vec<Segment>> {
    let inner = match item {
        Item::Table(table) => search_table(table, offset),
        Item::Value(value) => search_value(value, offset),
        Item::ArrayOfTables(array) => array.iter().enumerate().find_map(|(i, table)| {
            search_table(table, offset)
                .or_else(|| contains(table.span(), offset).then(Vec::new))
                .map(|mut p| {
                    p.insert(0, Segment::Index(i));
                    p
                })
        }),
        Item::None => None,
    };
    inner.or_else(|| contains(item.span(), offset).then(Vec::new))
}

fn search_value(value: &Value, offset: usize) -> Option<Vec<Segment>> {
    match value {
        Value::InlineTable(table) => table.iter().find_map(|(name, v)| {
            let key_span = table.key(name).and_then(|k| k.span());
            if contains(key_span, offset) {
                return Some(vec![Segment::Key(name.to_string())]);
            }
            search_value(v, offset)
                .or_else(|| contains(v.span(), offset).then(Vec::new))
                .map(|mut p| {
                    p.insert(0, Segment::Key(name.to_string()));
                    p
                })
        }),
        Value::Array(array) => array.iter().enumerate().find_map(|(i, v)| {
            search_value(v, offset)
                .or_else(|| contains(v.span(), offset).then(Vec::new))
                .map(|mut p| {
                    p.insert(0, Segment::Index(i));
                    p
                })
        }),
        _ => None,
    }
}

/// Span of the last key of `path` as written in the document (e.g. `www` in `[pool.www]`).
pub(crate) fn key_span(doc: &ImDocument<&str>, path: &[&str]) -> Option<Range<usize>> {
    let (last, parents) = path.split_last()?;
    let mut table = doc.as_table() as &dyn toml_edit::TableLike;
    for name in parents {
        table = table.get(name)?.as_table_like()?;
    }
    table.key(last).and_then(|k| k.span())
}

/// Best guess at the key for a syntax error at `offset`, from the text alone: the last
/// `[table]` header before it plus the key on the error's line. `(top level)` when none.
pub(crate) fn path_near_syntax_error(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    if line.starts_with('[') {
        return header_path(line);
    }
    let header = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(header_path)
        .unwrap_or_default();
    let key = match line.split_once('=') {
        Some((key, _)) => key,
        None => open_array_key(&text[..line_start], &text[line_start..offset])
            .unwrap_or_else(|| line.split_whitespace().next().unwrap_or("")),
    };
    let key: Vec<&str> = key
        .split('.')
        .map(|part| part.trim().trim_matches(|c| c == '"' || c == '\''))
        .filter(|part| !part.is_empty())
        .collect();
    let joined = [header, key.join(".")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(".");
    if joined.is_empty() {
        "(top level)".to_string()
    } else {
        joined
    }
}

/// For an error on a line without `=` inside a multi-line array: the key of the assignment
/// whose `[` is still open at the error (`before` is the text up to the error's line).
fn open_array_key<'t>(before: &'t str, error_line_head: &str) -> Option<&'t str> {
    let mut depth = bracket_depth(error_line_head);
    for line in before.lines().rev().map(str::trim) {
        if line.starts_with('[') && depth <= 0 {
            return None;
        }
        depth += bracket_depth(line);
        if let Some((key, _)) = line.split_once('=') {
            return (depth > 0).then_some(key);
        }
    }
    None
}

/// Open minus closed square brackets (ignoring those in strings is not worth it here).
fn bracket_depth(text: &str) -> i64 {
    text.chars().fold(0, |d, c| match c {
        '[' => d + 1,
        ']' => d - 1,
        _ => d,
    })
}

/// `[a.b]` / `[[a.b]]` (with an optional trailing comment) → `a.b`.
fn header_path(line: &str) -> String {
    let inner = line.trim_start_matches('[');
    let inner = inner.split(']').next().unwrap_or("");
    inner
        .split('.')
        .map(|part| part.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect::<Vec<_>>()
        .join(".")
}
