//! Socket calls that nix does not offer the way fastpm needs them: `listen()` with the configured
//! backlog as given, and `getsockopt(TCP_INFO)` on a listening TCP socket.
//!
//! Why not `nix::sys::socket::listen`: its `Backlog::new` refuses values above 4096 with `EINVAL`,
//! while the kernel accepts any value and clamps it to `net.core.somaxconn` (DESIGN.md §1, §7).
//! fastpm passes the operator's number through unchanged and reports the clamp separately.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd};

/// `listen(fd, backlog)` with the number as configured. Values above `i32::MAX` (which the C
/// prototype cannot carry) are passed as `i32::MAX`; the kernel clamps both to somaxconn alike.
/// Calling it again on a listening socket changes that socket's backlog.
pub fn listen(fd: BorrowedFd<'_>, backlog: u32) -> io::Result<()> {
    let backlog = backlog.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: `fd` is a live descriptor borrowed for the duration of the call; listen() takes
    // only integers and touches no memory of ours.
    let rc = unsafe { libc::listen(fd.as_raw_fd(), backlog) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getsockopt(TCP_INFO)`, and how many bytes of it the kernel filled.
fn tcp_info(fd: BorrowedFd<'_>) -> io::Result<(libc::tcp_info, usize)> {
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable, zero-initialised buffer of `len` bytes that outlives the
    // call; the kernel writes at most `len` bytes and stores the written length in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the buffer started zeroed (a valid bit pattern for this plain-integer struct) and
    // the kernel only overwrote a prefix of it with integers.
    Ok((unsafe { info.assume_init() }, len as usize))
}

/// Fail unless the kernel's answer reaches past `field_end` bytes.
fn covers(len: usize, field_end: usize, what: &str) -> io::Result<()> {
    if len < field_end {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("TCP_INFO answered {len} bytes, fewer than the {field_end} that hold {what}"),
        ));
    }
    Ok(())
}

/// The accept queue of a listening TCP socket as `TCP_INFO` reports it:
/// `(tcpi_unacked, tcpi_sacked)` = (connections queued, effective backlog). On a socket that is
/// not listening the same fields mean something else (segments), so callers pass listeners only.
pub fn tcp_info_accept_queue(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let (info, len) = tcp_info(fd)?;
    // The two fields sit well inside the oldest tcp_info layout (Linux 2.6).
    covers(
        len,
        std::mem::offset_of!(libc::tcp_info, tcpi_sacked) + size_of::<u32>(),
        "the accept queue",
    )?;
    Ok((info.tcpi_unacked, info.tcpi_sacked))
}

/// On an accepted TCP socket: milliseconds since its last (for a request sent right after
/// connecting: its first) data arrived — the kernel's own measure of how long the connection
/// waited before we took it (DESIGN.md §7).
pub fn tcp_last_data_recv_ms(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let (info, len) = tcp_info(fd)?;
    covers(
        len,
        std::mem::offset_of!(libc::tcp_info, tcpi_last_data_recv) + size_of::<u32>(),
        "tcpi_last_data_recv",
    )?;
    Ok(info.tcpi_last_data_recv)
}
