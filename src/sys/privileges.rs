//! Dropping a worker's privileges (`user`/`group` of a pool): the master, running as root,
//! resolves names to ids *before* spawning ([`resolve`]); the child switches with
//! [`drop_privileges`] — in the `pre_exec` hook of [`super::child::ChildSetup`] (between fork and
//! exec, where only async-signal-safe calls are allowed, so it allocates nothing).
//!
//! Order matters: supplementary groups and gid must change while we are still root, then uid;
//! afterwards we check that root cannot be regained (a `setuid(0)` that succeeds means the drop
//! did not take, e.g. only the effective id changed).

use std::ffi::CString;
use std::io;

use nix::unistd::{Gid, Group, Uid, User};

/// The ids a worker runs as, resolved by the master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    /// The primary group (the pool's `group`, or the user's login group).
    pub gid: u32,
    /// Supplementary groups: the user's groups from the group database, so a worker can read
    /// files shared with its user's groups exactly as a login of that user could.
    pub groups: Vec<u32>,
}

/// Why a pool's `user`/`group` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("no user named {0:?}")]
    UnknownUser(String),
    #[error("no group named {0:?}")]
    UnknownGroup(String),
    #[error(
        "group = {0:?} is set without user: set user too (the group alone does not drop root)"
    )]
    GroupWithoutUser(String),
    #[error("user {0:?} has no passwd entry, so it has no login group: set group too")]
    NoLoginGroup(String),
    #[error("cannot look up {name:?}: {cause}")]
    Lookup { name: String, cause: io::Error },
}

/// Resolve a pool's `user` and `group` (names or numeric ids; empty means unset). `Ok(None)`
/// when neither is set: the worker keeps the master's ids.
pub fn resolve(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<Credentials>, PrivilegeError> {
    let user = user.filter(|s| !s.is_empty());
    let group = group.filter(|s| !s.is_empty());
    let Some(user) = user else {
        return match group {
            Some(g) => Err(PrivilegeError::GroupWithoutUser(g.to_string())),
            None => Ok(None),
        };
    };
    let lookup = |cause: nix::Error| PrivilegeError::Lookup {
        name: user.to_string(),
        cause: cause.into(),
    };
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).map_err(lookup)?,
        Err(_) => User::from_name(user).map_err(lookup)?,
    };
    // A numeric uid without a passwd entry is still a valid target (containers often have none).
    let (uid, user_gid, name) = match (found, user.parse::<u32>()) {
        (Some(u), _) => (u.uid.as_raw(), Some(u.gid.as_raw()), Some(u.name)),
        (None, Ok(uid)) => (uid, None, None),
        (None, Err(_)) => return Err(PrivilegeError::UnknownUser(user.to_string())),
    };
    let gid = match group {
        Some(g) => resolve_group(g)?,
        None => match user_gid {
            Some(gid) => gid,
            None => return Err(PrivilegeError::NoLoginGroup(user.to_string())),
        },
    };
    let mut groups = vec![gid];
    if let Some(name) = name {
        let cname = CString::new(name.clone()).map_err(|e| PrivilegeError::Lookup {
            name: name.clone(),
            cause: io::Error::other(e),
        })?;
        let list = nix::unistd::getgrouplist(&cname, Gid::from_raw(gid)).map_err(|cause| {
            PrivilegeError::Lookup {
                name: name.clone(),
                cause: cause.into(),
            }
        })?;
        for g in list {
            if !groups.contains(&g.as_raw()) {
                groups.push(g.as_raw());
            }
        }
    }
    Ok(Some(Credentials { uid, gid, groups }))
}

fn resolve_group(group: &str) -> Result<u32, PrivilegeError> {
    let lookup = |cause: nix::Error| PrivilegeError::Lookup {
        name: group.to_string(),
        cause: cause.into(),
    };
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match Group::from_name(group).map_err(lookup)? {
        Some(g) => Ok(g.gid.as_raw()),
        None => Err(PrivilegeError::UnknownGroup(group.to_string())),
    }
}

/// Switch the calling process to `creds`: `setgroups`, `setgid`, `setuid`, then verify that root
/// cannot be regained. Async-signal-safe (no allocation, no locks): usable in `pre_exec`.
pub fn drop_privileges(creds: &Credentials) -> io::Result<()> {
    // SAFETY: setgroups reads `groups.len()` ids from a live slice; setgid/setuid/getuid/geteuid/
    // getgid/getegid take or return integers. All are async-signal-safe.
    unsafe {
        if libc::setgroups(creds.groups.len(), creds.groups.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setgid(creds.gid) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setuid(creds.uid) != 0 {
            return Err(io::Error::last_os_error());
        }
        let ids_ok = libc::getuid() == creds.uid
            && libc::geteuid() == creds.uid
            && libc::getgid() == creds.gid
            && libc::getegid() == creds.gid;
        if !ids_ok {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        if creds.uid != 0 && (libc::setuid(0) == 0 || (creds.gid != 0 && libc::setgid(0) == 0)) {
            // Root came back: the drop did not stick. Refuse to run the worker.
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
    }
    Ok(())
}

/// A process's real and effective user and group ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
}

/// The calling process's ids. Async-signal-safe.
pub fn current_ids() -> Ids {
    Ids {
        uid: nix::unistd::getuid().as_raw(),
        euid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        egid: nix::unistd::getegid().as_raw(),
    }
}

/// Pure: whether a process with `ids` already runs as `creds` (then there is nothing to drop: a
/// worker process that dropped to the pool's user starting its php-cgi). Supplementary groups
/// are not compared: only root could change them, and root never matches a non-root `creds`.
pub fn running_as(ids: &Ids, creds: &Credentials) -> bool {
    ids.uid == creds.uid && ids.euid == creds.uid && ids.gid == creds.gid && ids.egid == creds.gid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_as_needs_every_id_to_match() {
        let creds = Credentials {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        };
        let nobody = Ids {
            uid: 65534,
            euid: 65534,
            gid: 65534,
            egid: 65534,
        };
        assert!(running_as(&nobody, &creds));
        let root = Ids {
            uid: 0,
            euid: 0,
            gid: 0,
            egid: 0,
        };
        assert!(!running_as(&root, &creds));
        // Only the effective uid dropped (a saved root could come back): not done.
        assert!(!running_as(&Ids { uid: 0, ..nobody }, &creds));
        assert!(!running_as(&Ids { egid: 0, ..nobody }, &creds));
        // Root as root (user = "root"): nothing to do.
        let as_root = Credentials {
            uid: 0,
            gid: 0,
            groups: vec![0],
        };
        assert!(running_as(&root, &as_root));
    }
}
