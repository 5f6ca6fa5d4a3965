//! Adopting descriptors a parent left open for us by number: a worker's accept-lock memfd after
//! re-exec, and the sockets systemd passes from fd 3 on. Turning a number into an `OwnedFd` is
//! the one unsafe step, so it lives here, behind a check that the number is really open.
//!
//! And keeping what the master inherited but does not adopt out of its children: systemd passes
//! every socket of the unit (also those no pool names), a shell may leak a descriptor. The
//! master marks all of them close-on-exec at start ([`close_inherited_on_exec`]); what a child
//! must have it gets explicitly (`sys::child::ChildSetup::inherit`).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The first descriptor that is not a standard stream.
const FIRST_INHERITED: RawFd = 3;

/// Pure: which of the `open` descriptors a process must mark close-on-exec so that none it
/// inherited reaches its own children: every one past the standard streams.
pub fn inherited_descriptors(open: &[RawFd]) -> Vec<RawFd> {
    open.iter()
        .copied()
        .filter(|&fd| fd >= FIRST_INHERITED)
        .collect()
}

/// Mark every descriptor past the standard streams close-on-exec (those already marked stay
/// so); how many were open and inheritable before. Call it once at start, before any child is
/// spawned: fastpm's own descriptors are close-on-exec already, so this only catches
/// inherited ones.
pub fn close_inherited_on_exec() -> io::Result<usize> {
    // Read the list first: the directory handle is itself a descriptor (close-on-exec, and
    // closed again before the loop).
    let mut open = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(fd) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            open.push(fd);
        }
    }
    let mut marked = 0;
    for fd in inherited_descriptors(&open) {
        // SAFETY: F_GETFD/F_SETFD take and return integers and touch no memory; a number that
        // was closed meanwhile (the directory handle) only gives EBADF, which is skipped.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 || flags & libc::FD_CLOEXEC != 0 {
            continue;
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        marked += 1;
    }
    Ok(marked)
}

/// Take ownership of inherited descriptor `fd` and make it close-on-exec (so it does not leak
/// further into our own children, e.g. php-cgi).
///
/// The caller must not hand out the same number twice (the `OwnedFd` closes it on drop); numbers
/// that are not open are refused with `EBADF`, as are the standard streams 0–2.
pub fn adopt_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < FIRST_INHERITED {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is a standard stream, not an inherited socket or lock"),
        ));
    }
    // SAFETY: F_GETFD/F_SETFD take and return integers and touch no memory; an invalid number
    // only gives EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "inherited descriptor {fd} is not open: {}",
                io::Error::last_os_error()
            ),
        ));
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked above) and, per this function's contract, was
    // passed to this process for it to own; nothing else in the process closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_descriptor_past_the_standard_streams_is_inherited() {
        assert_eq!(inherited_descriptors(&[0, 1, 2, 3, 7, 4]), [3, 7, 4]);
        assert!(inherited_descriptors(&[0, 1, 2]).is_empty());
    }
}
