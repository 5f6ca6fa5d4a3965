//! `[pool.NAME.app]`: kind, document root (resolved), php-cgi, extensions, the `ini` /
//! `env` maps (values may be strings, numbers or booleans), and the held-request limits
//! (`history`, `hold_timeout`, `max_held`, DESIGN.md §8).

use std::collections::BTreeMap;

use super::builder::{Builder, Keys};
use super::defaults;
use super::enums::AppKind;
use super::error::{ConfigError, ConfigErrorKind};
use super::locate::{key_segment, key_span};
use super::raw::RawApp;
use super::types::{AppConfig, PhpIni};

pub(crate) fn build_app(raw: &RawApp, b: &Builder, keys: &Keys) -> Result<AppConfig, ConfigError> {
    let kind = b.word(&raw.kind, keys.key("kind"), AppKind::Php)?;
    let document_root = Builder::text(&raw.document_root, defaults::DOCUMENT_ROOT);
    let php_cgi = Builder::text(&raw.php_cgi, defaults::PHP_CGI);
    let php_children = b.word(
        &raw.php_children,
        keys.key("php_children"),
        defaults::PHP_CHILDREN,
    )?;
    let php_ini = match Builder::text(&raw.php_ini, "").as_str() {
        "" => PhpIni::Search,
        "none" => PhpIni::None,
        path => PhpIni::Path(b.resolve(path)),
    };
    let limit_extensions = b.strings(&raw.limit_extensions, defaults::LIMIT_EXTENSIONS);
    if let Some(list) = &raw.limit_extensions {
        for (i, ext) in list.get_ref().iter().enumerate() {
            let text = ext.get_ref();
            if text.len() < 2 || !text.starts_with('.') || text[1..].contains(['.', '/']) {
                let message = format!(
                    "{text:?} is not an extension: expected a dot and a name, e.g. \".php\""
                );
                return Err(b.invalid(
                    ext,
                    format!("{}[{i}]", keys.key("limit_extensions")),
                    message,
                ));
            }
        }
    }
    Ok(AppConfig {
        kind,
        document_root: b.resolve(&document_root),
        php_cgi,
        php_children,
        php_ini,
        limit_extensions,
        ini: string_map(raw.ini.as_ref(), b, keys, "ini")?,
        env: string_map(raw.env.as_ref(), b, keys, "env")?,
        clear_env: raw.clear_env.as_ref().is_none_or(|v| *v.get_ref()),
        command: b.strings(&raw.command, &[]),
        history: b.number_in(
            &raw.history,
            keys.key("history"),
            defaults::HISTORY,
            0..=defaults::MAX_HISTORY,
        )?,
        hold_timeout: b.duration_in(
            &raw.hold_timeout,
            keys.key("hold_timeout"),
            defaults::HOLD_TIMEOUT,
            defaults::MIN_HOLD_TIMEOUT..=defaults::MAX_HOLD_TIMEOUT,
        )?,
        max_held: b.number(&raw.max_held, keys.key("max_held"), defaults::MAX_HELD, 1)?,
    })
}

/// `ini`/`env`: names must be non-empty without `=` or NUL; values may be strings, numbers or
/// booleans (written as php.ini does: `1`/`0` for booleans).
fn string_map(
    table: Option<&toml::Table>,
    b: &Builder,
    keys: &Keys,
    field: &str,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(table) = table else { return Ok(out) };
    let prefix: Vec<&str> = keys.0.split('.').chain([field]).collect();
    for (name, value) in table {
        let key = format!("{}.{}", keys.key(field), key_segment(name));
        let mut path = prefix.clone();
        path.push(name);
        let fail = |kind, message: String| {
            b.site
                .at(key_span(b.doc, &path), key.clone(), kind, message)
        };
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(fail(
                ConfigErrorKind::InvalidValue,
                format!("{name:?} is not a valid name (empty, or contains '=' or NUL)"),
            ));
        }
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(flag) => if *flag { "1" } else { "0" }.to_string(),
            other => {
                return Err(fail(
                    ConfigErrorKind::WrongType,
                    format!(
                        "invalid type: {}, expected a string, number or boolean",
                        other.type_str()
                    ),
                ));
            }
        };
        if text.contains('\0') {
            return Err(fail(
                ConfigErrorKind::InvalidValue,
                "value contains a NUL byte".into(),
            ));
        }
        out.insert(name.clone(), text);
    }
    Ok(out)
}
