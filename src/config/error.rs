//! The one error type of config loading: every failure names file, line, column and the dotted
//! key, and displays as exactly one line (`conf/x.toml:12:6: pool.www.pm: unknown value ...`).

use std::ops::Range;

/// What kind of mistake, so callers and tests can tell them apart without parsing the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The file could not be read (line and column are 0: there is no position).
    Io,
    /// Not valid TOML (including duplicate keys).
    Syntax,
    /// A key the schema does not have.
    UnknownKey,
    /// A value of the wrong TOML type (a number where a string belongs …).
    WrongType,
    /// A value of the right type that does not parse (bad word, duration, address, mode …).
    InvalidValue,
    /// A rule between values failed (php-fpm's pm rules, shared addresses …).
    Rule,
}

/// A config error with its position. `line`/`column` are 1-based; both 0 for I/O errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {key}: {message}")]
pub struct ConfigError {
    /// The config file as the user named it, or `<embedded conf/fastpm.toml>`.
    pub file: String,
    /// 1-based line of the offending text (0 when there is no position: I/O errors).
    pub line: usize,
    /// 1-based column, in characters, of the offending text (0 when there is no position).
    pub column: usize,
    /// Dotted path of the key, e.g. `pool.www.listen.backlog`.
    pub key: String,
    /// What is wrong, on one line.
    pub message: String,
    /// Which kind of mistake (not part of the displayed line).
    pub kind: ConfigErrorKind,
}

/// 1-based (line, column) of byte `offset` in `text`; columns count characters, not bytes.
/// An offset past the end (or inside a character) is clamped to the nearest valid position.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Builds positioned errors for one config text.
pub(crate) struct ErrorSite<'a> {
    /// Name shown in errors.
    pub file: String,
    /// The config text, to turn byte offsets into line:column.
    pub text: &'a str,
}

impl ErrorSite<'_> {
    /// An error at byte range `span` (its start is what gets reported).
    pub fn at(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        kind: ConfigErrorKind,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = span.map_or((1, 1), |s| line_column(self.text, s.start));
        ConfigError {
            file: self.file.clone(),
            line,
            column,
            key: key.into(),
            message: one_line(&message.into()),
            kind,
        }
    }
}

/// Fold a multi-line message (the TOML parser's) onto one line.
pub(crate) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
