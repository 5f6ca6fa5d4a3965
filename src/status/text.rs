//! php-fpm's plain-text status: `key:` padded to a 22-column value, one line per key, and with
//! `?full` a `************************` block per worker.

use std::fmt::Write;

use super::snapshot::{BrokerStatus, Field, FieldValue, PoolSnapshot};
use super::timefmt::php_fpm_date;

/// php-fpm pads `key:` to this width (`max active processes: ` is exactly 22 characters).
const KEY_COLUMN: usize = 22;

/// Separator php-fpm writes before each worker block.
const PROCESS_SEPARATOR: &str = "************************";

/// One pool, php-fpm's layout.
pub fn pool(snapshot: &PoolSnapshot) -> String {
    let mut out = String::new();
    write_fields(&mut out, &snapshot.fields());
    for process in snapshot.processes.iter().flatten() {
        out.push('\n');
        out.push_str(PROCESS_SEPARATOR);
        out.push('\n');
        write_fields(&mut out, &process.fields());
    }
    out
}

/// Several pools one after another, separated by an empty line.
pub fn pools(snapshots: &[PoolSnapshot]) -> String {
    snapshots.iter().map(pool).collect::<Vec<_>>().join("\n")
}

/// The master's `/status`: `broker:`, `broker connected:` (yes/no) and `messages published:`
/// (through the master's `/publish/`) when the master has a broker, an empty line, then the
/// pools.
pub fn master(broker: Option<&BrokerStatus>, snapshots: &[PoolSnapshot]) -> String {
    let Some(broker) = broker else {
        return pools(snapshots);
    };
    let mut out = String::new();
    let connected = if broker.connected { "yes" } else { "no" };
    write_fields(
        &mut out,
        &[
            Field {
                key: "broker",
                value: FieldValue::Text(&broker.broker),
            },
            Field {
                key: "broker connected",
                value: FieldValue::Text(connected),
            },
            Field {
                key: "messages published",
                value: FieldValue::Count(broker.messages_published),
            },
        ],
    );
    if !snapshots.is_empty() {
        out.push('\n');
        out.push_str(&pools(snapshots));
    }
    out
}

fn write_fields(out: &mut String, fields: &[Field<'_>]) {
    for f in fields {
        let key = format!("{}:", f.key);
        // A key as long as the column (`idle kept connections:`) still gets its space.
        let width = KEY_COLUMN.max(key.len() + 1);
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{key:<width$}{}", value(f.value));
    }
}

/// A value as php-fpm's text and HTML show it; unknown numbers read `-`, like php-fpm's empty
/// texts.
pub(crate) fn value(value: FieldValue<'_>) -> String {
    match value {
        FieldValue::Text(s) => s.to_string(),
        FieldValue::Count(n) => n.to_string(),
        FieldValue::MaybeCount(n) => n.map_or_else(|| "-".to_string(), |n| n.to_string()),
        FieldValue::Time(secs) => php_fpm_date(secs),
        FieldValue::MaybeMillis(ms) => ms.map_or_else(|| "-".to_string(), |ms| format!("{ms:.3}")),
        FieldValue::MaybeDecimal(x) => x.map_or_else(|| "-".to_string(), |x| format!("{x:.1}")),
        FieldValue::Percent(p) => format!("{p:.2}"),
    }
}
