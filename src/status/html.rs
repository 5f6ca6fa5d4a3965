//! php-fpm's HTML status page (`?html`: a pool's `status_path`, the master's `/status?html`):
//! one table with a row per key and a column per pool, then with `?full` a table of workers per
//! pool. It reloads itself every [`REFRESH_SECONDS`] with a `<meta http-equiv="refresh">`, needs
//! no script and no external asset, and keeps the query string (so `?html&full` stays full).
//! The master's live dashboard at `/` is `dashboard.rs`.

use super::snapshot::PoolSnapshot;
use super::text;
use super::xml::escape;

/// How often the page reloads itself.
pub const REFRESH_SECONDS: u32 = 2;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1em}\
table{border-collapse:collapse;margin-bottom:1.5em}\
th,td{border:1px solid #bbb;padding:2px 8px;text-align:left}\
td{font-family:ui-monospace,monospace;text-align:right}\
th{background:#eee}td.warn{background:#fdd}";

/// The dashboard for any number of pools (one pool for a worker's `?html`).
pub fn page(snapshots: &[PoolSnapshot]) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>fastpm status</title><style>{STYLE}</style></head>\n<body>\n\
         <h1>fastpm status</h1>\n"
    );
    out.push_str(&pools_table(snapshots));
    for s in snapshots {
        if let Some(table) = processes_table(s) {
            out.push_str(&table);
        }
    }
    out.push_str("</body></html>\n");
    out
}

fn pools_table(snapshots: &[PoolSnapshot]) -> String {
    let mut out = String::from("<table>\n");
    let Some(first) = snapshots.first() else {
        out.push_str("<tr><td>no pools</td></tr>\n</table>\n");
        return out;
    };
    let per_pool: Vec<_> = snapshots.iter().map(|s| s.fields()).collect();
    for (row, field) in first.fields().iter().enumerate() {
        out.push_str(&format!("<tr><th>{}</th>", escape(field.key)));
        for (s, fields) in snapshots.iter().zip(&per_pool) {
            let f = &fields[row];
            let class = if needs_attention(s, f.key) {
                " class=\"warn\""
            } else {
                ""
            };
            out.push_str(&format!(
                "<td{class}>{}</td>",
                escape(&text::value(f.value))
            ));
        }
        out.push_str("</tr>\n");
        if field.key == "total processes" {
            out.push_str("<tr><th>max children</th>");
            for s in snapshots {
                out.push_str(&format!("<td>{}</td>", s.max_children));
            }
            out.push_str("</tr>\n");
        }
    }
    out.push_str("</table>\n");
    out
}

fn processes_table(snapshot: &PoolSnapshot) -> Option<String> {
    let processes = snapshot.processes.as_ref()?;
    let mut out = format!(
        "<h2>pool {} — workers</h2>\n<table>\n<tr>",
        escape(&snapshot.pool)
    );
    if let Some(first) = processes.first() {
        for f in first.fields() {
            out.push_str(&format!("<th>{}</th>", escape(&f.key.to_ascii_lowercase())));
        }
    }
    out.push_str("</tr>\n");
    for p in processes {
        out.push_str("<tr>");
        for f in p.fields() {
            out.push_str(&format!("<td>{}</td>", escape(&text::value(f.value))));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    Some(out)
}

/// Cells worth a glance: a backlog the kernel clamped, a queue that is not empty or has been
/// full, connections turned away, a backlog the advice warns of.
pub fn needs_attention(s: &PoolSnapshot, key: &str) -> bool {
    match key {
        "listen queue len" => {
            s.listen_queue_len != 0 && s.listen_queue_len < u64::from(s.listen_backlog)
        }
        "listen queue" => s.listen_queue > 0,
        "queue full samples" => s.queue_full_samples > 0,
        "rejected conn" => s.rejected_conn > 0,
        "listen drops" => s.listen_drops.unwrap_or(0) > 0,
        "max children reached" => s.max_children_reached > 0,
        "backlog warning" => s.backlog_advice.as_ref().is_some_and(|a| a.warns()),
        _ => false,
    }
}
