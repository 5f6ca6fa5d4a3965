//! Which directory is `runtime_dir` (pure: the environment and the effective uid are inputs).
//!
//! Precedence: `$RUNTIME_DIRECTORY` (set by systemd's `RuntimeDirectory=`; the first entry when
//! it lists several, separated by `:`) > the config's `runtime_dir` > the default. The default
//! is `/run/fastpm` for root and `$XDG_RUNTIME_DIR/fastpm` for anyone else — both in
//! directories only their owner can write, so a local user cannot squat the name.
//!
//! When a non-root fastpm has no `XDG_RUNTIME_DIR` (no login session: containers, CI, cron), the
//! default is `/tmp/fastpm-<uid>` rather than a refusal: `fastpm run` with no config must keep
//! working for a developer. That is safe because the directory itself is checked, not trusted
//! (`master::preflight`): it must not be a symlink, must be owned by fastpm's uid and not
//! writable by group or others, and `/tmp` is sticky, so no one else can rename it. A user who
//! squats the name first gets fastpm to refuse to start (a denial, with the reason), never
//! fastpm's sockets. Environment values that are empty or relative are ignored (the XDG spec
//! says so for `XDG_RUNTIME_DIR`; a relative `RUNTIME_DIRECTORY` is not systemd's).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Where the effective `runtime_dir` came from (what `fastpm check` says beside it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeDirSource {
    /// `$RUNTIME_DIRECTORY`.
    Systemd,
    /// `runtime_dir` in the config file.
    Config,
    /// `/run/fastpm` (fastpm runs as root).
    DefaultRoot,
    /// `$XDG_RUNTIME_DIR/fastpm`.
    DefaultXdg,
    /// `/tmp/fastpm-<uid>` (not root, no `XDG_RUNTIME_DIR`).
    DefaultTmp,
}

impl RuntimeDirSource {
    /// The note `fastpm check` prints beside the value.
    pub fn note(self) -> &'static str {
        match self {
            Self::Systemd => "from $RUNTIME_DIRECTORY (wins over the config)",
            Self::Config => "",
            Self::DefaultRoot => "default for root",
            Self::DefaultXdg => "default: $XDG_RUNTIME_DIR/fastpm",
            Self::DefaultTmp => "default without $XDG_RUNTIME_DIR",
        }
    }
}

/// What the choice depends on (the config build reads them from the process).
#[derive(Clone, Debug, Default)]
pub struct RuntimeDirInputs<'a> {
    /// `$RUNTIME_DIRECTORY`.
    pub runtime_directory: Option<&'a OsStr>,
    /// `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<&'a OsStr>,
    /// fastpm's effective uid.
    pub euid: u32,
}

/// The environment variable systemd sets for `RuntimeDirectory=`.
pub const RUNTIME_DIRECTORY_ENV: &str = "RUNTIME_DIRECTORY";

/// The effective `runtime_dir`: `configured` is the config's value, already resolved against
/// the config's directory (`None` when the file does not set it).
pub fn choose(
    configured: Option<PathBuf>,
    inputs: &RuntimeDirInputs<'_>,
) -> (PathBuf, RuntimeDirSource) {
    if let Some(dir) = inputs
        .runtime_directory
        .and_then(|v| absolute(first_entry(v)))
    {
        return (dir, RuntimeDirSource::Systemd);
    }
    if let Some(dir) = configured {
        return (dir, RuntimeDirSource::Config);
    }
    if inputs.euid == 0 {
        return (PathBuf::from("/run/fastpm"), RuntimeDirSource::DefaultRoot);
    }
    match inputs.xdg_runtime_dir.and_then(absolute) {
        Some(xdg) => (xdg.join("fastpm"), RuntimeDirSource::DefaultXdg),
        None => (
            PathBuf::from(format!("/tmp/fastpm-{}", inputs.euid)),
            RuntimeDirSource::DefaultTmp,
        ),
    }
}

/// `<runtime_dir>/<pool>/`: a php pool's private directory (its php-cgi sockets), made by the
/// master (`master::runtime_dir::pool_dir`). Pool names are letters, digits, `_` and `-`.
pub fn pool_dir(runtime_dir: &Path, pool: &str) -> PathBuf {
    runtime_dir.join(pool)
}

/// `a:b` → `a` (systemd joins several `RuntimeDirectory=` entries with `:`).
fn first_entry(value: &OsStr) -> &OsStr {
    use std::os::unix::ffi::OsStrExt;
    let bytes = value.as_bytes();
    let end = bytes.iter().position(|b| *b == b':').unwrap_or(bytes.len());
    OsStr::from_bytes(&bytes[..end])
}

fn absolute(value: &OsStr) -> Option<PathBuf> {
    let path = Path::new(value);
    path.is_absolute().then(|| super::paths::clean_path(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RuntimeDirSource::*;

    #[test]
    fn runtime_dir_precedence_table() {
        let os = |s: &'static str| Some(OsStr::new(s));
        type Row = (
            Option<&'static OsStr>,
            Option<&'static str>,
            Option<&'static OsStr>,
            u32,
            &'static str,
            RuntimeDirSource,
        );
        let table: &[Row] = &[
            // systemd wins over the config and over any default
            (
                os("/run/fastpm"),
                Some("/srv/rt"),
                None,
                0,
                "/run/fastpm",
                Systemd,
            ),
            (os("/run/a:/run/b"), None, None, 0, "/run/a", Systemd),
            (os("/run/x/"), None, None, 1000, "/run/x", Systemd),
            // an empty or relative RUNTIME_DIRECTORY is not systemd's: ignored
            (os(""), Some("/srv/rt"), None, 0, "/srv/rt", Config),
            (os("fastpm"), None, None, 0, "/run/fastpm", DefaultRoot),
            // the config wins over the defaults
            (
                None,
                Some("/srv/rt"),
                os("/run/user/1000"),
                1000,
                "/srv/rt",
                Config,
            ),
            // defaults by effective uid
            (None, None, None, 0, "/run/fastpm", DefaultRoot),
            (None, None, os("/run/user/0"), 0, "/run/fastpm", DefaultRoot),
            (
                None,
                None,
                os("/run/user/1000"),
                1000,
                "/run/user/1000/fastpm",
                DefaultXdg,
            ),
            (None, None, None, 1000, "/tmp/fastpm-1000", DefaultTmp),
            (None, None, os(""), 33, "/tmp/fastpm-33", DefaultTmp),
            (
                None,
                None,
                os("relative/dir"),
                33,
                "/tmp/fastpm-33",
                DefaultTmp,
            ),
        ];
        for (systemd, configured, xdg, euid, want, source) in table {
            let inputs = RuntimeDirInputs {
                runtime_directory: *systemd,
                xdg_runtime_dir: *xdg,
                euid: *euid,
            };
            let got = choose(configured.map(PathBuf::from), &inputs);
            assert_eq!(
                got,
                (PathBuf::from(want), *source),
                "{systemd:?} {configured:?} {xdg:?} {euid}"
            );
        }
    }
}
