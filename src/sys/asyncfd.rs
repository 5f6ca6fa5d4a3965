//! Registering an owned descriptor with tokio's reactor (`AsyncFd`): the master's holder waits
//! on held connections and on the pools' links this way (DESIGN.md §8).

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// `fd` in the current runtime's reactor, for reading and writing. Must run inside a runtime.
pub fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: tokio asks that the descriptor be open and keep referring to the same open file
    // description for as long as the AsyncFd lives, and that `as_raw_fd` keep returning it.
    // The AsyncFd owns it (an OwnedFd, moved in): nothing else can close or replace it before
    // the AsyncFd is dropped or gives it back with `into_inner`, and an OwnedFd's number
    // never changes.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
        .map_err(|e| e.into_parts().1)
}
