//! The filesystem side of a unix listening socket: what to do with whatever already sits at the
//! path, and the permissions nginx needs to connect (mode, owner, group).
//!
//! An existing socket file is probed with a non-blocking `connect()`: `ECONNREFUSED` means no
//! one listens (a stale file from a crashed server: removed and replaced); success or `EAGAIN`
//! (a live server whose queue is full) means another server answers there (refused, never
//! stolen). Anything that is not a socket is never removed. (The probe's connection to a live
//! server is closed at once; that server accepts it and sees end-of-file, as with any client
//! that gives up.)

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::unistd::{Group, User};

use super::{ListenAddress, ListenError};

/// What [`probe_existing`] found at a socket path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExistingSocket {
    /// Nothing at the path: bind can go ahead.
    Absent,
    /// A socket file no one listens on (left by a server that died).
    Stale,
    /// A server accepts connections there (or its queue is full, which is just as alive).
    Live,
}

/// Classify what is at `path` (an error for a non-socket or when it cannot be checked).
pub fn probe_existing(address: &ListenAddress, path: &Path) -> Result<ExistingSocket, ListenError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ExistingSocket::Absent),
        Err(cause) => return Err(check_error(address, path, cause)),
    };
    if !metadata.file_type().is_socket() {
        return Err(ListenError::NotASocket {
            address: address.clone(),
            path: path.to_path_buf(),
        });
    }
    let target = UnixAddr::new(path).map_err(|e| check_error(address, path, e.into()))?;
    let probe = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| check_error(address, path, e.into()))?;
    match connect(std::os::fd::AsRawFd::as_raw_fd(&probe), &target) {
        Ok(()) | Err(Errno::EAGAIN) => Ok(ExistingSocket::Live),
        Err(Errno::ECONNREFUSED) => Ok(ExistingSocket::Stale),
        Err(e) => Err(check_error(address, path, e.into())),
    }
}

fn check_error(address: &ListenAddress, path: &Path, cause: io::Error) -> ListenError {
    ListenError::CheckExisting {
        address: address.clone(),
        path: path.to_path_buf(),
        cause,
    }
}

/// Make the path free for `bind()`: nothing there, or a stale socket that is removed.
pub fn clear_for_bind(address: &ListenAddress, path: &Path) -> Result<(), ListenError> {
    match probe_existing(address, path)? {
        ExistingSocket::Absent => Ok(()),
        ExistingSocket::Live => Err(ListenError::InUse {
            address: address.clone(),
            path: path.to_path_buf(),
        }),
        ExistingSocket::Stale => {
            tracing::info!(path = %path.display(), "replacing stale unix socket file (no server answers on it)");
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(cause) => Err(ListenError::RemoveStale {
                    address: address.clone(),
                    path: path.to_path_buf(),
                    cause,
                }),
            }
        }
    }
}

/// Set the socket file's mode, then its owner and group (names resolved through the user
/// database; an all-digit name that is not a user/group name is taken as a numeric id).
///
/// Never through a link, and only on the socket just bound: the path is opened once with
/// `O_PATH | O_NOFOLLOW` (a symlink put there after `bind()` fails with `ELOOP`), the opened
/// inode must be a socket owned by fastpm's effective uid (what `bind()` created; a file someone
/// else swapped in is neither), and mode and owner are then applied to that very inode through
/// `/proc/self/fd/N`, so a rename between the check and the change cannot redirect them.
pub fn apply_permissions(
    address: &ListenAddress,
    path: &Path,
    mode: u32,
    owner: Option<&str>,
    group: Option<&str>,
) -> Result<(), ListenError> {
    let chmod_error = |cause| ListenError::Chmod {
        address: address.clone(),
        mode,
        cause,
    };
    let bound = open_bound_socket(path).map_err(chmod_error)?;
    let inode = PathBuf::from(format!("/proc/self/fd/{}", bound.as_raw_fd()));
    std::fs::set_permissions(&inode, std::fs::Permissions::from_mode(mode)).map_err(chmod_error)?;
    let uid = owner.map(|name| resolve_user(address, name)).transpose()?;
    let gid = group.map(|name| resolve_group(address, name)).transpose()?;
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    std::os::unix::fs::chown(&inode, uid, gid).map_err(|cause| ListenError::Chown {
        address: address.clone(),
        cause,
    })
}

/// The socket file at `path`, opened without following a link, checked to be a socket owned by
/// fastpm's effective uid. Change it through `/proc/self/fd/N` of the file returned.
pub fn open_bound_socket(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // With O_PATH, O_NOFOLLOW opens a symlink itself (no ELOOP): the type check refuses it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    let euid = nix::unistd::geteuid().as_raw();
    let kind = meta.file_type();
    if !kind.is_socket() || meta.uid() != euid {
        let what = if kind.is_symlink() {
            "a symlink"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a socket"
        };
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is no longer the socket fastpm bound ({what}, owned by uid {}); refusing to change it",
                path.display(),
                meta.uid()
            ),
        ));
    }
    Ok(file)
}

fn resolve_user(address: &ListenAddress, name: &str) -> Result<u32, ListenError> {
    match User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => numeric_id(name).ok_or_else(|| ListenError::UnknownUser {
            address: address.clone(),
            user: name.to_string(),
        }),
        Err(e) => Err(lookup_error(address, name, e)),
    }
}

fn resolve_group(address: &ListenAddress, name: &str) -> Result<u32, ListenError> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => numeric_id(name).ok_or_else(|| ListenError::UnknownGroup {
            address: address.clone(),
            group: name.to_string(),
        }),
        Err(e) => Err(lookup_error(address, name, e)),
    }
}

fn lookup_error(address: &ListenAddress, name: &str, e: Errno) -> ListenError {
    ListenError::Lookup {
        address: address.clone(),
        name: name.to_string(),
        cause: e.into(),
    }
}

/// `"33"` → 33; a name with anything but digits → None.
fn numeric_id(name: &str) -> Option<u32> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::numeric_id;

    #[test]
    fn numeric_ids_are_digits_only() {
        let table: &[(&str, Option<u32>)] = &[
            ("33", Some(33)),
            ("0", Some(0)),
            ("", None),
            ("www-data", None),
            ("-1", None),
            ("+5", None),
            ("99999999999", None),
        ];
        for (input, want) in table {
            assert_eq!(numeric_id(input), *want, "input {input:?}");
        }
    }
}
