//! The toolkit `build` uses on raw values: spans to positioned errors, defaults for absent
//! keys, parsing of words, durations, numbers with a minimum, `""`-means-off strings, paths.

use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml_edit::ImDocument;

use super::duration::{format_duration, parse_duration};
use super::enums::ConfigWord;
use super::error::{ConfigError, ConfigErrorKind, ErrorSite};
use super::paths::clean_path;
use super::raw::Field;
use super::size::{format_size, parse_size};

/// The span of a written value, `None` when the file does not set it.
pub(crate) fn span_of<T>(field: &Field<T>) -> Option<Range<usize>> {
    field.as_ref().map(Spanned::span)
}

/// Everything needed to turn raw values into checked ones with positioned errors.
pub(crate) struct Builder<'a> {
    /// Turns spans into file:line:column.
    pub site: ErrorSite<'a>,
    /// The parsed document, for spans of keys (tables have no spanned value).
    pub doc: &'a ImDocument<&'a str>,
    /// Directory relative paths are resolved against (absolute).
    pub base: &'a Path,
}

/// Dotted-key prefix of one table, e.g. `pool.www.listen`.
pub(crate) struct Keys(pub String);

impl Keys {
    pub fn key(&self, field: &str) -> String {
        format!("{}.{field}", self.0)
    }
}

impl Builder<'_> {
    /// An error at a written value.
    pub fn invalid<T>(&self, field: &Spanned<T>, key: String, message: String) -> ConfigError {
        self.site.at(
            Some(field.span()),
            key,
            ConfigErrorKind::InvalidValue,
            message,
        )
    }

    pub fn word<E: ConfigWord>(
        &self,
        field: &Field<String>,
        key: String,
        default: E,
    ) -> Result<E, ConfigError> {
        match field {
            None => Ok(default),
            Some(v) => E::parse_word(v.get_ref()).map_err(|m| self.invalid(v, key, m)),
        }
    }

    pub fn duration(
        &self,
        field: &Field<String>,
        key: String,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match field {
            None => Ok(default),
            Some(v) => parse_duration(v.get_ref()).map_err(|m| self.invalid(v, key, m)),
        }
    }

    /// A duration inside `range`.
    pub fn duration_in(
        &self,
        field: &Field<String>,
        key: String,
        default: Duration,
        range: RangeInclusive<Duration>,
    ) -> Result<Duration, ConfigError> {
        let value = self.duration(field, key.clone(), default)?;
        match field {
            Some(v) if !range.contains(&value) => Err(self.invalid(
                v,
                key,
                format!(
                    "must be from {} to {} (it is {:?})",
                    format_duration(*range.start()),
                    format_duration(*range.end()),
                    v.get_ref()
                ),
            )),
            _ => Ok(value),
        }
    }

    /// A size (`"128M"`, see `config::size`) of at least `min` bytes.
    pub fn size(
        &self,
        field: &Field<String>,
        key: String,
        default: u64,
        min: u64,
    ) -> Result<u64, ConfigError> {
        let Some(v) = field else {
            return Ok(default);
        };
        let bytes = parse_size(v.get_ref()).map_err(|m| self.invalid(v, key.clone(), m))?;
        if bytes < min {
            return Err(self.invalid(
                v,
                key,
                format!(
                    "must be at least {} (it is {:?})",
                    format_size(min),
                    v.get_ref()
                ),
            ));
        }
        Ok(bytes)
    }

    pub fn number(
        &self,
        field: &Field<u32>,
        key: String,
        default: u32,
        min: u32,
    ) -> Result<u32, ConfigError> {
        self.number_in(field, key, default, min..=u32::MAX)
    }

    /// A whole number inside `range` (its end `u32::MAX` = no upper bound).
    pub fn number_in(
        &self,
        field: &Field<u32>,
        key: String,
        default: u32,
        range: RangeInclusive<u32>,
    ) -> Result<u32, ConfigError> {
        let Some(v) = field else {
            return Ok(default);
        };
        let n = *v.get_ref();
        if range.contains(&n) {
            return Ok(n);
        }
        let message = if *range.end() == u32::MAX {
            format!("must be at least {} (it is {n})", range.start())
        } else {
            format!(
                "must be from {} to {} (it is {n})",
                range.start(),
                range.end()
            )
        };
        Err(self.invalid(v, key, message))
    }

    pub fn text(field: &Field<String>, default: &str) -> String {
        field
            .as_ref()
            .map_or_else(|| default.to_string(), |v| v.get_ref().clone())
    }

    /// `""` (and absent) mean "not set".
    pub fn optional(field: &Field<String>) -> Option<String> {
        field
            .as_ref()
            .map(|v| v.get_ref().clone())
            .filter(|s| !s.is_empty())
    }

    pub fn resolve(&self, path: &str) -> PathBuf {
        clean_path(&self.base.join(path))
    }

    /// A URL path setting: `""` = off, otherwise it must start with `/`.
    pub fn url_path(
        &self,
        field: &Field<String>,
        key: String,
        default: Option<&str>,
    ) -> Result<Option<String>, ConfigError> {
        match field {
            None => Ok(default.map(str::to_string)),
            Some(v) if v.get_ref().is_empty() => Ok(None),
            Some(v) if v.get_ref().starts_with('/') => Ok(Some(v.get_ref().clone())),
            Some(v) => Err(self.invalid(
                v,
                key,
                format!(
                    "{:?} must start with \"/\" (or be \"\" for off)",
                    v.get_ref()
                ),
            )),
        }
    }

    /// A non-empty string setting.
    pub fn required_text(
        &self,
        field: &Field<String>,
        key: String,
        default: &str,
    ) -> Result<String, ConfigError> {
        match field {
            Some(v) if v.get_ref().is_empty() => {
                Err(self.invalid(v, key, "must not be empty".into()))
            }
            _ => Ok(Self::text(field, default)),
        }
    }

    pub fn strings(&self, field: &Field<Vec<Spanned<String>>>, default: &[&str]) -> Vec<String> {
        field.as_ref().map_or_else(
            || default.iter().map(|s| s.to_string()).collect(),
            |v| v.get_ref().iter().map(|s| s.get_ref().clone()).collect(),
        )
    }
}
