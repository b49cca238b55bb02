//! The robust, process-shared pthread mutex.
//!
//! glibc's robust mutexes are the only owner-death detection Linux offers: each
//! thread registers a robust list with the kernel, and when a thread exits (or
//! its process is killed) holding a robust mutex, the kernel marks the lock
//! word `FUTEX_OWNER_DIED` and wakes a waiter, whose lock call then returns
//! `EOWNERDEAD`.
//!
//! Every function takes a raw `*mut pthread_mutex_t`, because the mutex lives
//! in shared memory that other processes write concurrently; Rust references
//! to it would assert an exclusivity that does not hold.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicI32, Ordering};

use super::time::Deadline;

/// What a lock attempt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// The caller now holds the mutex.
    Acquired,
    /// The caller now holds the mutex, and the previous owner died holding
    /// it. The mutex has already been made consistent again.
    OwnerDied,
    /// The mutex is held by someone else (try) or the deadline passed (timed).
    WouldBlock,
    /// The calling thread already holds this non-recursive mutex.
    Deadlock,
}

/// The kind of mutex to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Locking twice on one thread reports [`Acquire::Deadlock`] instead of
    /// hanging (`PTHREAD_MUTEX_ERRORCHECK`; same cost as a normal robust mutex,
    /// since every robust mutex takes glibc's slow "full" path).
    ErrorCheck,
    /// Nests on one thread (`PTHREAD_MUTEX_RECURSIVE`).
    Recursive,
}

/// Destroys the attribute object on every path out of [`init`].
struct AttrGuard(MaybeUninit<libc::pthread_mutexattr_t>);

impl AttrGuard {
    fn as_mut_ptr(&mut self) -> *mut libc::pthread_mutexattr_t {
        self.0.as_mut_ptr()
    }
}

impl Drop for AttrGuard {
    fn drop(&mut self) {
        // SAFETY: an AttrGuard is only built after pthread_mutexattr_init
        // succeeded, so the attribute object is initialised, and it is destroyed
        // exactly once, here.
        unsafe { libc::pthread_mutexattr_destroy(self.0.as_mut_ptr()) };
    }
}

fn check(call: &str, rc: i32) {
    if rc != 0 {
        super::fail(call, rc);
    }
}

/// Initialises a robust, process-shared mutex of `kind` at `mutex`.
///
/// # Safety
/// `mutex` must be valid for writes of a `pthread_mutex_t`, suitably aligned,
/// and no thread in any process may use it until this returns.
pub unsafe fn init(mutex: *mut libc::pthread_mutex_t, kind: Kind) {
    let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is writable storage for an attribute object.
    check("pthread_mutexattr_init", unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) });
    let mut attr = AttrGuard(attr);
    let ty = match kind {
        Kind::ErrorCheck => libc::PTHREAD_MUTEX_ERRORCHECK,
        Kind::Recursive => libc::PTHREAD_MUTEX_RECURSIVE,
    };
    // SAFETY: `attr` was initialised above and is destroyed by its guard;
    // the values passed here and below are the documented constants.
    check("pthread_mutexattr_settype", unsafe { libc::pthread_mutexattr_settype(attr.as_mut_ptr(), ty) });
    // SAFETY: as above.
    check("pthread_mutexattr_setpshared", unsafe {
        libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED)
    });
    // SAFETY: as above.
    check("pthread_mutexattr_setrobust", unsafe {
        libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST)
    });
    // SAFETY: the caller guarantees `mutex` is valid, aligned and unused;
    // `attr` is initialised.
    check("pthread_mutex_init", unsafe { libc::pthread_mutex_init(mutex, attr.as_mut_ptr()) });
}

/// Turns a lock call's return code into an [`Acquire`], making a mutex whose
/// owner died consistent at once, so it is never left `ENOTRECOVERABLE`.
///
/// # Safety
/// `mutex` must point to a mutex initialised by [`init`], in live memory.
#[inline]
unsafe fn outcome(call: &str, mutex: *mut libc::pthread_mutex_t, rc: i32) -> Acquire {
    match rc {
        0 => Acquire::Acquired,
        libc::EOWNERDEAD => {
            // SAFETY: the caller holds the mutex (EOWNERDEAD means it was
            // acquired), which is what pthread_mutex_consistent requires.
            check("pthread_mutex_consistent", unsafe { libc::pthread_mutex_consistent(mutex) });
            Acquire::OwnerDied
        }
        libc::EBUSY | libc::ETIMEDOUT => Acquire::WouldBlock,
        libc::EDEADLK => Acquire::Deadlock,
        _ => super::fail(call, rc),
    }
}

/// Blocks until the caller holds the mutex.
///
/// # Safety
/// `mutex` must point to a mutex initialised by [`init`], in memory that stays
/// mapped for as long as the caller holds it.
#[inline]
pub unsafe fn lock(mutex: *mut libc::pthread_mutex_t) -> Acquire {
    // SAFETY: the caller guarantees `mutex` is an initialised, mapped mutex.
    let rc = unsafe { libc::pthread_mutex_lock(mutex) };
    // SAFETY: as above.
    unsafe { outcome("pthread_mutex_lock", mutex, rc) }
}

/// Takes the mutex if it is free, without blocking.
///
/// # Safety
/// As for [`lock`].
#[inline]
pub unsafe fn try_lock(mutex: *mut libc::pthread_mutex_t) -> Acquire {
    // SAFETY: the caller guarantees `mutex` is an initialised, mapped mutex.
    let rc = unsafe { libc::pthread_mutex_trylock(mutex) };
    // SAFETY: as above.
    unsafe { outcome("pthread_mutex_trylock", mutex, rc) }
}

#[cfg(target_env = "gnu")]
extern "C" {
    // glibc >= 2.30. The libc crate does not declare it yet; it is the only way
    // to give a robust mutex a CLOCK_MONOTONIC deadline, which every other wait
    // in the crate uses.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clockid: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// Takes the mutex, waiting at most until `deadline`.
///
/// # Safety
/// As for [`lock`].
pub unsafe fn lock_until(mutex: *mut libc::pthread_mutex_t, deadline: &Deadline) -> Acquire {
    #[cfg(target_env = "gnu")]
    // SAFETY: the caller guarantees `mutex` is initialised and mapped; the
    // deadline is a normalised CLOCK_MONOTONIC timespec that outlives the call.
    let rc = unsafe { pthread_mutex_clocklock(mutex, libc::CLOCK_MONOTONIC, deadline.as_timespec()) };
    #[cfg(not(target_env = "gnu"))]
    // SAFETY: as above; without clocklock, the monotonic deadline is turned
    // into a wall-clock one at the start of the wait.
    let rc = unsafe {
        let left = deadline.remaining();
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut now);
        let mut abs = libc::timespec {
            tv_sec: now.tv_sec.saturating_add(left.as_secs() as libc::time_t),
            tv_nsec: now.tv_nsec + left.subsec_nanos() as libc::c_long,
        };
        if abs.tv_nsec >= 1_000_000_000 {
            abs.tv_nsec -= 1_000_000_000;
            abs.tv_sec = abs.tv_sec.saturating_add(1);
        }
        libc::pthread_mutex_timedlock(mutex, &abs)
    };
    // SAFETY: as above.
    unsafe { outcome("pthread_mutex_clocklock", mutex, rc) }
}

/// Releases the mutex.
///
/// # Safety
/// `mutex` must point to a mutex initialised by [`init`], held by the calling
/// thread.
#[inline]
pub unsafe fn unlock(mutex: *mut libc::pthread_mutex_t) {
    // SAFETY: the caller guarantees the mutex is initialised, mapped and held
    // by this thread. Robust mutexes check ownership, so a violation shows up as
    // EPERM rather than as silent corruption.
    let rc = unsafe { libc::pthread_mutex_unlock(mutex) };
    check("pthread_mutex_unlock", rc);
}

/// The kernel thread id that holds the mutex, or `None` when it is free.
///
/// This reads the lock word, the first `int` of glibc's `pthread_mutex_t`
/// (`__data.__lock` in `<bits/struct_mutex.h>`, public ABI on every Linux
/// target because `PTHREAD_MUTEX_INITIALIZER` depends on it). For a robust
/// mutex it holds the owner's tid in its low 30 bits, plus the
/// `FUTEX_WAITERS` and `FUTEX_OWNER_DIED` flags; the kernel clears the tid
/// when the owner dies. It is a snapshot: the answer may be stale at once.
///
/// # Safety
/// `mutex` must point to a mutex initialised by [`init`], in live memory.
pub unsafe fn owner(mutex: *const libc::pthread_mutex_t) -> Option<u32> {
    // SAFETY: pthread_mutex_t is at least 4-byte aligned and starts with the
    // i32 lock word, which the kernel and glibc only ever change atomically;
    // reading it through an AtomicI32 is therefore a plain atomic load.
    let word = unsafe { &*mutex.cast::<AtomicI32>() }.load(Ordering::Relaxed);
    let tid = (word as u32) & libc::FUTEX_TID_MASK;
    (tid != 0).then_some(tid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::UnsafeCell;

    struct Boxed(Box<UnsafeCell<libc::pthread_mutex_t>>);
    // SAFETY: the mutex is process-shared and made for concurrent use.
    unsafe impl Sync for Boxed {}

    fn new(kind: Kind) -> Boxed {
        // SAFETY: all-zero bytes are a valid bit pattern for storage that init overwrites.
        let m = Boxed(Box::new(UnsafeCell::new(unsafe { std::mem::zeroed() })));
        // SAFETY: fresh, aligned, unshared storage.
        unsafe { init(m.0.get(), kind) };
        m
    }

    #[test]
    fn errorcheck_reports_relock_instead_of_hanging() {
        let m = new(Kind::ErrorCheck);
        // SAFETY: the mutex is initialised and lives in the box for the whole test.
        unsafe {
            assert_eq!(lock(m.0.get()), Acquire::Acquired);
            assert_eq!(owner(m.0.get()), Some(crate::sys::proc::tid()));
            assert_eq!(lock(m.0.get()), Acquire::Deadlock);
            unlock(m.0.get());
            assert_eq!(owner(m.0.get()), None);
        }
    }

    #[test]
    fn recursive_nests() {
        let m = new(Kind::Recursive);
        // SAFETY: as above.
        unsafe {
            assert_eq!(lock(m.0.get()), Acquire::Acquired);
            assert_eq!(try_lock(m.0.get()), Acquire::Acquired);
            unlock(m.0.get());
            unlock(m.0.get());
            assert_eq!(owner(m.0.get()), None);
        }
    }

    #[test]
    fn thread_exit_is_owner_death() {
        let m = std::sync::Arc::new(new(Kind::ErrorCheck));
        let m2 = std::sync::Arc::clone(&m);
        // SAFETY: as above; the thread exits holding the lock on purpose.
        std::thread::spawn(move || unsafe { assert_eq!(lock(m2.0.get()), Acquire::Acquired) }).join().unwrap();
        // SAFETY: as above.
        unsafe {
            let d = Deadline::after(std::time::Duration::from_secs(5));
            assert_eq!(lock_until(m.0.get(), &d), Acquire::OwnerDied);
            unlock(m.0.get());
            assert_eq!(try_lock(m.0.get()), Acquire::Acquired);
            unlock(m.0.get());
        }
    }
}
