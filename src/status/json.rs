//! php-fpm's JSON status, extended with fastpm's keys: one object per pool, keys in the order
//! of [`PoolSnapshot::fields`], `"processes":[…]` with `?full`; the master wraps pools as
//! `{"pools":[…]}`.
//!
//! Written by hand rather than through a serde map so the key order is php-fpm's (a JSON
//! object's order is not significant, but people read these).

use super::snapshot::{BrokerStatus, Field, FieldValue, PoolSnapshot};

/// One pool object.
pub fn pool(snapshot: &PoolSnapshot) -> String {
    let mut out = String::from("{");
    write_members(&mut out, &snapshot.fields());
    if let Some(processes) = &snapshot.processes {
        out.push_str(",\"processes\":[");
        for (i, process) in processes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('{');
            write_members(&mut out, &process.fields());
            out.push('}');
        }
        out.push(']');
    }
    out.push('}');
    out
}

/// The master's answer: `{"pools":[…]}`.
pub fn pools(snapshots: &[PoolSnapshot]) -> String {
    master(None, snapshots)
}

/// The master's answer with its broker: `{"broker":"memory","broker connected":true,
/// "messages published":0,"pools":[…]}` (without a broker, `pools` alone).
pub fn master(broker: Option<&BrokerStatus>, snapshots: &[PoolSnapshot]) -> String {
    let inner: Vec<String> = snapshots.iter().map(pool).collect();
    let head = broker.map_or_else(String::new, |b| {
        format!(
            "{}:{},{}:{},{}:{},",
            string("broker"),
            string(&b.broker),
            string("broker connected"),
            b.connected,
            string("messages published"),
            b.messages_published
        )
    });
    format!("{{{head}\"pools\":[{}]}}", inner.join(","))
}

fn write_members(out: &mut String, fields: &[Field<'_>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&string(&f.key.to_ascii_lowercase()));
        out.push(':');
        out.push_str(&value(f.value));
    }
}

fn value(value: FieldValue<'_>) -> String {
    match value {
        FieldValue::Text(s) => string(s),
        FieldValue::Count(n) | FieldValue::Time(n) => n.to_string(),
        FieldValue::MaybeCount(n) => n.map_or_else(|| "null".to_string(), |n| n.to_string()),
        FieldValue::MaybeMillis(ms) => ms
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| "null".to_string(), |n| n.to_string()),
        FieldValue::MaybeDecimal(x) => x
            .and_then(|x| serde_json::Number::from_f64((x * 1000.0).round() / 1000.0))
            .map_or_else(|| "null".to_string(), |n| n.to_string()),
        FieldValue::Percent(p) if p.is_finite() => format!("{p:.2}"),
        FieldValue::Percent(_) => "null".to_string(),
    }
}

fn string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}
