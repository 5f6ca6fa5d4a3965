//! The file as written: the TOML schema of DESIGN.md §3 with every leaf wrapped in
//! `toml::Spanned` so later checks can point at the exact value. Every table denies unknown
//! keys; everything is optional here (defaults are applied in `build`). Words, durations,
//! modes and addresses stay strings here: parsing them in `build` gives better messages than
//! serde's.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// A spanned optional leaf.
pub(crate) type Field<T> = Option<Spanned<T>>;

#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with [global] and [pool.NAME]"
)]
pub(crate) struct RawFile {
    #[serde(default)]
    pub global: RawGlobal,
    #[serde(default)]
    pub pool: RawPools,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawGlobal {
    pub log_level: Field<String>,
    pub log_format: Field<String>,
    pub status_listen: Field<String>,
    pub runtime_dir: Field<String>,
    pub shutdown_timeout: Field<String>,
    pub pid_file: Field<String>,
    pub broker: Field<String>,
    // Logs (config/logs.rs).
    pub error_log: Field<String>,
    pub log_limit: Field<u32>,
}

/// `[pool.*]` in file order (serde maps would sort or hash them).
#[derive(Default)]
pub(crate) struct RawPools(pub Vec<(String, RawPool)>);

impl<'de> Deserialize<'de> for RawPools {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PoolsVisitor;
        impl<'de> Visitor<'de> for PoolsVisitor {
            type Value = RawPools;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of pools, [pool.NAME]")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPools, A::Error> {
                let mut pools = Vec::new();
                while let Some((name, pool)) = map.next_entry::<String, RawPool>()? {
                    pools.push((name, pool));
                }
                Ok(RawPools(pools))
            }
        }
        deserializer.deserialize_map(PoolsVisitor)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawPool {
    pub workers: Field<String>,
    pub accept_lock: Field<String>,
    pub pm: Field<String>,
    pub max_children: Field<u32>,
    pub start_servers: Field<u32>,
    pub min_spare_servers: Field<u32>,
    pub max_spare_servers: Field<u32>,
    pub idle_timeout: Field<String>,
    pub max_requests: Field<u64>,
    pub max_connections: Field<u32>,
    pub request_timeout: Field<String>,
    pub slow_request: Field<String>,
    pub client_timeout: Field<String>,
    pub max_params: Field<String>,
    pub max_body: Field<String>,
    pub status_path: Field<String>,
    pub ping_path: Field<String>,
    pub ping_response: Field<String>,
    pub user: Field<String>,
    pub group: Field<String>,
    // Logs (config/logs.rs).
    pub access_log: Field<String>,
    pub access_format: Field<String>,
    pub slowlog: Field<String>,
    #[serde(default)]
    pub listen: RawListen,
    #[serde(default)]
    pub app: RawApp,
    #[serde(default)]
    pub overload: RawOverload,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawListen {
    pub address: Field<String>,
    pub backlog: Field<u32>,
    pub mode: Field<String>,
    pub owner: Field<String>,
    pub group: Field<String>,
    pub allowed_clients: Field<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawApp {
    pub kind: Field<String>,
    pub document_root: Field<String>,
    pub php_cgi: Field<String>,
    pub php_children: Field<String>,
    pub php_ini: Field<String>,
    pub limit_extensions: Field<Vec<Spanned<String>>>,
    /// Values may be strings, numbers or booleans (php.ini style); keys are checked in `build`.
    pub ini: Option<toml::Table>,
    pub env: Option<toml::Table>,
    pub clear_env: Field<bool>,
    pub command: Field<Vec<Spanned<String>>>,
    pub history: Field<u32>,
    pub hold_timeout: Field<String>,
    pub max_held: Field<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawOverload {
    pub policy: Field<String>,
    pub max_queue_wait: Field<String>,
    pub target: Field<String>,
    pub interval: Field<String>,
}
