//! `net.core.somaxconn`: the kernel's silent ceiling on every listen backlog (DESIGN.md §1).
//!
//! Linux replaces a `listen()` backlog larger than somaxconn by somaxconn and says nothing.
//! fastpm reads the sysctl of its own network namespace and, when the configured backlog is
//! larger, warns with both numbers, the effective value and the command that fixes it. The
//! status page's `listen queue len` still comes from the kernel itself (the queue probe), never
//! from this computation.

use std::io;

use super::ListenAddress;

/// Where the sysctl lives; per network namespace.
pub const SOMAXCONN_PATH: &str = "/proc/sys/net/core/somaxconn";

/// Read `net.core.somaxconn` of the caller's network namespace.
pub fn read_somaxconn() -> io::Result<u32> {
    let text = std::fs::read_to_string(SOMAXCONN_PATH)?;
    parse_somaxconn(&text)
}

/// Parse the sysctl's text (a decimal number and a newline).
pub fn parse_somaxconn(text: &str) -> io::Result<u32> {
    let trimmed = text.trim();
    trimmed.parse::<u32>().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{SOMAXCONN_PATH} holds {trimmed:?}, not a number"),
        )
    })
}

/// The backlog the kernel will actually use for a `listen(fd, requested)`.
pub fn effective_backlog(requested: u32, somaxconn: u32) -> u32 {
    requested.min(somaxconn)
}

/// One line for the log when the kernel will clamp `requested`; `None` when it fits.
pub fn clamp_warning(address: &ListenAddress, requested: u32, somaxconn: u32) -> Option<String> {
    if requested <= somaxconn {
        return None;
    }
    Some(format!(
        "listen backlog {requested} for {address} is clamped by the kernel to net.core.somaxconn = {somaxconn}; \
         effective backlog {effective}; raise it with: sysctl -w net.core.somaxconn={requested}",
        effective = effective_backlog(requested, somaxconn),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_above_somaxconn() {
        let unix: ListenAddress = "unix:/tmp/x.sock".parse().unwrap();
        let tcp: ListenAddress = "127.0.0.1:9000".parse().unwrap();
        let table: &[(&ListenAddress, u32, u32, Option<&str>)] = &[
            (
                &unix,
                511,
                128,
                Some("listen backlog 511 for unix:/tmp/x.sock is clamped by the kernel to net.core.somaxconn = 128; effective backlog 128; raise it with: sysctl -w net.core.somaxconn=511"),
            ),
            (
                &tcp,
                5000,
                4096,
                Some("listen backlog 5000 for 127.0.0.1:9000 is clamped by the kernel to net.core.somaxconn = 4096; effective backlog 4096; raise it with: sysctl -w net.core.somaxconn=5000"),
            ),
            (&unix, 128, 128, None),
            (&unix, 127, 128, None),
            (&tcp, 0, 0, None),
            (&tcp, 1, 0, Some("listen backlog 1 for 127.0.0.1:9000 is clamped by the kernel to net.core.somaxconn = 0; effective backlog 0; raise it with: sysctl -w net.core.somaxconn=1")),
        ];
        for (address, requested, somaxconn, want) in table {
            assert_eq!(
                clamp_warning(address, *requested, *somaxconn).as_deref(),
                *want,
                "requested {requested}, somaxconn {somaxconn}"
            );
        }
    }

    #[test]
    fn effective_backlog_is_the_minimum() {
        for (requested, somaxconn, want) in [(511, 4096, 511), (5000, 4096, 4096), (0, 128, 0)] {
            assert_eq!(effective_backlog(requested, somaxconn), want);
        }
    }

    #[test]
    fn parses_the_sysctl_text() {
        assert_eq!(parse_somaxconn("4096\n").unwrap(), 4096);
        assert_eq!(parse_somaxconn(" 128 ").unwrap(), 128);
        assert!(parse_somaxconn("").is_err());
        assert!(parse_somaxconn("-1\n").is_err());
        assert!(parse_somaxconn("lots").is_err());
    }

    #[test]
    fn reads_this_namespace() {
        // The value differs per machine; it must be a number the kernel accepted.
        let value = read_somaxconn().expect("read /proc/sys/net/core/somaxconn");
        assert!(value > 0, "somaxconn {value}");
    }
}
