//! `fastpm import-fpm`: migration from php-fpm. [`ini`] reads php-fpm.conf and the files it
//! includes (php-fpm's INI dialect, every entry with its file:line); [`convert`] maps each
//! php-fpm key to fastpm's TOML, and writes every key it cannot carry over as a `#` comment
//! saying why, so nothing is dropped silently. The output is meant for `fastpm check -c`.

pub mod convert;
pub mod ini;

use std::path::PathBuf;

pub use ini::Origin;

/// Why a php-fpm configuration could not be converted (the command exits 2).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: Origin, message: String },
    #[error("{origin}: {key}: {message}")]
    Value {
        origin: Origin,
        key: String,
        message: String,
    },
    #[error("no php-fpm configuration file given")]
    NoFiles,
}

/// Read `files` (php-fpm.conf first, usually; includes are followed) and return the
/// equivalent fastpm TOML.
pub fn import_files(files: &[PathBuf]) -> Result<String, ImportError> {
    if files.is_empty() {
        return Err(ImportError::NoFiles);
    }
    let doc = ini::read_files(files)?;
    convert::convert(&doc)
}
