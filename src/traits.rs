//! One lock trait and one semaphore trait, implemented by the local objects
//! and by their etcd counterparts (the `etcd` feature), so that a program
//! can take turns on one host or on many, chosen by configuration.
//!
//! The traits follow the local surface, with one change: every call
//! returns a [`Result`] around it, since across hosts any call can fail
//! for network reasons (etcd unreachable, the lease lost). The local
//! implementations never return `Err`, and cost nothing more: each method
//! is the inherent one wrapped in `Ok`.
//!
//! The associated guard types borrow the lock, so the traits are used as
//! generic bounds rather than `dyn`: write the work once as a generic
//! function and pick the type at run time.
//!
//! ```
//! use std::sync::PoisonError;
//! use shmsync::{Held, LockLike};
//!
//! /// The same critical section, whichever lock it runs under.
//! fn bump<L: LockLike>(lock: &L, counter: &mut u64) -> shmsync::Result<()> {
//!     let guard = lock.lock()?.unwrap_or_else(PoisonError::into_inner);
//!     guard.check()?; // across hosts: is the lock still ours?
//!     *counter += 1;
//!     Ok(())
//! }
//!
//! let mut counter = 0;
//! let local = shmsync::Lock::new()?;
//! bump(&local, &mut counter)?;
//! // With the `etcd` feature, the same call across hosts:
//! // bump(&shmsync::etcd::Lock::open(&session, "jobs")?, &mut counter)?;
//! assert_eq!(counter, 1);
//! # Ok::<(), shmsync::Error>(())
//! ```
//!
//! `release()` without a permit is not in [`SemaphoreLike`]: a local unit
//! may be released by anyone (as in Python), but an etcd permit is a key
//! owned by its holder's lease, so only the permit can give it back.

use std::sync::{LockResult, TryLockResult};
use std::time::Duration;

use crate::error::Result;
use crate::{BoundedSemaphore, Lock, LockGuard, Permit, RLock, Semaphore};

/// What a lock guard or a permit can say about itself.
pub trait Held {
    /// `Err(Error::LeaseLost)` once what this guard holds may be someone
    /// else's (across hosts: the lease expired). Always `Ok` locally,
    /// where a live holder cannot lose its lock.
    fn check(&self) -> Result<()>;

    /// A number larger than every earlier holder's, for a store to refuse
    /// a stale holder's writes; `None` where holders cannot go stale
    /// (locally).
    fn fencing_token(&self) -> Option<u64>;
}

/// A lock with poisoning: the local [`Lock`] and [`RLock`], and, with the
/// `etcd` feature, `etcd::Lock`.
pub trait LockLike {
    /// Holds the lock until dropped.
    type Guard<'a>: Held
    where
        Self: 'a;

    /// The lock's name.
    fn name(&self) -> &str;

    /// Waits until this thread holds the lock; the inner `Err` says it is
    /// poisoned (and carries the guard).
    fn lock(&self) -> Result<LockResult<Self::Guard<'_>>>;

    /// Takes the lock if it is free; the inner `Err(WouldBlock)` if not.
    fn try_lock(&self) -> Result<TryLockResult<Self::Guard<'_>>>;

    /// Takes the lock, waiting at most `timeout`; the inner
    /// `Err(WouldBlock)` means the time ran out.
    fn try_lock_for(&self, timeout: Duration) -> Result<TryLockResult<Self::Guard<'_>>>;

    /// Whether a holder died (or panicked) while holding the lock since
    /// the poison was last cleared.
    fn is_poisoned(&self) -> Result<bool>;

    /// Clears the poison flag, for everyone.
    fn clear_poison(&self) -> Result<()>;
}

/// A counting semaphore whose permits release on drop: the local
/// [`Semaphore`] and [`BoundedSemaphore`], and, with the `etcd` feature,
/// `etcd::Semaphore`.
pub trait SemaphoreLike {
    /// One unit, released when dropped.
    type Permit<'a>: Held
    where
        Self: 'a;

    /// The semaphore's name.
    fn name(&self) -> &str;

    /// Waits until a unit is free and takes it.
    fn acquire(&self) -> Result<Self::Permit<'_>>;

    /// Takes a unit if one is free; `Ok(None)` if not.
    fn try_acquire(&self) -> Result<Option<Self::Permit<'_>>>;

    /// Takes a unit, waiting at most `timeout`; `Ok(None)` on timeout.
    fn try_acquire_for(&self, timeout: Duration) -> Result<Option<Self::Permit<'_>>>;
}

impl Held for LockGuard<'_> {
    fn check(&self) -> Result<()> {
        Ok(())
    }
    fn fencing_token(&self) -> Option<u64> {
        None
    }
}

impl Held for Permit<'_> {
    fn check(&self) -> Result<()> {
        Ok(())
    }
    fn fencing_token(&self) -> Option<u64> {
        None
    }
}

/// The local locks: the inherent methods, wrapped in `Ok`.
macro_rules! local_lock {
    ($ty:ident) => {
        impl LockLike for $ty {
            type Guard<'a> = LockGuard<'a>;

            fn name(&self) -> &str {
                $ty::name(self)
            }
            #[inline]
            fn lock(&self) -> Result<LockResult<LockGuard<'_>>> {
                Ok($ty::lock(self))
            }
            #[inline]
            fn try_lock(&self) -> Result<TryLockResult<LockGuard<'_>>> {
                Ok($ty::try_lock(self))
            }
            fn try_lock_for(&self, timeout: Duration) -> Result<TryLockResult<LockGuard<'_>>> {
                Ok($ty::try_lock_for(self, timeout))
            }
            fn is_poisoned(&self) -> Result<bool> {
                Ok($ty::is_poisoned(self))
            }
            fn clear_poison(&self) -> Result<()> {
                $ty::clear_poison(self);
                Ok(())
            }
        }
    };
}

local_lock!(Lock);
local_lock!(RLock);

/// The local semaphores: the inherent methods, wrapped in `Ok`.
macro_rules! local_semaphore {
    ($ty:ident) => {
        impl SemaphoreLike for $ty {
            type Permit<'a> = Permit<'a>;

            fn name(&self) -> &str {
                $ty::name(self)
            }
            #[inline]
            fn acquire(&self) -> Result<Permit<'_>> {
                Ok($ty::acquire(self))
            }
            #[inline]
            fn try_acquire(&self) -> Result<Option<Permit<'_>>> {
                Ok($ty::try_acquire(self))
            }
            fn try_acquire_for(&self, timeout: Duration) -> Result<Option<Permit<'_>>> {
                Ok($ty::try_acquire_for(self, timeout))
            }
        }
    };
}

local_semaphore!(Semaphore);
local_semaphore!(BoundedSemaphore);

#[cfg(feature = "etcd")]
mod etcd_impls {
    use super::*;
    use crate::etcd;

    impl Held for etcd::Guard<'_> {
        fn check(&self) -> Result<()> {
            etcd::Guard::check(self)
        }
        fn fencing_token(&self) -> Option<u64> {
            Some(etcd::Guard::fencing_token(self))
        }
    }

    impl Held for etcd::Permit<'_> {
        fn check(&self) -> Result<()> {
            etcd::Permit::check(self)
        }
        fn fencing_token(&self) -> Option<u64> {
            Some(etcd::Permit::fencing_token(self))
        }
    }

    impl LockLike for etcd::Lock {
        type Guard<'a> = etcd::Guard<'a>;

        fn name(&self) -> &str {
            etcd::Lock::name(self)
        }
        fn lock(&self) -> Result<LockResult<etcd::Guard<'_>>> {
            etcd::Lock::lock(self)
        }
        fn try_lock(&self) -> Result<TryLockResult<etcd::Guard<'_>>> {
            etcd::Lock::try_lock(self)
        }
        fn try_lock_for(&self, timeout: Duration) -> Result<TryLockResult<etcd::Guard<'_>>> {
            etcd::Lock::try_lock_for(self, timeout)
        }
        fn is_poisoned(&self) -> Result<bool> {
            etcd::Lock::is_poisoned(self)
        }
        fn clear_poison(&self) -> Result<()> {
            etcd::Lock::clear_poison(self)
        }
    }

    impl SemaphoreLike for etcd::Semaphore {
        type Permit<'a> = etcd::Permit<'a>;

        fn name(&self) -> &str {
            etcd::Semaphore::name(self)
        }
        fn acquire(&self) -> Result<etcd::Permit<'_>> {
            etcd::Semaphore::acquire(self)
        }
        fn try_acquire(&self) -> Result<Option<etcd::Permit<'_>>> {
            etcd::Semaphore::try_acquire(self)
        }
        fn try_acquire_for(&self, timeout: Duration) -> Result<Option<etcd::Permit<'_>>> {
            etcd::Semaphore::try_acquire_for(self, timeout)
        }
    }
}
