//! A zero-filled shared memory mapping backed by a memfd.
//!
//! Why a memfd and not a heap allocation: the scoreboard must be readable and writable by worker
//! *processes* (issue 3), which receive the memfd as an inherited descriptor and map it again.
//! Thread workers simply share the one mapping.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;

use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// An owned `MAP_SHARED` mapping. The bytes start zeroed (ftruncate fills with zeros).
pub struct SharedMapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Kept open so the mapping can be handed to a child process by descriptor.
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory; all access to it goes through atomics
// (see scoreboard.rs), so sharing the pointer between threads is sound.
unsafe impl Send for SharedMapping {}
// SAFETY: as above: the mapping is only accessed through atomic types.
unsafe impl Sync for SharedMapping {}

impl SharedMapping {
    /// Create a new anonymous shared mapping of `len` bytes (rounded up to a page by the kernel).
    pub fn create(name: &str, len: usize) -> std::io::Result<Self> {
        let cname = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
        let fd = memfd_create(&cname, MemFdCreateFlag::MFD_CLOEXEC)?;
        nix::unistd::ftruncate(&fd, len as libc::off_t)?;
        Self::map(fd, len)
    }

    /// Map an inherited memfd of `len` bytes (a worker process re-attaching to the scoreboard).
    pub fn map(fd: OwnedFd, len: usize) -> std::io::Result<Self> {
        let size = std::num::NonZeroUsize::new(len.max(1)).expect("len >= 1");
        // SAFETY: we map a file descriptor we own with a length no larger than the file (the
        // creator sized it with ftruncate); the result is checked, and the mapping is unmapped
        // exactly once in Drop.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd.as_fd(),
                0,
            )?
        };
        Ok(Self {
            ptr: ptr.cast(),
            len,
            fd,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// View `count` values of `T` starting at byte `offset`.
    ///
    /// `T` must be a type for which all-zero bytes are a valid value and which is only mutated
    /// through interior atomics (the scoreboard's `#[repr(C)]` structs of atomics).
    pub fn slice_at<T: ZeroValidAtomic>(&self, offset: usize, count: usize) -> &[T] {
        let bytes = count * std::mem::size_of::<T>();
        assert!(offset + bytes <= self.len, "scoreboard view out of bounds");
        assert_eq!(
            offset % std::mem::align_of::<T>(),
            0,
            "misaligned scoreboard view"
        );
        // SAFETY: bounds and alignment are checked above; the mapping lives as long as `self`;
        // `T: ZeroValidAtomic` promises that zeroed memory is a valid `T` and that `T` is only
        // mutated through atomics, so shared references (also across processes) are sound.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset).cast::<T>(), count) }
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; no reference into the mapping can
        // outlive `self` because `slice_at` borrows from `self`.
        unsafe {
            let _ = munmap(self.ptr.cast(), self.len.max(1));
        }
    }
}

/// Marker for `#[repr(C)]` types made only of atomics (and arrays of them), for which zeroed
/// bytes are a valid value.
///
/// # Safety
/// Implement only for types whose every field is an atomic integer or an array of them.
pub unsafe trait ZeroValidAtomic: Sync {}
