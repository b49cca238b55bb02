//! POSIX shared memory objects: `shm_open`, `fstat`, `ftruncate`,
//! `posix_fallocate`, `fchmod`, `shm_unlink`, and mapping through memmap2.
//!
//! Names passed here are already validated by the segment layer (no `/`, no
//! NUL); this module adds the leading `/` that `shm_open` wants. glibc keeps
//! these objects as files in `/dev/shm`, which is where [`DIR`] points.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// The directory glibc's `shm_open` keeps its objects in.
pub const DIR: &str = "/dev/shm";

fn path(name: &str) -> String {
    format!("/{name}")
}

/// Why [`create`] failed, and at which step: a full `/dev/shm` must be told
/// apart from a taken name.
#[derive(Debug)]
pub enum CreateError {
    /// `shm_open(O_CREAT | O_EXCL)` failed.
    Open(Errno),
    /// `fchmod` failed; the object has been unlinked again.
    Chmod(Errno),
    /// `ftruncate` failed; the object has been unlinked again.
    Size(Errno),
}

/// Creates a new shared memory object of `len` bytes (not yet allocated:
/// see [`allocate`]), with permission bits `mode` set exactly (not masked by
/// the umask). Fails with `EEXIST` if the name is taken.
///
/// The size is set at once, so an opener can map and read the header while
/// the creator allocates the rest; nothing but the first page is touched
/// before [`allocate`] succeeds.
pub fn create(name: &str, mode: u32, len: usize) -> Result<File, CreateError> {
    let path = path(name);
    let fd = nix::sys::mman::shm_open(
        path.as_str(),
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(CreateError::Open)?;
    let undo = |e| {
        // Leave no half-made object behind under a name someone may wait on.
        let _ = nix::sys::mman::shm_unlink(path.as_str());
        e
    };
    // The umask narrowed the mode given to shm_open; set it exactly.
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(|e| undo(CreateError::Chmod(e)))?;
    let size = libc::off_t::try_from(len).map_err(|_| undo(CreateError::Size(Errno::EFBIG)))?;
    nix::unistd::ftruncate(&fd, size).map_err(|e| undo(CreateError::Size(e)))?;
    Ok(File::from(fd))
}

/// Reserves the object's first `len` bytes with `posix_fallocate`, so a full
/// `/dev/shm` fails here with `ENOSPC` rather than with `SIGBUS` on first
/// touch. Retried on `EINTR`, which a large allocation can get.
pub fn allocate(file: &File, len: usize) -> Result<(), Errno> {
    let len = libc::off_t::try_from(len).map_err(|_| Errno::EFBIG)?;
    loop {
        match nix::fcntl::posix_fallocate(file.as_fd(), 0, len) {
            Err(Errno::EINTR) => continue,
            done => return done,
        }
    }
}

/// Opens an existing shared memory object for reading and writing.
pub fn open(name: &str) -> Result<File, Errno> {
    let fd: OwnedFd = nix::sys::mman::shm_open(path(name).as_str(), OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
    Ok(File::from(fd))
}

/// What `fstat` says about an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Its size in bytes.
    pub size: u64,
    /// Bytes of storage allocated to it (`st_blocks` × 512).
    pub allocated: u64,
    /// The owner's uid.
    pub uid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Device and inode: the object's identity, whatever its name.
    pub dev: u64,
    /// See `dev`.
    pub ino: u64,
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Stat {
        Stat {
            size: meta.len(),
            allocated: meta.blocks().saturating_mul(512),
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// `fstat` of an open object.
pub fn stat(file: &File) -> std::io::Result<Stat> {
    // std's metadata() is fstat(2) on the descriptor.
    Ok(Stat::of(&file.metadata()?))
}

/// `stat` of the object called `name`, without opening it (no permission on
/// the object itself is needed).
pub fn stat_name(name: &str) -> std::io::Result<Stat> {
    Ok(Stat::of(&std::fs::metadata(format!("{DIR}/{name}"))?))
}

/// The caller's effective uid.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Renames object `from` to `to`, atomically, failing with `EEXIST` rather
/// than replacing an object already called `to`.
pub fn rename_no_replace(from: &str, to: &str) -> Result<(), Errno> {
    let (from, to) = (format!("{DIR}/{from}"), format!("{DIR}/{to}"));
    let cwd = nix::fcntl::AT_FDCWD;
    nix::fcntl::renameat2(cwd, from.as_str(), cwd, to.as_str(), nix::fcntl::RenameFlags::RENAME_NOREPLACE)
}

/// Removes the name. Mappings that are open keep working.
pub fn unlink(name: &str) -> Result<(), Errno> {
    nix::sys::mman::shm_unlink(path(name).as_str())
}

/// Maps the first `len` bytes of `file` shared and read-write.
///
/// The caller must not map more than [`stat`] reported: touching a page past
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

/// Opens an existing object read-only, for the inspector: it never blocks
/// (`O_NONBLOCK`, in case a FIFO took the name) and never follows a symlink
/// (glibc's `shm_open` adds `O_NOFOLLOW`; so do we, to be sure).
pub fn open_read_only(name: &str) -> Result<File, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
    let fd: OwnedFd = nix::sys::mman::shm_open(path(name).as_str(), flags, Mode::empty())?;
    Ok(File::from(fd))
}

/// Maps the first `len` bytes of `file` shared and read-only (`PROT_READ`):
/// whoever holds this mapping cannot change a byte of the object.
///
/// As for [`map`], `len` must not exceed what [`stat`] reported; and since
/// a read of a hole in a sparse file makes tmpfs allocate a page (`SIGBUS`
/// on a full `/dev/shm`), map only what [`first_hole`] says is allocated.
pub fn map_read_only(file: &File, len: usize) -> std::io::Result<MmapRaw> {
    MmapOptions::new().len(len).map_raw_read_only(file)
}

/// Where the first hole (unallocated stretch) of `file` begins; its size if
/// it has none. tmpfs answers `SEEK_HOLE` exactly.
pub fn first_hole(file: &File) -> Result<u64, Errno> {
    let at = nix::unistd::lseek(file.as_fd(), 0, nix::unistd::Whence::SeekHole)?;
    Ok(u64::try_from(at).unwrap_or(0))
}

/// An exclusive lease (`F_SETLEASE`, `F_WRLCK`) on an object: the kernel
/// grants it only while no other open file description of the object
/// exists, and a mapping keeps its file description alive after the
/// descriptor is closed. So holding one proves that no process, in any pid
/// namespace, has the object open or mapped. Released on drop.
///
/// An `open` of the object by anyone while the lease is held blocks in the
/// kernel until it is released (the "lease break"); [`Lease::is_breaking`]
/// tells that it happened. The break's signal goes to nobody (the owner is
/// cleared), and to `SIGURG`, ignored by default, in the instant before.
pub struct Lease {
    file: File,
}

/// `F_SETSIG` from `<asm-generic/fcntl.h>` (10 on every Linux
/// architecture); the libc crate declares it for musl only.
const F_SETSIG: libc::c_int = 10;

impl Lease {
    /// Opens `name` read-only and takes the lease. `EAGAIN`: someone else
    /// has it open or mapped. `EINVAL`: leases are off or unsupported here;
    /// `EACCES`/`EPERM`: the caller neither owns the object nor has
    /// `CAP_LEASE`.
    pub fn take(name: &str) -> Result<Lease, Errno> {
        let file = open_read_only(name)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: fcntl on a descriptor we own, with integer arguments only:
        // F_SETSIG picks the break signal (SIGURG: ignored unless handled),
        // set first so that no instant is left where a break sends SIGIO,
        // whose default action would end the process.
        if unsafe { libc::fcntl(fd, F_SETSIG, libc::SIGURG) } == -1 {
            return Err(Errno::last());
        }
        // SAFETY: as above; F_WRLCK asks for the exclusive lease.
        if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) } == -1 {
            return Err(Errno::last());
        }
        let lease = Lease { file };
        // SAFETY: as above; owner 0 means a break signals no process.
        unsafe { libc::fcntl(fd, libc::F_SETOWN, 0) };
        Ok(lease)
    }

    /// The leased object's `fstat`.
    pub fn stat(&self) -> std::io::Result<Stat> {
        stat(&self.file)
    }

    /// Whether someone began to open the object since the lease was taken
    /// (the kernel then reports the lease type it is breaking to).
    pub fn is_breaking(&self) -> bool {
        // SAFETY: fcntl on our own descriptor, no pointer arguments.
        let now = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&self.file), libc::F_GETLEASE) };
        now != libc::F_WRLCK
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // SAFETY: fcntl on our own descriptor, no pointer arguments. Closing
        // the descriptor would release the lease too; this is explicit.
        unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&self.file), libc::F_SETLEASE, libc::F_UNLCK) };
    }
}
