//! Loading: read the file, parse the TOML (syntax errors), deserialize the raw schema (unknown
//! keys, wrong types), then build and validate. Every failure becomes a positioned
//! `ConfigError`.

use std::path::{Path, PathBuf};

use toml_edit::ImDocument;

use super::build::build;
use super::builder::Builder;
use super::error::{one_line, ConfigError, ConfigErrorKind, ErrorSite};
use super::locate::{path_at, path_near_syntax_error};
use super::raw::RawFile;
use super::types::{Config, ConfigSource};

/// The default configuration compiled into the binary (used by `fastpm run` without `-c`).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../conf/fastpm.toml");

/// Settings whose values are duration strings: a number there gets a hint.
const DURATION_KEYS: &[&str] = &[
    "shutdown_timeout",
    "idle_timeout",
    "request_timeout",
    "slow_request",
    "client_timeout",
    "max_queue_wait",
    "target",
    "interval",
];

/// Read and load a config file; relative paths inside are relative to its directory.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let source = ConfigSource::File(path.to_path_buf());
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        key: "(file)".into(),
        message: format!("cannot read the config file (no position): {e}"),
        kind: ConfigErrorKind::Io,
    })?;
    load_str(&text, source)
}

/// The built-in default (conf/fastpm.toml); relative paths resolve against the working directory.
pub fn load_embedded() -> Result<Config, ConfigError> {
    load_str(EMBEDDED_DEFAULT, ConfigSource::Embedded)
}

/// Load config text from `source`; relative paths resolve against the file's directory (for
/// `Embedded`: the current working directory), made absolute with the current directory.
pub fn load_str(text: &str, source: ConfigSource) -> Result<Config, ConfigError> {
    let base = base_dir(&source).map_err(|e| ConfigError {
        file: source.to_string(),
        line: 0,
        column: 0,
        key: "(file)".into(),
        message: format!("cannot resolve relative paths (no position): current directory: {e}"),
        kind: ConfigErrorKind::Io,
    })?;
    load_str_with_base(text, source, &base)
}

/// The directory relative paths of `source` resolve against, made absolute.
pub fn base_dir(source: &ConfigSource) -> std::io::Result<PathBuf> {
    let cwd = std::env::current_dir()?;
    Ok(match source {
        ConfigSource::File(path) => cwd.join(path.parent().unwrap_or(Path::new(""))),
        ConfigSource::Embedded => cwd,
    })
}

/// Load config text with an explicit base directory for relative paths (pure: no I/O).
pub fn load_str_with_base(
    text: &str,
    source: ConfigSource,
    base: &Path,
) -> Result<Config, ConfigError> {
    let site = ErrorSite {
        file: source.to_string(),
        text,
    };
    let doc = ImDocument::parse(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let key = path_near_syntax_error(text, offset);
        let message = format!("TOML syntax: {}", one_line(e.message()));
        site.at(e.span(), key, ConfigErrorKind::Syntax, message)
    })?;
    let raw: RawFile = toml::from_str(text).map_err(|e| serde_error(&site, &doc, &e))?;
    let builder = Builder {
        site,
        doc: &doc,
        base,
    };
    build(raw, &builder, source)
}

/// A serde error (unknown key, wrong type) with the key found from its span.
fn serde_error(site: &ErrorSite, doc: &ImDocument<&str>, error: &toml::de::Error) -> ConfigError {
    let span = error.span();
    let key = span
        .as_ref()
        .and_then(|s| path_at(doc, s.start))
        .unwrap_or_else(|| "(top level)".to_string());
    let mut message = one_line(error.message())
        .replace("expected u32", "expected an integer from 0 to 4294967295")
        .replace("expected u64", "expected an integer of 0 or more");
    let kind = if let Some(rest) = message.strip_prefix("unknown field") {
        message = format!("unknown key{rest}");
        ConfigErrorKind::UnknownKey
    } else {
        ConfigErrorKind::WrongType
    };
    let last = key.rsplit('.').next().unwrap_or("");
    if kind == ConfigErrorKind::WrongType && DURATION_KEYS.contains(&last) {
        message.push_str(" (durations are strings such as \"30s\" or \"500ms\")");
    }
    if kind == ConfigErrorKind::WrongType && last == "mode" {
        message.push_str(" (write the mode as an octal string such as \"0660\")");
    }
    site.at(span, key, kind, message)
}
