//! Status: one [`PoolSnapshot`] read from the scoreboard, rendered php-fpm compatibly (text,
//! JSON, XML, HTML dashboard, OpenMetrics) and served two ways — through FastCGI at a pool's
//! `status_path` (a worker calls [`render_pool`]) and by the master's HTTP listener
//! ([`http::serve`], which calls [`render_pools`]); [`client`] is `fastpm status`, [`watch`] its
//! live terminal view. The master also keeps a one-second [`history`] of each pool, which the
//! [`dashboard`] at `/` and `--watch` draw, and from which [`advice`] derives the backlog
//! advice. What is counted is counted through the `metrics` facade, whose [`recorder`] writes
//! the scoreboard these renderers read.
//!
//! Nothing here takes a lock on the scoreboard, so status answers even when every worker is
//! busy.

pub mod advice;
pub mod client;
pub mod dashboard;
pub mod history;
pub mod html;
pub mod http;
pub mod json;
pub mod openmetrics;
pub mod publish;
mod query;
pub mod recorder;
pub mod snapshot;
pub mod text;
pub mod timefmt;
pub mod watch;
pub mod xml;

pub use query::{Format, Query, Rendered};
pub use snapshot::{BrokerStatus, PoolInfo, PoolSnapshot, ProcessSnapshot, QueueWait};

/// Headers php-fpm sends with every status answer so no cache keeps a stale page; the worker's
/// FastCGI answer and the HTTP listener both send them.
pub const NO_CACHE_HEADERS: [(&str, &str); 2] = [
    ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
    (
        "Cache-Control",
        "no-cache, no-store, must-revalidate, max-age=0",
    ),
];

/// What a worker answers at its pool's `status_path`: one pool, php-fpm's shape.
pub fn render_pool(snapshot: &PoolSnapshot, query: &Query) -> Rendered {
    let body = match query.format {
        Format::Text => text::pool(snapshot),
        Format::Json => json::pool(snapshot),
        Format::Xml => xml::pool(snapshot),
        Format::Html => html::page(std::slice::from_ref(snapshot)),
        Format::OpenMetrics => openmetrics::render(std::slice::from_ref(snapshot)),
    };
    Rendered {
        content_type: query::content_type(query.format),
        body,
    }
}

/// The master's `/status`: every pool (JSON: `{"pools":[…]}`; text: pools one after another).
pub fn render_pools(snapshots: &[PoolSnapshot], query: &Query) -> Rendered {
    render_master(None, snapshots, query)
}

/// [`render_pools`] with the master's broker of held requests (DESIGN.md §8) before the pools
/// in text (`broker:`, `broker connected: yes|no`, `messages published:`), JSON (`"broker"`,
/// `"broker connected"`: a bool, `"messages published"`) and OpenMetrics
/// (`fastpm_broker_connected`, `fastpm_master_messages_published_total`). XML and HTML show
/// the pools only.
pub fn render_master(
    broker: Option<&BrokerStatus>,
    snapshots: &[PoolSnapshot],
    query: &Query,
) -> Rendered {
    let body = match query.format {
        Format::Text => text::master(broker, snapshots),
        Format::Json => json::master(broker, snapshots),
        Format::Xml => xml::pools(snapshots),
        Format::Html => html::page(snapshots),
        Format::OpenMetrics => openmetrics::render_master(broker, snapshots),
    };
    Rendered {
        content_type: query::content_type(query.format),
        body,
    }
}
