//! `allowed_clients`: which TCP peers may talk to a pool. Pure policy; the worker calls it
//! right after `accept()` and closes the connection when it says no.

use std::net::IpAddr;

/// The set of allowed peer addresses; empty allows everyone (php-fpm's
/// `listen.allowed_clients` unset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientFilter {
    /// Normalised with [`canonical`], so `::ffff:10.0.0.1` and `10.0.0.1` are one entry.
    allowed: Vec<IpAddr>,
}

impl ClientFilter {
    pub fn new(allowed: Vec<IpAddr>) -> Self {
        let mut allowed: Vec<IpAddr> = allowed.into_iter().map(canonical).collect();
        allowed.sort();
        allowed.dedup();
        Self { allowed }
    }

    /// True when the filter is empty or lists the peer (an IPv4-mapped IPv6 peer counts as
    /// its IPv4 address: that is how an IPv4 client looks on a dual-stack socket).
    pub fn allows(&self, peer: &IpAddr) -> bool {
        self.allowed.is_empty() || self.allowed.binary_search(&canonical(*peer)).is_ok()
    }

    /// Whether any restriction is configured.
    pub fn is_open(&self) -> bool {
        self.allowed.is_empty()
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; every other address unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allows_table() {
        let table: &[(&[&str], &str, bool)] = &[
            (&[], "203.0.113.9", true),
            (&[], "::1", true),
            (&["127.0.0.1"], "127.0.0.1", true),
            (&["127.0.0.1"], "127.0.0.2", false),
            (&["127.0.0.1"], "::ffff:127.0.0.1", true),
            (&["::ffff:10.0.0.1"], "10.0.0.1", true),
            (&["127.0.0.1"], "::1", false),
            (&["::1"], "::1", true),
            (&["::1"], "127.0.0.1", false),
            // IPv4-compatible (deprecated ::a.b.c.d) is not IPv4-mapped.
            (&["127.0.0.1"], "::127.0.0.1", false),
            (&["10.0.0.1", "10.0.0.2", "2001:db8::1"], "10.0.0.2", true),
            (
                &["10.0.0.1", "10.0.0.2", "2001:db8::1"],
                "2001:db8::1",
                true,
            ),
            (
                &["10.0.0.1", "10.0.0.2", "2001:db8::1"],
                "2001:db8::2",
                false,
            ),
        ];
        for (allowed, peer, want) in table {
            let filter = ClientFilter::new(allowed.iter().map(|s| ip(s)).collect());
            assert_eq!(
                filter.allows(&ip(peer)),
                *want,
                "allowed {allowed:?}, peer {peer}"
            );
        }
    }

    #[test]
    fn open_only_when_empty() {
        assert!(ClientFilter::new(vec![]).is_open());
        assert!(!ClientFilter::new(vec![ip("127.0.0.1")]).is_open());
    }
}
