//! php-fpm's XML status: `<status>` with one element per key (spaces become `-`), and with
//! `?full` a `<processes>` list; the master wraps several pools in `<pools>`.

use std::fmt::Write;

use super::snapshot::{Field, FieldValue, PoolSnapshot};

const PROLOGUE: &str = "<?xml version=\"1.0\" ?>\n";

/// One pool as a document.
pub fn pool(snapshot: &PoolSnapshot) -> String {
    format!("{PROLOGUE}{}", status_element(snapshot))
}

/// Several pools: `<pools><status>…</status>…</pools>`.
pub fn pools(snapshots: &[PoolSnapshot]) -> String {
    let mut out = format!("{PROLOGUE}<pools>\n");
    for s in snapshots {
        out.push_str(&status_element(s));
        out.push('\n');
    }
    out.push_str("</pools>");
    out
}

fn status_element(snapshot: &PoolSnapshot) -> String {
    let mut out = String::from("<status>\n");
    for f in snapshot.fields() {
        out.push_str(&element(&f));
        out.push('\n');
    }
    if let Some(processes) = &snapshot.processes {
        out.push_str("<processes>\n");
        for process in processes {
            out.push_str("<process>");
            for f in process.fields() {
                out.push_str(&element(&f));
            }
            out.push_str("</process>\n");
        }
        out.push_str("</processes>\n");
    }
    out.push_str("</status>");
    out
}

fn element(f: &Field<'_>) -> String {
    let name = f.key.to_ascii_lowercase().replace(' ', "-");
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write!(out, "<{name}>{}</{name}>", escape(&value(f.value)));
    out
}

fn value(value: FieldValue<'_>) -> String {
    match value {
        FieldValue::Text(s) => s.to_string(),
        FieldValue::Count(n) | FieldValue::Time(n) => n.to_string(),
        FieldValue::MaybeCount(n) => n.map(|n| n.to_string()).unwrap_or_default(),
        FieldValue::MaybeMillis(ms) | FieldValue::MaybeDecimal(ms) => {
            ms.map(|ms| ms.to_string()).unwrap_or_default()
        }
        FieldValue::Percent(p) => format!("{p:.2}"),
    }
}

/// Escape the five XML special characters (also used by the HTML renderer).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
