//! `Lock` and `RLock`: named robust locks with std's poisoning semantics.

use std::sync::{LockResult, TryLockResult};
use std::time::Duration;

use super::guard::LockGuard;
use super::named_lifecycle;
use crate::raw::{RawLock, RawRLock};
use crate::segment::{Kind, Layout, Segment};

/// The guard of an [`RLock`]; the same type as a [`Lock`]'s guard.
pub type RLockGuard<'a> = LockGuard<'a>;

/// Writes the shared lock API for a named type over a raw lock.
macro_rules! named_lock {
    ($ty:ident, $raw:ident, $kind:expr) => {
        impl Layout for $ty {
            type Object = $raw;
            type Params = ();
            const KIND: Kind = $kind;

            unsafe fn init(object: *mut $raw, _trailing: usize, _: &()) -> crate::Result<()> {
                // SAFETY: forwarded from the caller of Layout::init.
                unsafe { $raw::init(object) };
                Ok(())
            }

            fn check(lock: &$raw, _trailing: usize) -> std::result::Result<(), String> {
                lock.check()
            }
        }

        named_lifecycle!($ty {});

        // Poisoning makes a panic while holding the lock observable, as with
        // std's Mutex, so the handle is unwind-safe.
        impl std::panic::UnwindSafe for $ty {}
        impl std::panic::RefUnwindSafe for $ty {}

        impl $ty {
            fn raw(&self) -> &$raw {
                self.seg.object()
            }

            /// Blocks until this thread holds the lock.
            ///
            /// `Err(PoisonError)` when a previous holder died (its process was
            /// killed, or its thread exited) or panicked while holding the lock,
            /// and nobody has cleared the poison since. The error still carries
            /// the guard: `lock().unwrap_or_else(PoisonError::into_inner)`
            /// takes the lock regardless.
            #[doc = concat!("```\nlet lock = shmsync::", stringify!($ty), "::new()?;\n{\n    let _guard = lock.lock().unwrap();\n    assert!(lock.is_locked());\n}\nassert!(!lock.is_locked());\n# Ok::<(), shmsync::Error>(())\n```")]
            #[inline]
            pub fn lock(&self) -> LockResult<LockGuard<'_>> {
                LockGuard::wrap(self.raw().robust(), self.raw().lock())
            }

            /// Takes the lock if it is free, without blocking.
            /// `Err(TryLockError::WouldBlock)` if another thread holds it.
            #[inline]
            pub fn try_lock(&self) -> TryLockResult<LockGuard<'_>> {
                LockGuard::wrap_try(self.raw().robust(), self.raw().try_lock())
            }

            /// Takes the lock, waiting at most `timeout`.
            /// `Err(TryLockError::WouldBlock)` means the time ran out.
            pub fn try_lock_for(&self, timeout: Duration) -> TryLockResult<LockGuard<'_>> {
                LockGuard::wrap_try(self.raw().robust(), self.raw().try_lock_for(timeout))
            }

            /// Whether any thread in any process holds the lock (a snapshot).
            pub fn is_locked(&self) -> bool {
                self.raw().is_locked()
            }

            /// The kernel thread id of the holder, if any (a snapshot).
            pub fn owner_tid(&self) -> Option<u32> {
                self.raw().owner_tid()
            }

            /// Whether the lock is poisoned. Every process sees the same flag.
            pub fn is_poisoned(&self) -> bool {
                self.raw().is_poisoned()
            }

            /// Clears the poison flag, for every process.
            #[doc = concat!("```\nlet lock = shmsync::", stringify!($ty), "::new()?;\nstd::thread::scope(|s| {\n    // A holder that panics poisons the lock, as with std's Mutex.\n    let _ = s.spawn(|| {\n        let _guard = lock.lock().unwrap();\n        panic!(\"oops\");\n    }).join();\n});\nassert!(lock.is_poisoned());\nassert!(lock.lock().is_err());\nlock.clear_poison();\nassert!(lock.lock().is_ok());\n# Ok::<(), shmsync::Error>(())\n```")]
            pub fn clear_poison(&self) {
                self.raw().clear_poison()
            }
        }
    };
}

/// A named, cross-process lock (Python's `multiprocessing.Lock`).
///
/// Built on a robust, process-shared pthread mutex, so a holder that dies —
/// its process killed with `SIGKILL`, or its thread exiting — does not leave
/// the lock held forever: the next locker gets it, poisoned. As in std, a
/// holder that panics poisons it too. The poison flag lives in the shared
/// segment: every process sees it until one calls
/// [`clear_poison`](Self::clear_poison).
///
/// Locking it a second time on the thread that holds it panics (it would
/// deadlock); use [`RLock`] to nest.
///
/// ```no_run
/// use shmsync::Lock;
/// // In any number of independent programs:
/// let lock = Lock::open_or_create("jobs")?;
/// let guard = lock.lock().unwrap_or_else(|poisoned| {
///     eprintln!("a previous holder died; checking the shared state");
///     poisoned.into_inner()
/// });
/// // ... critical section ...
/// drop(guard);
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct Lock {
    seg: Segment<RawLock>,
}

/// A named, cross-process reentrant lock (Python's `multiprocessing.RLock`):
/// the thread that holds it may lock it again; each guard releases one level.
///
/// Owner death and panics poison it as they do a [`Lock`].
///
/// ```
/// let rlock = shmsync::RLock::new()?;
/// let outer = rlock.lock().unwrap();
/// let inner = rlock.lock().unwrap(); // same thread: nests
/// drop(inner);
/// assert!(rlock.is_locked());
/// drop(outer);
/// assert!(!rlock.is_locked());
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct RLock {
    seg: Segment<RawRLock>,
}

named_lock!(Lock, RawLock, Kind::Lock);
named_lock!(RLock, RawRLock, Kind::RLock);
