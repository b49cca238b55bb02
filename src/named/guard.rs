//! The lock guard, made in exactly one place.

use std::marker::PhantomData;
use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};

use crate::raw::{Locked, Robust};

/// Holds a [`Lock`](crate::Lock) or [`RLock`](crate::RLock) until dropped.
///
/// Dropping it unlocks. Dropping it while the thread panics poisons the lock
/// for every process, as std's `MutexGuard` does. It is `!Send`: a pthread
/// mutex must be unlocked by the thread that locked it.
#[must_use = "if unused the lock is released at once"]
pub struct LockGuard<'a> {
    lock: &'a Robust,
    panicking: bool,
    _not_send: PhantomData<*const ()>,
}

impl<'a> LockGuard<'a> {
    #[inline]
    fn new(lock: &'a Robust) -> LockGuard<'a> {
        LockGuard { lock, panicking: std::thread::panicking(), _not_send: PhantomData }
    }

    /// The guard for a blocking lock call.
    #[inline]
    pub(crate) fn wrap(lock: &'a Robust, how: Locked) -> LockResult<LockGuard<'a>> {
        let guard = LockGuard::new(lock);
        match how {
            Locked::Clean => Ok(guard),
            Locked::Poisoned => Err(PoisonError::new(guard)),
        }
    }

    /// The guard for a try or timed lock call; `None` means it would block.
    pub(crate) fn wrap_try(lock: &'a Robust, how: Option<Locked>) -> TryLockResult<LockGuard<'a>> {
        match how {
            None => Err(TryLockError::WouldBlock),
            Some(how) => LockGuard::wrap(lock, how).map_err(TryLockError::from),
        }
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.panicking && std::thread::panicking() {
            self.lock.poison();
        }
        // SAFETY: a LockGuard exists only while its thread holds the lock
        // (it is built by `wrap` right after a successful lock call, and is
        // !Send), and each guard unlocks exactly once, here.
        unsafe { self.lock.unlock() }
    }
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}
