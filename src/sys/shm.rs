//! POSIX shared memory objects: `shm_open`, `fstat`, `posix_fallocate`,
//! `fchmod`, `shm_unlink`, and mapping through memmap2.
//!
//! Names passed here are already validated by the segment layer (no `/`, no
//! NUL); this module adds the leading `/` that `shm_open` wants.

use std::fs::File;
use std::os::fd::OwnedFd;

use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

fn path(name: &str) -> String {
    format!("/{name}")
}

/// Why [`create`] failed, and at which step: a full `/dev/shm` must be told
/// apart from a taken name.
#[derive(Debug)]
pub enum CreateError {
    /// `shm_open(O_CREAT | O_EXCL)` failed.
    Open(Errno),
    /// The object was created but could not be given its size or mode; it has
    /// been unlinked again.
    Setup(Errno),
}

/// Creates a new shared memory object of exactly `len` bytes, with permission
/// bits `mode` (not masked by the umask). Fails with `EEXIST` if the name is
/// taken.
///
/// The space is reserved with `posix_fallocate`, so a full `/dev/shm` fails
/// here with `ENOSPC` rather than with `SIGBUS` on first touch.
pub fn create(name: &str, mode: u32, len: usize) -> Result<File, CreateError> {
    let path = path(name);
    let fd = nix::sys::mman::shm_open(
        path.as_str(),
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(CreateError::Open)?;
    let setup = || -> Result<(), Errno> {
        // The umask narrowed the mode given to shm_open; set it exactly.
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode))?;
        let len = libc::off_t::try_from(len).map_err(|_| Errno::EFBIG)?;
        nix::fcntl::posix_fallocate(&fd, 0, len)
    };
    if let Err(e) = setup() {
        // Leave no half-made object behind under a name someone may wait on.
        let _ = nix::sys::mman::shm_unlink(path.as_str());
        return Err(CreateError::Setup(e));
    }
    Ok(File::from(fd))
}

/// Opens an existing shared memory object for reading and writing.
pub fn open(name: &str) -> Result<File, Errno> {
    let fd: OwnedFd = nix::sys::mman::shm_open(path(name).as_str(), OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
    Ok(File::from(fd))
}

/// The object's current size in bytes, as the kernel reports it.
pub fn size(file: &File) -> std::io::Result<u64> {
    // std's metadata() is fstat(2) on the descriptor.
    Ok(file.metadata()?.len())
}

/// Removes the name. Mappings that are open keep working.
pub fn unlink(name: &str) -> Result<(), Errno> {
    nix::sys::mman::shm_unlink(path(name).as_str())
}

/// Maps the first `len` bytes of `file` shared and read-write.
///
/// The caller must not map more than [`size`] reported: touching a page past
/// the end of the object raises `SIGBUS`.
pub fn map(file: &File, len: usize) -> std::io::Result<MmapRaw> {
    MmapOptions::new().len(len).map_raw(file)
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}
