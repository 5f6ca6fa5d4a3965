//! Listen addresses as written in the config: `unix:PATH`, `IP:PORT`, `[IPV6]:PORT`,
//! `systemd:NAME`. Parsing is pure; binding lives in `socket.rs`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListenAddress {
    /// A unix stream socket at this path.
    Unix(PathBuf),
    /// A TCP socket (IPv4 or IPv6).
    Tcp(SocketAddr),
    /// A socket passed by systemd socket activation, by its `FileDescriptorName=`.
    Systemd(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("empty listen address")]
    Empty,
    #[error("unix socket path is empty in {0:?}")]
    EmptyPath(String),
    #[error("systemd socket name is empty in {0:?}")]
    EmptySystemdName(String),
    #[error(
        "{0:?} is not a listen address (expected unix:PATH, IP:PORT, [IPV6]:PORT or systemd:NAME)"
    )]
    Invalid(String),
}

impl ListenAddress {
    pub fn is_unix(&self) -> bool {
        matches!(self, Self::Unix(_))
    }

    /// Make a relative unix path relative to `base` (the config file's directory).
    pub fn resolved_against(self, base: &std::path::Path) -> Self {
        match self {
            Self::Unix(p) if p.is_relative() => Self::Unix(base.join(p)),
            other => other,
        }
    }
}

impl FromStr for ListenAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddressError::EmptyPath(s.to_string()));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(name) = s.strip_prefix("systemd:") {
            if name.is_empty() {
                return Err(AddressError::EmptySystemdName(s.to_string()));
            }
            return Ok(Self::Systemd(name.to_string()));
        }
        s.parse::<SocketAddr>()
            .map(Self::Tcp)
            .map_err(|_| AddressError::Invalid(s.to_string()))
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Systemd(n) => write!(f, "systemd:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let table: &[(&str, Result<ListenAddress, AddressError>)] = &[
            (
                "unix:/tmp/x.sock",
                Ok(ListenAddress::Unix("/tmp/x.sock".into())),
            ),
            ("unix:rel.sock", Ok(ListenAddress::Unix("rel.sock".into()))),
            (
                "127.0.0.1:9000",
                Ok(ListenAddress::Tcp("127.0.0.1:9000".parse().unwrap())),
            ),
            (
                "[::1]:9000",
                Ok(ListenAddress::Tcp("[::1]:9000".parse().unwrap())),
            ),
            ("systemd:www", Ok(ListenAddress::Systemd("www".into()))),
            ("", Err(AddressError::Empty)),
            ("unix:", Err(AddressError::EmptyPath("unix:".into()))),
            (
                "systemd:",
                Err(AddressError::EmptySystemdName("systemd:".into())),
            ),
            ("9000", Err(AddressError::Invalid("9000".into()))),
            ("::1:9000", Err(AddressError::Invalid("::1:9000".into()))),
            (
                "localhost:9000",
                Err(AddressError::Invalid("localhost:9000".into())),
            ),
        ];
        for (input, want) in table {
            assert_eq!(&input.parse::<ListenAddress>(), want, "input {input:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "unix:/run/a.sock",
            "127.0.0.1:9000",
            "[::1]:9000",
            "systemd:www",
        ] {
            assert_eq!(s.parse::<ListenAddress>().unwrap().to_string(), s);
        }
    }
}
