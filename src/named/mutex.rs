//! `Mutex<T>`: a named robust lock and a plain-data `T` in one segment
//! (Python's `Value` and `Array`).

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};
use std::time::Duration;

use bytemuck::Pod;

use super::guard::LockGuard;
use crate::error::Result;
use crate::raw::{Locked, RawLock};
use crate::segment::{self, Kind, Layout, Segment};
use crate::Builder;

/// The object in a `Mutex<T>` segment: the lock, then the value.
#[repr(C)]
pub struct MutexCell<T> {
    lock: RawLock,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, which exists only while
// its thread holds the robust lock; T: Pod has no thread-bound state.
unsafe impl<T: Pod> Sync for MutexCell<T> {}

impl<T: Pod> std::fmt::Debug for MutexCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutexCell").field("lock", &self.lock).finish_non_exhaustive()
    }
}

impl<T> MutexCell<T> {
    /// The lock, for the inspector (which reads it, never takes it).
    pub(crate) fn raw_lock(&self) -> &RawLock {
        &self.lock
    }
}

/// The parameter of a `Mutex<T>`: its initial value (default: all zeros).
#[derive(Clone, Copy)]
pub struct MutexParams<T>(T);

impl<T: Pod> Default for MutexParams<T> {
    fn default() -> Self {
        MutexParams(T::zeroed())
    }
}

/// A named, cross-process mutex around plain data (Python's
/// `multiprocessing.Value` and `Array`): `Mutex::<i64>::new(0)`,
/// `Mutex::<[f64; 8]>::create("samples", [0.0; 8])`.
///
/// `T` is [`bytemuck::Pod`]: plain bytes, no pointers, valid for any bit
/// pattern, so sharing it between processes is sound. `open` checks that `T`
/// has the size, alignment and type name the creator used
/// ([`Error::IncompatibleLayout`](crate::Error::IncompatibleLayout)
/// otherwise; `[i64; 4]` is not `[u64; 4]`). Type names are stable for one
/// compiler version: build every process with the same one.
///
/// Poisoning is as for [`Lock`](crate::Lock): a holder that dies or panics
/// poisons it for every process.
///
/// ```
/// let counter = shmsync::Mutex::<u64>::new(0)?;
/// *counter.lock().unwrap() += 1;
/// assert_eq!(*counter.lock().unwrap(), 1);
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct Mutex<T: Pod> {
    seg: Segment<MutexCell<T>>,
}

impl<T: Pod> Layout for Mutex<T> {
    type Object = MutexCell<T>;
    type Params = MutexParams<T>;
    const KIND: Kind = Kind::Mutex;

    fn type_hash() -> u64 {
        segment::type_hash::<T>()
    }

    fn check(cell: &MutexCell<T>, _trailing: usize) -> std::result::Result<(), String> {
        cell.lock.check()
    }

    unsafe fn init(object: *mut MutexCell<T>, _trailing: usize, params: &MutexParams<T>) -> Result<()> {
        // SAFETY: the caller of Layout::init guarantees `object` is valid,
        // aligned and unshared; the fields are in bounds.
        unsafe {
            RawLock::init(&raw mut (*object).lock);
            (&raw mut (*object).value).write(UnsafeCell::new(params.0));
        }
        Ok(())
    }
}

impl<T: Pod> super::private::FromSegment for Mutex<T> {
    fn from_segment(seg: Segment<MutexCell<T>>) -> Self {
        Mutex { seg }
    }
}

impl<T: Pod> Builder<Mutex<T>> {
    /// The initial value (default: all zeros).
    pub fn value(mut self, value: T) -> Self {
        self.params_mut().0 = value;
        self
    }
}

impl<T: Pod> std::panic::UnwindSafe for Mutex<T> {}
impl<T: Pod> std::panic::RefUnwindSafe for Mutex<T> {}

impl<T: Pod> Mutex<T> {
    crate::named::lifecycle_fns!(Mutex { value: T });

    fn cell(&self) -> &MutexCell<T> {
        self.seg.object()
    }

    fn guard<'a>(&'a self, lock: LockGuard<'a>) -> MutexGuard<'a, T> {
        MutexGuard { _lock: lock, value: self.cell().value.get(), _value: PhantomData }
    }

    fn wrap(&self, how: Locked) -> LockResult<MutexGuard<'_, T>> {
        match LockGuard::wrap(self.cell().lock.robust(), how) {
            Ok(g) => Ok(self.guard(g)),
            Err(p) => Err(PoisonError::new(self.guard(p.into_inner()))),
        }
    }

    fn wrap_try(&self, how: Option<Locked>) -> TryLockResult<MutexGuard<'_, T>> {
        match how {
            None => Err(TryLockError::WouldBlock),
            Some(how) => self.wrap(how).map_err(TryLockError::from),
        }
    }

    /// Blocks until this thread holds the lock; the guard derefs to `T`.
    /// `Err(PoisonError)`, still carrying the guard, if a holder died or
    /// panicked.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.wrap(self.cell().lock.lock())
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        self.wrap_try(self.cell().lock.try_lock())
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn try_lock_for(&self, timeout: Duration) -> TryLockResult<MutexGuard<'_, T>> {
        self.wrap_try(self.cell().lock.try_lock_for(timeout))
    }

    /// Whether the lock is poisoned.
    pub fn is_poisoned(&self) -> bool {
        self.cell().lock.is_poisoned()
    }

    /// Clears the poison flag, for every process.
    pub fn clear_poison(&self) {
        self.cell().lock.clear_poison()
    }
}

impl<T: Pod> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutex").field("name", &self.name()).field("type", &std::any::type_name::<T>()).finish()
    }
}

/// Access to a [`Mutex`]'s value while its lock is held. `!Send`.
#[must_use = "if unused the lock is released at once"]
pub struct MutexGuard<'a, T: Pod> {
    _lock: LockGuard<'a>,
    value: *mut T,
    _value: PhantomData<&'a mut T>,
}

impl<T: Pod> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the robust lock, so no other thread in any
        // process touches the value; the segment outlives 'a.
        unsafe { &*self.value }
    }
}

impl<T: Pod> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this access unique.
        unsafe { &mut *self.value }
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}
