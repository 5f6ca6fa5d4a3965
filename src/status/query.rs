//! The status query string (`?json&full`, …) and the rendered answer.
//!
//! Parsing follows php-fpm 8.2 as observed on this machine: a flag counts when its name is
//! present, whatever its value (`?json=0` is JSON); names are case-sensitive (`?JSON` is text);
//! when several formats are given, `html` wins over `xml`, `xml` over `json`, `json` over
//! `openmetrics`.

/// Output format of a status answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// php-fpm's `key:   value` lines (the default).
    #[default]
    Text,
    Json,
    Xml,
    /// The self-refreshing dashboard.
    Html,
    /// OpenMetrics text exposition (Prometheus).
    OpenMetrics,
}

/// What a status request asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub format: Format,
    /// `?full`: add the per-worker rows.
    pub full: bool,
}

impl Query {
    /// Parse a query string without the leading `?` (a leading `?` is tolerated).
    pub fn parse(query_string: &str) -> Query {
        let query_string = query_string.strip_prefix('?').unwrap_or(query_string);
        let names: Vec<&str> = query_string
            .split('&')
            .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
            .collect();
        let has = |flag: &str| names.contains(&flag);
        let format = if has("html") {
            Format::Html
        } else if has("xml") {
            Format::Xml
        } else if has("json") {
            Format::Json
        } else if has("openmetrics") {
            Format::OpenMetrics
        } else {
            Format::Text
        };
        Query {
            format,
            full: has("full"),
        }
    }
}

/// A rendered status answer: what to put in `Content-Type` and the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub content_type: &'static str,
    pub body: String,
}

/// php-fpm's content types (PHP appends the default charset to text types).
pub(crate) fn content_type(format: Format) -> &'static str {
    match format {
        Format::Text => "text/plain;charset=UTF-8",
        Format::Json => "application/json",
        Format::Xml => "text/xml;charset=UTF-8",
        Format::Html => "text/html;charset=UTF-8",
        Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_php_fpm() {
        use Format::*;
        let table = [
            ("", Text, false),
            ("full", Text, true),
            ("json", Json, false),
            ("?json&full", Json, true),
            ("full&json", Json, true),
            ("json=0", Json, false),
            ("JSON", Text, false),
            ("json&html", Html, false),
            ("openmetrics&xml", Xml, false),
            ("xml&json", Xml, false),
            ("json&openmetrics", Json, false),
            ("openmetrics", OpenMetrics, false),
            ("html&full=1", Html, true),
            ("fullx&jsonx", Text, false),
            ("a=json", Text, false),
        ];
        for (qs, format, full) in table {
            assert_eq!(Query::parse(qs), Query { format, full }, "{qs:?}");
        }
    }
}
