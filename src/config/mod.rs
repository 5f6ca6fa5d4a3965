//! Configuration (DESIGN.md §3): the TOML schema, loading with `file:line:column: key: message`
//! errors, defaults and validation, the embedded default config, backlog precedence, and the
//! `fastpm check` rendering.
//!
//! Flow: `load` parses the text (syntax errors), deserializes `raw` (unknown keys, wrong types,
//! every leaf spanned), then `build` applies defaults and parses values and `validate` checks
//! rules between them. The result is the plain `types::Config` the rest of fastpm reads.

mod backlog;
mod broker;
mod build;
mod build_app;
mod build_listen;
mod builder;
mod defaults;
pub mod duration;
mod enums;
mod error;
mod load;
mod locate;
mod logs;
pub mod mode;
mod paths;
mod php;
mod raw;
mod render;
pub mod runtime_dir;
pub mod size;
mod types;
mod validate;

pub use backlog::{effective_backlog, BacklogError, BacklogSource, DEFAULT_BACKLOG};
pub use broker::{parse_broker, BrokerUrl, REDIS_DEFAULT_PORT};
pub use defaults::{
    MAX_BACKLOG, SHUTDOWN_TIMEOUT as DEFAULT_SHUTDOWN_TIMEOUT,
    STATUS_LISTEN as DEFAULT_STATUS_LISTEN,
};
pub use enums::{
    AcceptLock, AppKind, ConfigWord, LogFormat, LogLevel, OverloadPolicy, PhpChildren, PmKind,
    WorkerKind,
};
pub use error::{line_column, ConfigError, ConfigErrorKind};
pub use load::{
    base_dir, load_embedded, load_file, load_str, load_str_with_base, EMBEDDED_DEFAULT,
};
pub use logs::{GlobalLogs, PoolLogs};
pub use paths::clean_path;
pub use php::{find_executable, php_cgi_on_path};
pub use render::render_effective;
pub use runtime_dir::RuntimeDirSource;
pub use types::{
    AppConfig, Config, ConfigSource, GlobalConfig, ListenConfig, OverloadConfig, PhpIni, PoolConfig,
};
