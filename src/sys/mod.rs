//! The only home of FFI in the crate.
//!
//! Every `unsafe` call into libc, the kernel or glibc lives in this module and
//! carries a `// SAFETY:` comment. The layers above (`raw`, `segment`, the named
//! objects) call the small, typed functions exported here.
//!
//! - [`futex`]: shared (never `FUTEX_PRIVATE_FLAG`) futex wait and wake with an
//!   absolute `CLOCK_MONOTONIC` deadline.
//! - [`time`]: that deadline.
//! - [`pthread`]: the robust, process-shared pthread mutex.
//! - [`shm`]: `shm_open`, `fstat`, `posix_fallocate`, `fchmod`, `shm_unlink`,
//!   and mapping through memmap2.
//! - [`proc`]: process facts (pid, tid, liveness, CPU affinity).
//! - [`socket`]: stream sockets for `Connection` (frames, `SCM_RIGHTS`).
//! - `net` (the `connection` feature): listening and connecting by address.
//! - [`thread`]: the calling thread's identity, cached without a syscall.
//! - [`child`]: fork, `_exit`, the parent-death signal, `atexit`, waiting
//!   on a child with a deadline.

pub(crate) mod child;
pub(crate) mod futex;
#[cfg(feature = "connection")]
pub(crate) mod net;
pub(crate) mod proc;
pub(crate) mod pthread;
pub(crate) mod shm;
pub(crate) mod socket;
pub(crate) mod thread;
pub(crate) mod time;

/// Reports a return code that the platform documents as impossible for the way
/// the crate calls `call`. Reaching it means memory was corrupted or the crate
/// has a bug, so continuing could only make things worse.
#[cold]
#[inline(never)]
pub(crate) fn fail(call: &str, code: i32) -> ! {
    panic!(
        "shmsync: {call} returned the unexpected code {code} ({}); this is a bug or memory corruption",
        nix::errno::Errno::from_raw(code).desc()
    )
}
