//! `RawLock` and `RawRLock`: a robust, process-shared pthread mutex plus a
//! poison flag.
//!
//! | field      | meaning |
//! |------------|---------|
//! | `mutex`    | glibc `pthread_mutex_t`, `PTHREAD_PROCESS_SHARED` + `PTHREAD_MUTEX_ROBUST`; `ERRORCHECK` for `RawLock`, `RECURSIVE` for `RawRLock` |
//! | `poisoned` | 0 = healthy, 1 = a holder died or panicked holding it; cleared only by `clear_poison` |
//!
//! Owner death: when a holder thread exits or its process is killed, the
//! kernel marks the mutex, and the next locker gets `EOWNERDEAD`. The `sys`
//! layer calls `pthread_mutex_consistent` at once, and this layer sets the
//! poison flag, which lives beside the mutex in the shared memory, so every
//! process sees it until one clears it.
//!
//! All-zero bytes are *not* a valid lock: `init` must run first.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::sys::pthread::{self, Acquire};
use crate::sys::time::Deadline;

/// How a lock call ended when the caller got the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a Locked means the caller holds the lock and must unlock it"]
pub enum Locked {
    /// The lock was taken and is not poisoned.
    Clean,
    /// The lock was taken, but it is poisoned: a previous holder died or
    /// panicked while holding it, and nobody has called `clear_poison` since.
    /// The data it protects may be half-updated.
    Poisoned,
}

impl Locked {
    /// Whether the lock is poisoned.
    pub fn is_poisoned(self) -> bool {
        self == Locked::Poisoned
    }
}

const HEALTHY: u32 = 0;
const POISONED: u32 = 1;

/// The shared body of both lock types; guards hold a reference to it.
#[repr(C)]
pub(crate) struct Robust {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    poisoned: AtomicU32,
    _reserved: u32,
}

impl Robust {
    /// # Safety
    /// As for `RawLock::init`.
    unsafe fn init(this: *mut Self, kind: pthread::Kind) {
        // SAFETY: the caller guarantees `this` is valid for writes, aligned and
        // not yet shared, so its fields are too.
        unsafe {
            pthread::init(UnsafeCell::raw_get(&raw const (*this).mutex), kind);
            (&raw mut (*this).poisoned).write(AtomicU32::new(HEALTHY));
            (&raw mut (*this)._reserved).write(0);
        }
    }

    #[inline]
    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.mutex.get()
    }

    #[inline]
    fn after(&self, how: Acquire, what: &str) -> Option<Locked> {
        match how {
            Acquire::Acquired => Some(if self.is_poisoned() { Locked::Poisoned } else { Locked::Clean }),
            Acquire::OwnerDied => {
                // Relaxed is enough: we hold the mutex, whose unlock/lock pairs
                // order this store for the next holder in any process.
                self.poisoned.store(POISONED, Ordering::Relaxed);
                Some(Locked::Poisoned)
            }
            Acquire::WouldBlock => None,
            Acquire::Deadlock => panic!("{what}: the calling thread already holds this lock"),
        }
    }

    /// Takes the lock: one attempt inline, then the contended path.
    #[inline]
    fn lock(&self, what: &str) -> Locked {
        match self.try_lock() {
            Some(how) => how,
            None => self.lock_contended(what),
        }
    }

    /// glibc's robust mutexes go to the kernel at once when taken; a holder
    /// on another core usually lets go within microseconds, so poll with
    /// `try_lock` on the crate's spin budget first, then block.
    #[cold]
    fn lock_contended(&self, what: &str) -> Locked {
        let mut spin = super::SpinWait::new();
        while spin.spin() {
            if let Some(how) = self.try_lock() {
                return how;
            }
        }
        // SAFETY: `self` is a reference to an initialised lock (the type's
        // contract), so the mutex is initialised and mapped for the call.
        let how = unsafe { pthread::lock(self.mutex()) };
        self.after(how, what).unwrap_or_else(|| crate::sys::fail("pthread_mutex_lock", libc::EBUSY))
    }

    #[inline]
    fn try_lock(&self) -> Option<Locked> {
        // SAFETY: as in `lock`.
        match unsafe { pthread::try_lock(self.mutex()) } {
            Acquire::Deadlock => None,
            how => self.after(how, "try_lock"),
        }
    }

    fn try_lock_until(&self, deadline: &Deadline) -> Option<Locked> {
        // Fast path first: no clock read when the lock is free.
        if let Some(l) = self.try_lock() {
            return Some(l);
        }
        // SAFETY: as in `lock`.
        match unsafe { pthread::lock_until(self.mutex(), deadline) } {
            Acquire::Deadlock => None,
            how => self.after(how, "try_lock_for"),
        }
    }

    /// # Safety
    /// The calling thread holds the lock.
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        // SAFETY: the caller holds the lock; the mutex is initialised and mapped.
        unsafe { pthread::unlock(self.mutex()) }
    }

    fn owner(&self) -> Option<u32> {
        // SAFETY: the mutex is initialised and mapped for as long as `self` lives.
        unsafe { pthread::owner(self.mutex()) }
    }

    #[inline]
    fn is_poisoned(&self) -> bool {
        // Relaxed: a hint, as std's is; holders read it under the mutex.
        self.poisoned.load(Ordering::Relaxed) == POISONED
    }

    pub(crate) fn poison(&self) {
        self.poisoned.store(POISONED, Ordering::Relaxed);
    }
}

macro_rules! raw_lock {
    ($(#[$doc:meta])* $name:ident, $kind:expr, $what:literal) => {
        $(#[$doc])*
        #[repr(C)]
        pub struct $name(Robust);

        // SAFETY: the pthread mutex is process-shared and built for concurrent
        // use from any thread; the poison flag is atomic.
        unsafe impl Sync for $name {}
        // SAFETY: the lock holds no thread-bound state; ownership is tracked by
        // tid inside the mutex, not by where the Rust value lives.
        unsafe impl Send for $name {}

        impl $name {
            /// Initialises the lock in place: unlocked and not poisoned.
            ///
            /// # Safety
            /// `this` must be valid for writes of `Self` and aligned for it, and
            /// stay mapped while any process uses the lock. No thread in any
            /// process may use the lock before `init` returns, and `init` must
            /// not run again while any thread may hold or wait for it.
            pub unsafe fn init(this: *mut Self) {
                // SAFETY: forwarded from the caller; `Self` is a repr(C) wrapper
                // of `Robust`, so the cast keeps validity and alignment.
                unsafe { Robust::init(this.cast::<Robust>(), $kind) }
            }

            /// Blocks until the calling thread holds the lock.
            ///
            /// Returns [`Locked::Poisoned`] when a previous holder died (the
            /// lock has been recovered) or panicked holding it.
            #[inline]
            pub fn lock(&self) -> Locked {
                self.0.lock(concat!($what, "::lock"))
            }

            /// Takes the lock if it is free; `None` if another thread holds it.
            #[inline]
            pub fn try_lock(&self) -> Option<Locked> {
                self.0.try_lock()
            }

            /// Takes the lock, waiting at most `timeout`; `None` on timeout.
            pub fn try_lock_for(&self, timeout: Duration) -> Option<Locked> {
                self.0.try_lock_until(&Deadline::after(timeout))
            }

            /// The core that guards hold.
            pub(crate) fn robust(&self) -> &Robust {
                &self.0
            }

            /// Releases the lock (one level, for a nested `RawRLock`).
            ///
            /// # Safety
            /// The calling thread must hold the lock.
            #[inline]
            pub unsafe fn unlock(&self) {
                // SAFETY: forwarded from the caller.
                unsafe { self.0.unlock() }
            }

            /// Whether some thread holds the lock right now (a snapshot).
            pub fn is_locked(&self) -> bool {
                self.0.owner().is_some()
            }

            /// The kernel thread id of the holder, if any (a snapshot).
            pub fn owner_tid(&self) -> Option<u32> {
                self.0.owner()
            }

            /// Whether the lock is poisoned.
            pub fn is_poisoned(&self) -> bool {
                self.0.is_poisoned()
            }

            /// Marks the lock poisoned, e.g. from a guard dropped while its
            /// thread panics.
            pub fn poison(&self) {
                self.0.poison();
            }

            /// Clears the poison flag for every process.
            pub fn clear_poison(&self) {
                self.0.poisoned.store(HEALTHY, Ordering::Relaxed);
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("owner_tid", &self.owner_tid())
                    .field("poisoned", &self.is_poisoned())
                    .finish()
            }
        }
    };
}

raw_lock!(
    /// A robust, process-shared mutual-exclusion lock, for memory you map
    /// yourself.
    ///
    /// Layout: `#[repr(C)]`, 48 bytes, 8-byte aligned on x86_64 and aarch64
    /// Linux (a glibc `pthread_mutex_t` plus a 4-byte poison flag and 4 bytes
    /// reserved). All-zero bytes are not a valid lock; call [`init`](Self::init).
    ///
    /// Locking it twice on one thread panics instead of deadlocking.
    ///
    /// # Example
    /// ```
    /// use shmsync::raw::RawLock;
    /// use std::mem::MaybeUninit;
    ///
    /// let mut slot = Box::new(MaybeUninit::<RawLock>::uninit());
    /// // SAFETY: the box is valid, aligned storage that nothing else uses yet.
    /// unsafe { RawLock::init(slot.as_mut_ptr()) };
    /// // SAFETY: init ran.
    /// let lock = unsafe { slot.assume_init_ref() };
    /// assert!(!lock.lock().is_poisoned());
    /// assert!(lock.is_locked());
    /// // SAFETY: this thread holds the lock.
    /// unsafe { lock.unlock() };
    /// ```
    RawLock,
    pthread::Kind::ErrorCheck,
    "RawLock"
);

impl RawLock {
    /// Takes the lock and, if a holder died or panicked holding it, clears
    /// the poison at once and returns `true`. Only for the crate's own
    /// structures whose every change is committed by one store, so a dead
    /// holder cannot have left them half-changed.
    pub(crate) fn lock_recovering(&self) -> bool {
        let recovered = self.lock().is_poisoned();
        if recovered {
            self.clear_poison();
        }
        recovered
    }
}

raw_lock!(
    /// A robust, process-shared *reentrant* lock: the holding thread may lock
    /// it again, and must unlock it as many times.
    ///
    /// Layout: as [`RawLock`]. All-zero bytes are not a valid lock; call
    /// [`init`](Self::init).
    RawRLock,
    pthread::Kind::Recursive,
    "RawRLock"
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, size_of};

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn layout_is_as_documented() {
        assert_eq!(size_of::<RawLock>(), 48);
        assert_eq!(align_of::<RawLock>(), 8);
        assert_eq!(size_of::<RawRLock>(), 48);
    }
}
