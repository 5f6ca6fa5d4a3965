//! The live dashboard the master serves at `/`: one page (`dashboard.html`, embedded in the
//! binary with `include_str!`) whose small script fetches `/history?json` and
//! `/status?json&full` every second and draws, per pool, inline-SVG charts of the listen queue
//! against the effective backlog and the advised backlog (`status::advice`, whose sentence is
//! shown under the charts), the workers, the queue-wait p99, what was turned away and
//! (once the pool has held any) the held requests, beside the php-fpm fields and the per-worker table.
//!
//! Why a script and not server-rendered SVG: the page updates in place without reloading (no
//! flicker, scroll position kept), and the server stays a JSON source. No library, no CDN, no
//! outside URL: the page works on a machine with no way out. php-fpm's own self-refreshing
//! table stays at `/status?html`.

/// The page, as served.
pub const PAGE: &str = include_str!("dashboard.html");

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn page_is_self_contained() {
        // The only absolute URL is the SVG namespace name, which is never fetched.
        let without_ns = PAGE.replace("\"http://www.w3.org/2000/svg\"", "");
        for outside in ["http://", "https://", "src=", "@import", "url("] {
            assert!(!without_ns.contains(outside), "{outside}");
        }
        for wanted in [
            "name=\"viewport\"",
            "/history?json",
            "/status?json&full",
            "listen queue len",
            "\"held requests\"",
            "\"advised backlog\"",
            "\"backlog advice\"",
            "setInterval(refresh, 1000)",
        ] {
            assert!(PAGE.contains(wanted), "{wanted}");
        }
    }
}
