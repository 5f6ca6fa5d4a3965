//! Adopting descriptors a parent left open for us by number: a worker's accept-lock memfd after
//! re-exec, and the sockets systemd passes from fd 3 on. Turning a number into an `OwnedFd` is
//! the one unsafe step, so it lives here, behind a check that the number is really open.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Take ownership of inherited descriptor `fd` and make it close-on-exec (so it does not leak
/// further into our own children, e.g. php-cgi).
///
/// The caller must not hand out the same number twice (the `OwnedFd` closes it on drop); numbers
/// that are not open are refused with `EBADF`, as are the standard streams 0–2.
pub fn adopt_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
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
