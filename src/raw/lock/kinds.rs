//! The two lock types over [`Robust`], one per mutex kind: [`RawLock`]
//! (error-checking) and [`RawRLock`] (recursive).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::robust::Robust;
use super::{Locked, HEALTHY};
use crate::sys::pthread;
use crate::sys::time::Deadline;

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
                self.0.lock($kind, concat!($what, "::lock"))
            }

            /// Takes the lock if it is free; `None` if another thread holds it.
            #[inline]
            pub fn try_lock(&self) -> Option<Locked> {
                self.0.try_lock($kind)
            }

            /// Takes the lock, waiting at most `timeout`; `None` on timeout.
            pub fn try_lock_for(&self, timeout: Duration) -> Option<Locked> {
                self.0.try_lock_until($kind, &Deadline::after(timeout))
            }

            /// On open: whether the bytes are a lock of this type as `init`
            /// made it (the mutex kind); a description of the problem if not.
            pub(crate) fn check(&self) -> Result<(), String> {
                self.0.check($kind)
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

            /// How many times the holder has locked it without unlocking (a
            /// snapshot: 1 for a held `RawLock`, the nesting depth for a
            /// `RawRLock`, meaningless while it is free).
            pub fn depth(&self) -> u32 {
                self.0.depth()
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

            /// Whether the lock word says its last owner died holding it
            /// (`FUTEX_OWNER_DIED`, set by the kernel or by a waiter's
            /// recovery), so the next lock reports poison. A snapshot, read
            /// with one load, for the inspector.
            pub(crate) fn owner_died(&self) -> bool {
                self.0.word().load(Ordering::Relaxed) & pthread::OWNER_DIED != 0
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

    /// For async waits on a busy lock: see `Robust::arm`.
    pub(crate) fn arm(&self) -> Option<(&AtomicU32, u32)> {
        self.0.arm()
    }

    /// The re-check of an async wait on a busy lock: see
    /// `Robust::recover_if_stuck`.
    pub(crate) fn recover_if_stuck(&self) -> bool {
        self.0.recover_if_stuck()
    }

    /// As [`lock_recovering`](Self::lock_recovering), waiting at most until
    /// `deadline`: `None` if the lock could not be had by then.
    pub(crate) fn lock_recovering_until(&self, deadline: &Deadline) -> Option<bool> {
        let recovered = self.0.try_lock_until(pthread::Kind::ErrorCheck, deadline)?.is_poisoned();
        if recovered {
            self.clear_poison();
        }
        Some(recovered)
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
