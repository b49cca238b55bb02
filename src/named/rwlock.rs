//! `RwLock<T>`: a named reader-writer lock and a plain-data `T` in one
//! segment, with std's names and poisoning, plus parking_lot's upgradable
//! reads.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};
use std::time::Duration;

use bytemuck::Pod;

use crate::error::Result;
use crate::raw::{Locked, RawRwLock};
use crate::segment::{self, Kind, Layout, Segment};
use crate::Builder;

/// The object in an `RwLock<T>` segment: the lock, then the value.
#[repr(C)]
pub struct RwLockCell<T> {
    lock: RawRwLock,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard: shared (`&T`) under a
// read or upgradable lock, which no writer holds at the same time, or
// unique (`&mut T`) under the write lock, which no one else holds. T: Pod has
// no thread-bound state.
unsafe impl<T: Pod> Sync for RwLockCell<T> {}

impl<T: Pod> RwLockCell<T> {
    /// The lock, for the inspector's read-only snapshot.
    pub(crate) fn raw_lock(&self) -> &RawRwLock {
        &self.lock
    }
}

impl<T: Pod> std::fmt::Debug for RwLockCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RwLockCell").field("lock", &self.lock).finish_non_exhaustive()
    }
}

/// The parameter of an `RwLock<T>`: its initial value (default: all zeros).
#[derive(Clone, Copy)]
pub struct RwLockParams<T>(T);

impl<T: Pod> Default for RwLockParams<T> {
    fn default() -> Self {
        RwLockParams(T::zeroed())
    }
}

/// A named, cross-process reader-writer lock around plain data: many
/// readers at once, or one writer. Python has none; the names are std's
/// `RwLock`, with parking_lot's upgradable reads.
///
/// `RwLock<()>` (the default) guards nothing but itself, for data kept
/// elsewhere; `RwLock::<[u64; 32]>::new([0; 32])` guards a table in the same
/// segment. `T` is [`bytemuck::Pod`], and `open` checks its size, alignment
/// and type name as [`Mutex`](crate::Mutex) does.
///
/// Robust, which no pthread rwlock is:
/// - a *writer* killed (or exiting, or panicking) while holding the lock
///   poisons it, and the next reader or writer gets it within
///   [`RECHECK`](crate::raw::RECHECK) (1 s) of the death;
/// - a *reader* killed while holding is forgotten: its share is reclaimed by
///   a waiting writer within the same bound, and nothing is poisoned;
/// - an *upgradable* reader killed counts as a reader, or as a writer once it
///   has begun to upgrade.
///
/// Fair both ways: a writer waits only for the reads in progress when it
/// comes (new readers wait behind it), and readers that waited go in before
/// the next writer. Up to [`RWLOCK_READER_SLOTS`](crate::raw::RWLOCK_READER_SLOTS)
/// (64) threads read at the same time; more take turns.
///
/// ```
/// let table = shmsync::RwLock::<[u32; 4]>::new([1, 2, 3, 4])?;
/// {
///     let a = table.read().unwrap();
///     let b = table.read().unwrap(); // readers share it
///     assert_eq!(a[0] + b[3], 5);
///     assert!(table.try_write().is_err());
/// }
/// table.write().unwrap()[0] = 10;
/// assert_eq!(table.read().unwrap()[0], 10);
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct RwLock<T: Pod = ()> {
    seg: Segment<RwLockCell<T>>,
}

impl<T: Pod> Layout for RwLock<T> {
    type Object = RwLockCell<T>;
    type Params = RwLockParams<T>;
    const KIND: Kind = Kind::RwLock;

    fn type_hash() -> u64 {
        segment::type_hash::<T>()
    }

    fn check(cell: &RwLockCell<T>, _trailing: usize) -> std::result::Result<(), String> {
        cell.lock.check()
    }

    unsafe fn init(object: *mut RwLockCell<T>, _trailing: usize, params: &RwLockParams<T>) -> Result<()> {
        // SAFETY: the caller of Layout::init guarantees `object` is valid,
        // aligned and unshared; the fields are in bounds.
        unsafe {
            RawRwLock::init(&raw mut (*object).lock);
            (&raw mut (*object).value).write(UnsafeCell::new(params.0));
        }
        Ok(())
    }
}

impl<T: Pod> super::private::FromSegment for RwLock<T> {
    fn from_segment(seg: Segment<RwLockCell<T>>) -> Self {
        RwLock { seg }
    }
}

impl<T: Pod> Builder<RwLock<T>> {
    /// The initial value (default: all zeros).
    pub fn value(mut self, value: T) -> Self {
        self.params_mut().0 = value;
        self
    }
}

// Poisoning makes a writer's panic observable, as with std's RwLock.
impl<T: Pod> std::panic::UnwindSafe for RwLock<T> {}
impl<T: Pod> std::panic::RefUnwindSafe for RwLock<T> {}

/// Turns a raw outcome into std's result shape.
fn wrap<G>(how: Locked, guard: G) -> LockResult<G> {
    match how {
        Locked::Clean => Ok(guard),
        Locked::Poisoned => Err(PoisonError::new(guard)),
    }
}

/// As `wrap`, for a try or timed call: `None` means it would block.
fn wrap_try<G>(how: Option<Locked>, guard: impl FnOnce() -> G) -> TryLockResult<G> {
    match how {
        None => Err(TryLockError::WouldBlock),
        Some(how) => wrap(how, guard()).map_err(TryLockError::from),
    }
}

impl<T: Pod> RwLock<T> {
    crate::named::lifecycle_fns!(RwLock { value: T });

    fn cell(&self) -> &RwLockCell<T> {
        self.seg.object()
    }

    /// Blocks until this thread holds a read lock, shared with other
    /// readers. `Err(PoisonError)`, still carrying the guard, if the lock is
    /// poisoned.
    ///
    /// # Panics
    /// If this thread holds the write lock (it would wait for itself).
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        let how = self.cell().lock.read();
        wrap(how, RwLockReadGuard::new(self.cell()))
    }

    /// Takes a read lock if no writer holds or waits for the lock.
    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        wrap_try(self.cell().lock.try_read(), || RwLockReadGuard::new(self.cell()))
    }

    /// Takes a read lock, waiting at most `timeout`.
    /// `Err(TryLockError::WouldBlock)` means the time ran out.
    pub fn try_read_for(&self, timeout: Duration) -> TryLockResult<RwLockReadGuard<'_, T>> {
        wrap_try(self.cell().lock.try_read_for(timeout), || RwLockReadGuard::new(self.cell()))
    }

    /// Blocks until this thread holds the write lock; the guard derefs
    /// mutably to `T`. `Err(PoisonError)`, still carrying the guard, if a
    /// previous writer died or panicked holding it.
    ///
    /// # Panics
    /// If this thread holds any lock on it (it would wait for itself).
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        let how = self.cell().lock.write();
        wrap(how, RwLockWriteGuard::new(self.cell()))
    }

    /// Takes the write lock if no one holds the lock.
    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        wrap_try(self.cell().lock.try_write(), || RwLockWriteGuard::new(self.cell()))
    }

    /// Takes the write lock, waiting at most `timeout`.
    pub fn try_write_for(&self, timeout: Duration) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        wrap_try(self.cell().lock.try_write_for(timeout), || RwLockWriteGuard::new(self.cell()))
    }

    /// Blocks until this thread holds an upgradable read: it shares the lock
    /// with readers but not with writers or another upgradable reader, and
    /// [`RwLockUpgradableReadGuard::upgrade`] turns it into the write lock
    /// without letting a writer in between.
    ///
    /// # Panics
    /// If this thread holds the write lock or an upgradable read on it.
    pub fn upgradable_read(&self) -> LockResult<RwLockUpgradableReadGuard<'_, T>> {
        let how = self.cell().lock.upgradable_read();
        wrap(how, RwLockUpgradableReadGuard::new(self.cell()))
    }

    /// Takes an upgradable read if no writer or upgradable reader holds it.
    pub fn try_upgradable_read(&self) -> TryLockResult<RwLockUpgradableReadGuard<'_, T>> {
        wrap_try(self.cell().lock.try_upgradable_read(), || RwLockUpgradableReadGuard::new(self.cell()))
    }

    /// Takes an upgradable read, waiting at most `timeout`.
    pub fn try_upgradable_read_for(&self, timeout: Duration) -> TryLockResult<RwLockUpgradableReadGuard<'_, T>> {
        wrap_try(self.cell().lock.try_upgradable_read_for(timeout), || RwLockUpgradableReadGuard::new(self.cell()))
    }

    /// Whether the lock is poisoned. Every process sees the same flag.
    pub fn is_poisoned(&self) -> bool {
        self.cell().lock.is_poisoned()
    }

    /// Clears the poison flag, for every process.
    ///
    /// ```
    /// let lock = shmsync::RwLock::<u64>::new(0)?;
    /// std::thread::scope(|s| {
    ///     // A writer that panics poisons the lock, as with std's RwLock.
    ///     let _ = s.spawn(|| {
    ///         let _guard = lock.write().unwrap();
    ///         panic!("oops");
    ///     }).join();
    /// });
    /// assert!(lock.is_poisoned());
    /// assert!(lock.read().is_err());
    /// lock.clear_poison();
    /// assert!(lock.read().is_ok());
    /// # Ok::<(), shmsync::Error>(())
    /// ```
    pub fn clear_poison(&self) {
        self.cell().lock.clear_poison()
    }

    /// How many read locks are held, in every process (a snapshot).
    pub fn readers(&self) -> u32 {
        self.cell().lock.readers()
    }

    /// Whether a writer holds the lock, or is waiting for its readers to
    /// leave (a snapshot).
    pub fn is_write_locked(&self) -> bool {
        self.cell().lock.is_write_locked()
    }
}

impl<T: Pod> std::fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RwLock")
            .field("name", &self.name())
            .field("type", &std::any::type_name::<T>())
            .field("lock", &self.cell().lock)
            .finish()
    }
}

/// Shared access to an [`RwLock`]'s value while a read lock is held.
/// Dropping it releases the read. `!Send`: the lock records its readers by
/// thread.
#[must_use = "if unused the read lock is released at once"]
pub struct RwLockReadGuard<'a, T: Pod> {
    cell: &'a RwLockCell<T>,
    _not_send: PhantomData<*const ()>,
}

impl<'a, T: Pod> RwLockReadGuard<'a, T> {
    /// Made only right after this thread took a read lock on `cell`.
    fn new(cell: &'a RwLockCell<T>) -> Self {
        RwLockReadGuard { cell, _not_send: PhantomData }
    }
}

impl<T: Pod> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds a read lock, so no writer touches the value
        // in any process; the segment outlives 'a.
        unsafe { &*self.cell.value.get() }
    }
}

impl<T: Pod> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: a read guard exists only while its thread holds a read
        // lock (made right after one was taken, and !Send), and each guard
        // releases it exactly once, here.
        unsafe { self.cell.lock.unlock_read() }
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// Unique access to an [`RwLock`]'s value while the write lock is held.
/// Dropping it releases the lock; dropping it while the thread panics
/// poisons the lock for every process, as std's guard does. `!Send`.
#[must_use = "if unused the write lock is released at once"]
pub struct RwLockWriteGuard<'a, T: Pod> {
    cell: &'a RwLockCell<T>,
    panicking: bool,
    _not_send: PhantomData<*const ()>,
}

impl<'a, T: Pod> RwLockWriteGuard<'a, T> {
    /// Made only right after this thread took the write lock on `cell`.
    fn new(cell: &'a RwLockCell<T>) -> Self {
        RwLockWriteGuard { cell, panicking: std::thread::panicking(), _not_send: PhantomData }
    }

    /// Hands the guard's lock on without running its `Drop`.
    fn into_cell(guard: Self) -> &'a RwLockCell<T> {
        ManuallyDrop::new(guard).cell
    }

    /// Turns the write lock into a read lock, letting other readers in but
    /// no writer in between (an associated function, so as not to hide a
    /// method of `T`).
    pub fn downgrade(guard: Self) -> RwLockReadGuard<'a, T> {
        let cell = Self::into_cell(guard);
        // SAFETY: the write guard held the write lock; its Drop will not run.
        unsafe { cell.lock.downgrade() };
        RwLockReadGuard::new(cell)
    }

    /// Turns the write lock into an upgradable read.
    pub fn downgrade_to_upgradable(guard: Self) -> RwLockUpgradableReadGuard<'a, T> {
        let cell = Self::into_cell(guard);
        // SAFETY: as in `downgrade`.
        unsafe { cell.lock.downgrade_to_upgradable() };
        RwLockUpgradableReadGuard::new(cell)
    }
}

impl<T: Pod> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the write lock, so no other thread in any
        // process touches the value; the segment outlives 'a.
        unsafe { &*self.cell.value.get() }
    }
}

impl<T: Pod> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this access unique.
        unsafe { &mut *self.cell.value.get() }
    }
}

impl<T: Pod> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        if !self.panicking && std::thread::panicking() {
            self.cell.lock.poison();
        }
        // SAFETY: a write guard exists only while its thread holds the write
        // lock, and releases it exactly once, here (conversions skip this).
        unsafe { self.cell.lock.unlock_write() }
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// Shared access to an [`RwLock`]'s value under an upgradable read: readers
/// share the lock with it, writers and other upgradable readers do not.
/// Dropping it releases the lock. `!Send`.
#[must_use = "if unused the upgradable read is released at once"]
pub struct RwLockUpgradableReadGuard<'a, T: Pod> {
    cell: &'a RwLockCell<T>,
    _not_send: PhantomData<*const ()>,
}

impl<'a, T: Pod> RwLockUpgradableReadGuard<'a, T> {
    /// Made only right after this thread took an upgradable read on `cell`.
    fn new(cell: &'a RwLockCell<T>) -> Self {
        RwLockUpgradableReadGuard { cell, _not_send: PhantomData }
    }

    fn into_cell(guard: Self) -> &'a RwLockCell<T> {
        ManuallyDrop::new(guard).cell
    }

    /// Turns the upgradable read into the write lock, waiting for the other
    /// readers to leave; no writer gets in between.
    ///
    /// # Panics
    /// If this thread also holds a plain read lock (it would wait for
    /// itself); the upgradable read is released as the guard unwinds.
    pub fn upgrade(guard: Self) -> RwLockWriteGuard<'a, T> {
        // SAFETY: the guard holds the upgradable read. If this panics, the
        // raw lock is still upgradable and the guard's Drop releases it.
        // The poison state was reported when the upgradable read was taken,
        // and no writer can have come since.
        let _ = unsafe { guard.cell.lock.upgrade() };
        RwLockWriteGuard::new(Self::into_cell(guard))
    }

    /// As [`upgrade`](Self::upgrade) if no other reader holds the lock;
    /// otherwise gives the upgradable guard back.
    pub fn try_upgrade(guard: Self) -> std::result::Result<RwLockWriteGuard<'a, T>, Self> {
        // SAFETY: the guard holds the upgradable read.
        if unsafe { guard.cell.lock.try_upgrade() } {
            Ok(RwLockWriteGuard::new(Self::into_cell(guard)))
        } else {
            Err(guard)
        }
    }

    /// As [`upgrade`](Self::upgrade), waiting at most `timeout`; gives the
    /// upgradable guard back on timeout (readers that queued meanwhile are
    /// let in).
    pub fn try_upgrade_for(guard: Self, timeout: Duration) -> std::result::Result<RwLockWriteGuard<'a, T>, Self> {
        // SAFETY: the guard holds the upgradable read.
        if unsafe { guard.cell.lock.try_upgrade_for(timeout) } {
            Ok(RwLockWriteGuard::new(Self::into_cell(guard)))
        } else {
            Err(guard)
        }
    }

    /// Turns the upgradable read into a plain read, letting another
    /// upgradable reader or a writer in next.
    pub fn downgrade(guard: Self) -> RwLockReadGuard<'a, T> {
        let cell = Self::into_cell(guard);
        // SAFETY: the guard held the upgradable read; its Drop will not run.
        unsafe { cell.lock.downgrade_upgradable() };
        RwLockReadGuard::new(cell)
    }
}

impl<T: Pod> Deref for RwLockUpgradableReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: an upgradable read shuts writers out, so the value does not
        // change while the guard lives; the segment outlives 'a.
        unsafe { &*self.cell.value.get() }
    }
}

impl<T: Pod> Drop for RwLockUpgradableReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard exists only while its thread holds the
        // upgradable read, and releases it exactly once, here.
        unsafe { self.cell.lock.unlock_upgradable() }
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for RwLockUpgradableReadGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}
