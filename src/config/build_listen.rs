//! `[pool.NAME.listen]`: the address (default `unix:RUNTIME_DIR/NAME.sock`, relative unix
//! paths resolved), backlog range, octal mode, and `allowed_clients` parsed to IP addresses.

use std::net::IpAddr;

use super::builder::{Builder, Keys};
use super::defaults::{self, MAX_BACKLOG};
use super::error::ConfigError;
use super::mode::parse_mode;
use super::paths::clean_path;
use super::raw::RawListen;
use super::types::{GlobalConfig, ListenConfig};
use crate::listen::ListenAddress;

pub(crate) fn build_listen(
    pool: &str,
    raw: &RawListen,
    global: &GlobalConfig,
    b: &Builder,
    keys: &Keys,
) -> Result<ListenConfig, ConfigError> {
    let address = match &raw.address {
        // The runtime dir + name (`unix:/run/fastpm/www.sock` for pool www as root).
        None => ListenAddress::Unix(global.runtime_dir.join(format!("{pool}.sock"))),
        Some(v) => v
            .get_ref()
            .parse::<ListenAddress>()
            .map_err(|e| b.invalid(v, keys.key("address"), e.to_string()))?
            .resolved_against(b.base),
    };
    let address = match address {
        ListenAddress::Unix(path) => ListenAddress::Unix(clean_path(&path)),
        other => other,
    };
    let backlog = match &raw.backlog {
        None => None,
        Some(v) if (1..=MAX_BACKLOG).contains(v.get_ref()) => Some(*v.get_ref()),
        Some(v) => {
            let message = format!("must be between 1 and {MAX_BACKLOG} (it is {}); values above net.core.somaxconn are allowed and clamped by the kernel", v.get_ref());
            return Err(b.invalid(v, keys.key("backlog"), message));
        }
    };
    let mode = match &raw.mode {
        None => defaults::MODE,
        Some(v) => parse_mode(v.get_ref()).map_err(|m| b.invalid(v, keys.key("mode"), m))?,
    };
    let mut allowed_clients = Vec::new();
    if let Some(list) = &raw.allowed_clients {
        for (i, entry) in list.get_ref().iter().enumerate() {
            let ip = entry.get_ref().trim().parse::<IpAddr>().map_err(|_| {
                let message = format!(
                    "{:?} is not an IP address (IPv4 or IPv6, no port, no mask)",
                    entry.get_ref()
                );
                b.invalid(
                    entry,
                    format!("{}[{i}]", keys.key("allowed_clients")),
                    message,
                )
            })?;
            allowed_clients.push(ip);
        }
    }
    Ok(ListenConfig {
        address,
        backlog,
        mode,
        owner: Builder::optional(&raw.owner),
        group: Builder::optional(&raw.group),
        allowed_clients,
    })
}
