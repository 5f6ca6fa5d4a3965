//! The runtime directory, made safe before anything is put in it: shared by `fastpm check` and
//! `fastpm run` ([`prepare`]), plus the per-pool private directories the master creates for
//! php-cgi sockets ([`pool_dir`]).
//!
//! Why: fastpm runs as root and puts php-cgi's sockets in `runtime_dir`. Anyone who can rename or
//! create entries there can swap a socket and receive the next requests, so the directory is
//! checked, never trusted:
//!
//! - `runtime_dir` itself must be a real directory (`lstat`: a symlink is refused, whatever it
//!   points to), owned by fastpm's effective uid, and not writable by group or others;
//! - every existing ancestor (of the path with symlinks resolved: `/var/run` → `/run` is fine)
//!   must be owned by root or fastpm and not writable by group or others, unless sticky (`/tmp`):
//!   otherwise its owner could rename `runtime_dir` away and put another in its place;
//! - missing components are created (parents 0755, `runtime_dir` 0700), then checked like
//!   existing ones, so a name someone else created in between is refused, not adopted. Existing
//!   parents are never changed.
//!
//! Paths rather than `openat` descriptors are safe here because of that order: once an
//! ancestor is known to be writable by root or fastpm only, no one else can change what its
//! names point to. Modes and owners are set with `AT_SYMLINK_NOFOLLOW` (`fchmodat`,
//! `fchownat`), so even a lost race cannot redirect a chmod or chown through a link.
//!
//! Dropped-privilege workers: a php pool with `workers = "process"` and `user` runs php-cgi's
//! socket from a worker that is no longer root, so the master gives the pool
//! `<runtime_dir>/<pool>/` (0700, owned by the pool's user) and makes `runtime_dir` searchable
//! (0711: others may pass through to a name they know, never list or create). A worker that could
//! not reach its directory would answer 503 to every request while the master said "ready", so
//! [`prepare`] refuses that configuration up front, naming the directory in the way. The
//! accept lock file needs nothing: the master opens it and passes the descriptor.

use std::fmt;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmodat, FchmodatFlags, Mode};
use nix::unistd::{fchownat, Gid, Uid};

use crate::config::runtime_dir::pool_dir as pool_dir_path;
use crate::config::{AppKind, Config, PoolConfig, WorkerKind};
use crate::sys::privileges::{self, Credentials};

/// Why fastpm refuses (or cannot make) its runtime directory. One line: the configured
/// directory, then the exact path at fault when it is not that directory, then why.
#[derive(Debug, thiserror::Error)]
pub struct RuntimeDirError {
    /// `runtime_dir` as configured (or the pool directory under it).
    pub dir: PathBuf,
    /// The path at fault when it is not `dir` itself (a parent).
    pub at: Option<PathBuf>,
    pub problem: Problem,
}

impl fmt::Display for RuntimeDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "runtime_dir {}: ", self.dir.display())?;
        if let Some(at) = &self.at {
            write!(f, "its parent {} ", at.display())?;
        }
        write!(f, "{}", self.problem)
    }
}

/// What is wrong with a directory.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("is a symlink (to {target}); refusing it: point runtime_dir at a real directory")]
    Symlink { target: String },
    #[error("is not a directory")]
    NotADirectory,
    #[error("is owned by {owner}, not by {expected}; refusing it: remove it or fix its owner")]
    Owner { owner: String, expected: String },
    #[error("is writable by group or others (mode {mode:04o}); refusing it: chmod go-w")]
    Writable { mode: u32 },
    #[error("cannot be created: {0}")]
    Create(io::Error),
    #[error("cannot be inspected: {0}")]
    Inspect(io::Error),
    #[error("cannot set its mode or owner: {0}")]
    Permissions(io::Error),
    #[error("pool {pool}: its user (uid {uid}) cannot reach {blocker} (mode {mode:04o}, owner uid {owner}), so php-cgi could not start: make that directory searchable (chmod o+x) or choose another runtime_dir")]
    Unreachable {
        pool: String,
        uid: u32,
        blocker: PathBuf,
        mode: u32,
        owner: u32,
    },
    #[error("pool {pool}: user/group: {cause}")]
    User { pool: String, cause: String },
}

/// What `lstat` says about one path, reduced to what the policy needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub uid: u32,
    /// Permission bits with setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    Symlink,
    Other,
}

/// Which rules apply to a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `runtime_dir` (or a pool directory): owned by `owner`, writable by its owner only.
    Private { owner: u32 },
    /// A directory above it: root or fastpm's, not writable by others unless sticky.
    Ancestor { euid: u32 },
}

/// Pure: is this entry acceptable in this role? (Symlink targets are filled in by the caller.)
pub fn judge(entry: &Entry, role: Role) -> Result<(), Problem> {
    match entry.kind {
        EntryKind::Symlink => {
            return Err(Problem::Symlink {
                target: String::new(),
            })
        }
        EntryKind::Other => return Err(Problem::NotADirectory),
        EntryKind::Directory => {}
    }
    let group_or_other_write = entry.mode & 0o022 != 0;
    match role {
        Role::Private { owner } => {
            if entry.uid != owner {
                return Err(Problem::Owner {
                    owner: describe_uid(entry.uid),
                    expected: describe_uid(owner),
                });
            }
            if group_or_other_write {
                return Err(Problem::Writable { mode: entry.mode });
            }
        }
        Role::Ancestor { euid } => {
            if entry.uid != 0 && entry.uid != euid {
                return Err(Problem::Owner {
                    owner: describe_uid(entry.uid),
                    expected: format!("root or {}", describe_uid(euid)),
                });
            }
            if group_or_other_write && entry.mode & 0o1000 == 0 {
                return Err(Problem::Writable { mode: entry.mode });
            }
        }
    }
    Ok(())
}

/// Pure: may a process with `creds` pass through (search) a directory with this owner, group
/// and mode?
pub fn can_search(mode: u32, uid: u32, gid: u32, creds: &Credentials) -> bool {
    if creds.uid == 0 {
        return true;
    }
    if creds.uid == uid {
        return mode & 0o100 != 0;
    }
    if creds.gid == gid || creds.groups.contains(&gid) {
        return mode & 0o010 != 0;
    }
    mode & 0o001 != 0
}

/// `uid 65534 (nobody)`.
fn describe_uid(uid: u32) -> String {
    match nix::unistd::User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("uid {uid} ({})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// Pools whose worker processes drop privileges and bind php-cgi's socket themselves, with
/// their credentials.
fn dropping_php_pools(config: &Config) -> Result<Vec<(&PoolConfig, Credentials)>, Problem> {
    let mut out = Vec::new();
    for pool in &config.pools {
        if !needs_pool_dir(pool) || pool.workers != WorkerKind::Process {
            continue;
        }
        let creds = privileges::resolve(pool.user.as_deref(), pool.group.as_deref())
            .map_err(|e| user_problem(pool, e))?;
        if let Some(creds) = creds {
            out.push((pool, creds));
        }
    }
    Ok(out)
}

/// Pools that get a private directory under `runtime_dir` (php: its php-cgi sockets).
pub fn needs_pool_dir(pool: &PoolConfig) -> bool {
    pool.app.kind == AppKind::Php
}

/// Create `runtime_dir` when missing and refuse it when it (or a parent) is unsafe; make it
/// searchable (0711) when worker processes of a php pool drop privileges, and check that they
/// can reach it. `fastpm check` and `fastpm run` both call this (check creates the directory
/// too, so that what it accepts is exactly what run will use).
pub fn prepare(config: &Config) -> Result<(), RuntimeDirError> {
    let dir = &config.global.runtime_dir;
    let error = |at: Option<PathBuf>, problem| RuntimeDirError {
        dir: dir.clone(),
        at,
        problem,
    };
    let dropping = dropping_php_pools(config).map_err(|p| error(None, p))?;
    let mode = if dropping.is_empty() { 0o700 } else { 0o711 };
    let euid = nix::unistd::geteuid().as_raw();
    let real = ensure_private_dir(dir, mode, euid)?;
    for (pool, creds) in &dropping {
        for path in real.ancestors() {
            let meta = std::fs::metadata(path).map_err(|e| error(None, Problem::Inspect(e)))?;
            let mode = meta.mode() & 0o7777;
            if !can_search(mode, meta.uid(), meta.gid(), creds) {
                return Err(error(
                    None,
                    Problem::Unreachable {
                        pool: pool.name.clone(),
                        uid: creds.uid,
                        blocker: path.to_path_buf(),
                        mode,
                        owner: meta.uid(),
                    },
                ));
            }
        }
    }
    // A php pool's directory left by an earlier run: refused here already (exit 2 at check
    // and run alike) when it is a link or someone else's; `pool_dir` creates it at start.
    for pool in config.pools.iter().filter(|p| needs_pool_dir(p)) {
        let pool_dir = pool_dir_path(dir, &pool.name);
        if std::fs::symlink_metadata(&pool_dir).is_err() {
            continue;
        }
        let pool_user = privileges::resolve(pool.user.as_deref(), pool.group.as_deref())
            .map_err(|e| error(None, user_problem(pool, e)))?;
        judge_pool_dir(&pool_dir, euid, pool_user.as_ref()).map_err(|problem| RuntimeDirError {
            dir: pool_dir.clone(),
            at: None,
            problem,
        })?;
    }
    Ok(())
}

fn user_problem(pool: &PoolConfig, e: privileges::PrivilegeError) -> Problem {
    Problem::User {
        pool: pool.name.clone(),
        cause: e.to_string(),
    }
}

/// An existing pool directory: a real directory, private to its owner, who is fastpm or the
/// pool's user (a run with `user`, or with the other worker kind). Anyone else's is refused.
fn judge_pool_dir(dir: &Path, euid: u32, pool_user: Option<&Credentials>) -> Result<(), Problem> {
    let found = std::fs::symlink_metadata(dir)
        .map_err(Problem::Inspect)?
        .uid();
    let owner = if found == euid || pool_user.is_some_and(|c| c.uid == found) {
        found
    } else {
        euid
    };
    judge_path(dir, Role::Private { owner })
}

/// Make `dir` exist as a private directory (see the module doc); returns it with its parents'
/// symlinks resolved. An existing directory keeps its mode, except that the search bits of
/// `mode` are added (never write or read).
fn ensure_private_dir(dir: &Path, mode: u32, euid: u32) -> Result<PathBuf, RuntimeDirError> {
    let error = |at: Option<&Path>, problem| RuntimeDirError {
        dir: dir.to_path_buf(),
        at: at.filter(|p| *p != dir).map(Path::to_path_buf),
        problem,
    };
    // The longest prefix that exists, and the names below it that do not.
    let mut existing = dir;
    let mut missing = Vec::new();
    loop {
        match std::fs::symlink_metadata(existing) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Err(error(None, Problem::Inspect(e)));
                };
                missing.push(name.to_os_string());
                existing = parent;
            }
            Err(e) => return Err(error(Some(existing), Problem::Inspect(e))),
        }
    }
    missing.reverse();
    // `dir` exists: judge it before resolving anything, so a symlink is seen as one.
    let parent = if missing.is_empty() {
        let parent = dir.parent().unwrap_or(Path::new("/"));
        judge_path(dir, Role::Private { owner: euid }).map_err(|p| error(None, p))?;
        parent
    } else {
        existing
    };
    let mut real =
        std::fs::canonicalize(parent).map_err(|e| error(Some(parent), Problem::Inspect(e)))?;
    for ancestor in real.ancestors() {
        judge_path(ancestor, Role::Ancestor { euid }).map_err(|p| error(Some(ancestor), p))?;
    }
    if missing.is_empty() {
        real.push(dir.file_name().unwrap_or_default());
        let current = std::fs::symlink_metadata(&real)
            .map_err(|e| error(None, Problem::Inspect(e)))?
            .mode()
            & 0o7777;
        let wanted = current | (mode & 0o111);
        if wanted != current {
            set_mode(&real, wanted).map_err(|e| error(None, Problem::Permissions(e)))?;
        }
        return Ok(real);
    }
    let last = missing.len() - 1;
    for (i, name) in missing.iter().enumerate() {
        real.push(name);
        let this_mode = if i == last { mode } else { 0o755 };
        let created = match std::fs::DirBuilder::new().mode(0o700).create(&real) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(error(Some(&real), Problem::Create(e))),
        };
        let at = if i == last {
            None
        } else {
            Some(real.as_path())
        };
        let role = if i == last {
            Role::Private { owner: euid }
        } else {
            Role::Ancestor { euid }
        };
        judge_path(&real, role).map_err(|p| error(at, p))?;
        if created {
            // The umask narrowed the mkdir; set the exact mode, never through a link.
            set_mode(&real, this_mode).map_err(|e| error(at, Problem::Permissions(e)))?;
        }
    }
    Ok(real)
}

/// `lstat` + [`judge`], with a symlink's target in the message.
fn judge_path(path: &Path, role: Role) -> Result<(), Problem> {
    let meta = std::fs::symlink_metadata(path).map_err(Problem::Inspect)?;
    let kind = if meta.file_type().is_symlink() {
        EntryKind::Symlink
    } else if meta.is_dir() {
        EntryKind::Directory
    } else {
        EntryKind::Other
    };
    let entry = Entry {
        kind,
        uid: meta.uid(),
        mode: meta.mode() & 0o7777,
    };
    judge(&entry, role).map_err(|problem| match problem {
        Problem::Symlink { .. } => Problem::Symlink {
            target: std::fs::read_link(path)
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".into()),
        },
        other => other,
    })
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fchmodat(
        None,
        path,
        Mode::from_bits_truncate(mode as libc::mode_t),
        FchmodatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// The master's part for one php pool: `<runtime_dir>/<pool>/`, 0700, owned by the pool's
/// user when its worker processes drop privileges (they bind php-cgi's sockets there), else by
/// fastpm. Reused only if it is a real directory owned by fastpm or that user; `runtime_dir`
/// must have passed [`runtime_dir`] already (so no one else can create names in it).
pub fn pool_dir(config: &Config, pool: &PoolConfig) -> Result<PathBuf, RuntimeDirError> {
    let dir = pool_dir_path(&config.global.runtime_dir, &pool.name);
    let error = |problem| RuntimeDirError {
        dir: dir.clone(),
        at: None,
        problem,
    };
    let pool_user = privileges::resolve(pool.user.as_deref(), pool.group.as_deref())
        .map_err(|e| error(user_problem(pool, e)))?;
    let euid = nix::unistd::geteuid().as_raw();
    // Worker processes bind php-cgi's sockets there themselves; thread workers bind them in the
    // master.
    let (uid, gid) = match (&pool_user, pool.workers) {
        (Some(c), WorkerKind::Process) => (c.uid, c.gid),
        _ => (euid, nix::unistd::getegid().as_raw()),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(error(Problem::Create(e))),
    }
    judge_pool_dir(&dir, euid, pool_user.as_ref()).map_err(error)?;
    fchownat(
        None,
        &dir,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| error(Problem::Permissions(e.into())))?;
    set_mode(&dir, 0o700).map_err(|e| error(Problem::Permissions(e)))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(uid: u32, mode: u32) -> Entry {
        Entry {
            kind: EntryKind::Directory,
            uid,
            mode,
        }
    }

    #[test]
    fn judge_table() {
        let private = Role::Private { owner: 0 };
        let ancestor = Role::Ancestor { euid: 1000 };
        let link = Entry {
            kind: EntryKind::Symlink,
            uid: 0,
            mode: 0o777,
        };
        let file = Entry {
            kind: EntryKind::Other,
            uid: 0,
            mode: 0o600,
        };
        // (entry, role, accepted?, what the refusal says)
        let table: &[(Entry, Role, Option<&str>)] = &[
            (dir(0, 0o700), private, None),
            (dir(0, 0o711), private, None),
            (dir(0, 0o755), private, None),
            (
                dir(0, 0o777),
                private,
                Some("writable by group or others (mode 0777)"),
            ),
            (dir(0, 0o770), private, Some("writable by group or others")),
            (dir(0, 0o1777), private, Some("writable by group or others")),
            (dir(65534, 0o700), private, Some("is owned by uid 65534")),
            (link, private, Some("is a symlink")),
            (file, private, Some("is not a directory")),
            (dir(0, 0o755), ancestor, None),
            (dir(1000, 0o700), ancestor, None),
            (dir(0, 0o1777), ancestor, None),
            (dir(0, 0o777), ancestor, Some("writable by group or others")),
            (dir(65534, 0o755), ancestor, Some("not by root or uid 1000")),
            (link, ancestor, Some("is a symlink")),
        ];
        for (entry, role, want) in table {
            let got = judge(entry, *role);
            match (want, got) {
                (None, Ok(())) => {}
                (Some(text), Err(e)) => {
                    assert!(e.to_string().contains(text), "{entry:?} {role:?}: {e}")
                }
                (want, got) => panic!("{entry:?} {role:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn can_search_table() {
        let www = Credentials {
            uid: 33,
            gid: 33,
            groups: vec![33, 4],
        };
        let root = Credentials {
            uid: 0,
            gid: 0,
            groups: vec![0],
        };
        // (mode, owner uid, owner gid, who, may pass?)
        let table: &[(u32, u32, u32, &Credentials, bool)] = &[
            (0o700, 0, 0, &www, false),
            (0o711, 0, 0, &www, true),
            (0o755, 0, 0, &www, true),
            (0o1777, 0, 0, &www, true),
            (0o700, 33, 33, &www, true),
            (0o070, 33, 33, &www, false),
            (0o710, 0, 33, &www, true),
            (0o710, 0, 4, &www, true),
            (0o701, 0, 4, &www, false),
            (0o700, 0, 0, &root, true),
        ];
        for (mode, uid, gid, who, want) in table {
            assert_eq!(
                can_search(*mode, *uid, *gid, who),
                *want,
                "{mode:04o} {uid}:{gid} as {}",
                who.uid
            );
        }
    }
}
