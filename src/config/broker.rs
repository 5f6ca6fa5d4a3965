//! `[global] broker` (DESIGN.md §3, §8): where held requests' messages, ids and history live —
//! `memory` (one fastpm instance) or a Redis server shared by several (`redis://HOST:PORT[/DB]`,
//! or `unix:PATH` for Redis's unix socket). Parsed once here, as a pure function, so a typo is
//! a config error with file:line:column instead of a broker that never connects.

use std::fmt;
use std::path::{Path, PathBuf};

/// Redis's customary port, used when a `redis://` URL names none.
pub const REDIS_DEFAULT_PORT: u16 = 6379;

/// The broker of held requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerUrl {
    /// Channels, ids and history in the master's memory: one instance, nothing to connect to.
    Memory,
    /// A Redis server, as the URL its client takes (the redis crate's syntax):
    /// `redis://HOST:PORT[/DB]` (the port always written) or `redis+unix:///ABSOLUTE/PATH`
    /// for a unix socket. `Display` gives the config's spelling back (`unix:PATH`).
    Redis(String),
}

impl BrokerUrl {
    /// The Redis client URL, `None` for `memory`.
    pub fn client_url(&self) -> Option<&str> {
        match self {
            Self::Memory => None,
            Self::Redis(url) => Some(url),
        }
    }
}

/// Prefix of a unix-socket client URL (an absolute path follows, so `redis+unix:///run/…`).
const UNIX_URL_PREFIX: &str = "redis+unix://";

impl fmt::Display for BrokerUrl {
    /// The config spelling (what `fastpm check` prints and status shows): `memory`,
    /// `redis://HOST:PORT[/DB]`, `unix:PATH`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Redis(url) => match url.strip_prefix(UNIX_URL_PREFIX) {
                Some(path) => write!(f, "unix:{path}"),
                None => f.write_str(url),
            },
        }
    }
}

/// What every refusal says is accepted.
const EXPECTED: &str =
    "expected \"memory\", \"redis://HOST:PORT[/DB]\" or \"unix:PATH\" (a Redis unix socket)";

/// Parse a `broker` value; `resolve` makes a relative unix path absolute (against the config
/// file's directory). The error is one line saying what is wrong and what is accepted.
pub fn parse_broker(text: &str, resolve: impl Fn(&str) -> PathBuf) -> Result<BrokerUrl, String> {
    if text == "memory" {
        return Ok(BrokerUrl::Memory);
    }
    if let Some(rest) = text.strip_prefix("redis://") {
        return parse_tcp(rest)
            .map(BrokerUrl::Redis)
            .map_err(|why| format!("{text:?}: {why}; {EXPECTED}"));
    }
    if let Some(path) = text.strip_prefix("unix:") {
        return unix_url(path, &resolve)
            .map(BrokerUrl::Redis)
            .map_err(|why| format!("{text:?}: {why}; {EXPECTED}"));
    }
    let why = if text.starts_with("rediss://") {
        "TLS (rediss://) is not supported"
    } else if text.contains("://") {
        "unknown scheme"
    } else {
        "unknown broker"
    };
    Err(format!("{text:?}: {why}; {EXPECTED}"))
}

/// `HOST[:PORT][/DB]` after `redis://` → the client URL with the port written.
fn parse_tcp(rest: &str) -> Result<String, String> {
    if rest.contains('@') {
        return Err(
            "credentials in the URL are not supported (status pages show the broker)".into(),
        );
    }
    if rest.contains(['?', '#']) {
        return Err("query and fragment are not supported".into());
    }
    let (authority, db) = match rest.split_once('/') {
        None => (rest, None),
        Some((authority, "")) => (authority, None),
        Some((authority, db)) => {
            let n = db
                .parse::<u32>()
                .ok()
                .filter(|_| db.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("database {db:?} is not a number"))?;
            (authority, Some(n))
        }
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed '[' in the host")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("junk after ']'")?),
        };
        (format!("[{host}]"), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
        if !host.chars().all(name_char) {
            return Err(format!("{host:?} is not a host name or IP address"));
        }
        (host.to_string(), port)
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = match port {
        None => REDIS_DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("port {p:?} is not a number from 1 to 65535"))?,
    };
    Ok(match db {
        Some(db) => format!("redis://{host}:{port}/{db}"),
        None => format!("redis://{host}:{port}"),
    })
}

/// `unix:PATH` → `redis+unix:///ABSOLUTE/PATH`. Characters a URL would read as syntax are
/// refused rather than escaped, so the path in status is the path on disk.
fn unix_url(path: &str, resolve: &impl Fn(&str) -> PathBuf) -> Result<String, String> {
    if path.is_empty() {
        return Err("no socket path".into());
    }
    if path.contains(['?', '#', '%']) || path.chars().any(char::is_whitespace) {
        return Err("the socket path may not contain '?', '#', '%' or spaces".into());
    }
    let absolute = if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        resolve(path)
    };
    let text = absolute
        .to_str()
        .ok_or("the socket path is not UTF-8")?
        .to_string();
    Ok(format!("{UNIX_URL_PREFIX}{text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BrokerUrl, String> {
        parse_broker(text, |p| Path::new("/etc/fastpm").join(p))
    }

    #[test]
    fn accepted_spellings_and_their_client_urls() {
        let table = [
            ("memory", None, "memory"),
            (
                "redis://127.0.0.1:6379",
                Some("redis://127.0.0.1:6379"),
                "redis://127.0.0.1:6379",
            ),
            (
                "redis://localhost",
                Some("redis://localhost:6379"),
                "redis://localhost:6379",
            ),
            (
                "redis://redis.internal:7000/3",
                Some("redis://redis.internal:7000/3"),
                "redis://redis.internal:7000/3",
            ),
            (
                "redis://10.0.0.5:6380/",
                Some("redis://10.0.0.5:6380"),
                "redis://10.0.0.5:6380",
            ),
            (
                "redis://[::1]:6379/0",
                Some("redis://[::1]:6379/0"),
                "redis://[::1]:6379/0",
            ),
            (
                "redis://[::1]",
                Some("redis://[::1]:6379"),
                "redis://[::1]:6379",
            ),
            (
                "unix:/run/redis/redis.sock",
                Some("redis+unix:///run/redis/redis.sock"),
                "unix:/run/redis/redis.sock",
            ),
            (
                "unix:redis.sock",
                Some("redis+unix:///etc/fastpm/redis.sock"),
                "unix:/etc/fastpm/redis.sock",
            ),
        ];
        for (text, client, shown) in table {
            let broker = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(broker.client_url(), client, "{text}");
            assert_eq!(broker.to_string(), shown, "{text}");
            // What `fastpm check` prints loads back to the same broker.
            assert_eq!(parse(shown), Ok(broker), "{text} round trip");
        }
    }

    #[test]
    fn refusals_say_why_and_what_is_accepted() {
        let table = [
            ("", "unknown broker"),
            ("Memory", "unknown broker"),
            ("redis", "unknown broker"),
            ("127.0.0.1:6379", "unknown broker"),
            ("http://127.0.0.1:6379", "unknown scheme"),
            ("rediss://127.0.0.1:6379", "TLS"),
            ("redis://", "no host"),
            ("redis://:6379", "no host"),
            ("redis://host:0", "port \"0\""),
            ("redis://host:65536", "port \"65536\""),
            ("redis://host:abc", "port \"abc\""),
            ("redis://host:6379/x", "database \"x\""),
            ("redis://host:6379/+1", "database \"+1\""),
            ("redis://host:6379/1/2", "database \"1/2\""),
            ("redis://:secret@host:6379", "credentials"),
            ("redis://host:6379?db=1", "query"),
            ("redis://[::1:6379", "unclosed"),
            ("redis://[nope]:6379", "not an IPv6"),
            ("redis://ho st:6379", "not a host name"),
            ("unix:", "no socket path"),
            ("unix:/tmp/a b.sock", "may not contain"),
            ("unix:/tmp/a?.sock", "may not contain"),
        ];
        for (text, why) in table {
            let err = parse(text).expect_err(text);
            assert!(err.contains(why), "{text:?}: {err:?} lacks {why:?}");
            assert!(err.contains("redis://HOST:PORT[/DB]"), "{text:?}: {err:?}");
            assert!(!err.contains('\n'), "{err:?}");
        }
    }
}
