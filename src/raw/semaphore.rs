//! `RawSemaphore`: a counting semaphore, optionally bounded (Python's
//! `Semaphore` and `BoundedSemaphore`).
//!
//! | field     | meaning |
//! |-----------|---------|
//! | `value`   | the units available; the futex word waiters sleep on while it is 0 |
//! | `waiters` | how many may be asleep; `release` wakes only when it is non-zero |
//! | `max`     | the largest value `release` may reach (`MAX_VALUE` when unbounded) |
//!
//! `acquire` with a unit free is one compare-exchange; `release` with nobody
//! waiting is one compare-exchange and one load. The `waiters` increment and
//! the `value` read of a waiter, and the `value` update and `waiters` read of
//! a releaser, are all SeqCst: of the two, at least one sees the other, so a
//! release never misses a sleeper.
//!
//! A waiter killed in its sleep leaves `waiters` one too high, which costs
//! later releases a `FUTEX_WAKE` each and nothing else. A waiter killed in the
//! instant between being woken and taking its unit leaves the unit in
//! `value`; the next `release` or acquire finds it.
//!
//! All-zero bytes are *not* valid (`max` would be 0); call `init`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::spin::SpinWait;
use crate::sys::futex;
use crate::sys::time::Deadline;

/// The largest value a semaphore may hold (`i32::MAX`).
pub const MAX_VALUE: u32 = i32::MAX as u32;

/// `release` found the semaphore at its maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtMaximum {
    /// The maximum.
    pub max: u32,
}

/// A process-shared counting semaphore.
///
/// Layout: `#[repr(C)]`, 12 bytes, 4-byte aligned. All-zero bytes are not a
/// valid semaphore; call [`init`](Self::init).
///
/// ```
/// use shmsync::raw::RawSemaphore;
/// use std::mem::MaybeUninit;
///
/// let mut slot = MaybeUninit::<RawSemaphore>::uninit();
/// // SAFETY: the slot is valid, aligned and unshared.
/// unsafe { RawSemaphore::init(slot.as_mut_ptr(), 1, Some(1)) }.unwrap();
/// // SAFETY: init succeeded.
/// let sem = unsafe { slot.assume_init_ref() };
/// assert!(sem.try_acquire());
/// assert!(!sem.try_acquire());
/// sem.release().unwrap();
/// assert!(sem.release().is_err()); // bounded at 1
/// ```
#[repr(C)]
pub struct RawSemaphore {
    value: AtomicU32,
    waiters: AtomicU32,
    max: u32,
}

impl RawSemaphore {
    /// Initialises the semaphore with `value` units. `max` bounds `release`
    /// (a `BoundedSemaphore`); `None` allows up to [`MAX_VALUE`].
    ///
    /// Returns a description of the problem, writing nothing, if `value` or
    /// `max` exceeds [`MAX_VALUE`] or `value` exceeds `max`.
    ///
    /// # Safety
    /// `this` must be valid for writes and aligned, and no thread in any
    /// process may use the semaphore until `init` returns.
    pub unsafe fn init(this: *mut Self, value: u32, max: Option<u32>) -> Result<(), String> {
        let max = max.unwrap_or(MAX_VALUE);
        if max > MAX_VALUE {
            return Err(format!("the maximum {max} exceeds {MAX_VALUE}"));
        }
        if value > max {
            return Err(format!("the value {value} exceeds the maximum {max}"));
        }
        let sem = RawSemaphore { value: AtomicU32::new(value), waiters: AtomicU32::new(0), max };
        // SAFETY: the caller guarantees `this` is valid, aligned and unshared.
        unsafe { this.write(sem) };
        Ok(())
    }

    /// The units available now (a snapshot).
    pub fn value(&self) -> u32 {
        self.value.load(Ordering::Relaxed)
    }

    /// The largest value `release` may reach.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Takes a unit if one is free, without blocking.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let mut v = self.value.load(Ordering::Relaxed);
        while v > 0 {
            // Acquire: what the releaser wrote before releasing is visible to
            // the taker. SeqCst on success serves the waiter handshake.
            match self.value.compare_exchange_weak(v, v - 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// Blocks until a unit is free and takes it.
    #[inline]
    pub fn acquire(&self) {
        if !self.try_acquire() {
            self.acquire_slow(None);
        }
    }

    /// Takes a unit, waiting at most `timeout`. Returns whether it did.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.try_acquire() || self.acquire_slow(Some(&Deadline::after(timeout)))
    }

    /// The slow path of every acquire: spin, then sleep while `value` is 0.
    #[cold]
    pub(crate) fn acquire_slow(&self, deadline: Option<&Deadline>) -> bool {
        let mut spin = SpinWait::new();
        while spin.spin() {
            if self.try_acquire() {
                return true;
            }
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let taken = loop {
            if self.try_acquire() {
                break true;
            }
            if !futex::wait(&self.value, 0, deadline) {
                break self.try_acquire();
            }
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        if taken && self.value.load(Ordering::SeqCst) > 0 && self.waiters.load(Ordering::SeqCst) > 0 {
            // Units are left and others sleep: pass the wake on, in case the
            // wake that freed us was meant for one of them.
            futex::wake(&self.value, 1);
        }
        taken
    }

    /// Returns a unit, waking one waiter if any sleeps.
    ///
    /// `Err(AtMaximum)` leaves the semaphore unchanged; the check and the
    /// increment are one compare-exchange, so of several processes racing to
    /// release the last missing units, exactly as many succeed as were missing.
    #[inline]
    pub fn release(&self) -> Result<(), AtMaximum> {
        let mut v = self.value.load(Ordering::Relaxed);
        loop {
            if v >= self.max {
                return Err(AtMaximum { max: self.max });
            }
            // Release: publishes the releaser's writes to the next taker;
            // SeqCst for the waiter handshake described at the top.
            match self.value.compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.wake_one();
        }
        Ok(())
    }

    #[cold]
    fn wake_one(&self) {
        futex::wake(&self.value, 1);
    }
}

impl std::fmt::Debug for RawSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSemaphore").field("value", &self.value()).field("max", &self.max).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::MaybeUninit;

    fn new(value: u32, max: Option<u32>) -> Box<RawSemaphore> {
        let mut b = Box::new(MaybeUninit::<RawSemaphore>::uninit());
        // SAFETY: fresh, aligned, unshared storage.
        unsafe { RawSemaphore::init(b.as_mut_ptr(), value, max) }.unwrap();
        // SAFETY: init succeeded, so the value is initialised.
        unsafe { Box::from_raw(Box::into_raw(b).cast()) }
    }

    #[test]
    fn layout_is_as_documented() {
        assert_eq!(std::mem::size_of::<RawSemaphore>(), 12);
        assert_eq!(std::mem::align_of::<RawSemaphore>(), 4);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let mut slot = MaybeUninit::<RawSemaphore>::uninit();
        // SAFETY: valid storage; init writes nothing when it refuses.
        unsafe {
            assert!(RawSemaphore::init(slot.as_mut_ptr(), MAX_VALUE + 1, None).is_err());
            assert!(RawSemaphore::init(slot.as_mut_ptr(), 3, Some(2)).is_err());
        }
    }

    #[test]
    fn unbounded_release_stops_at_max_value() {
        let sem = new(MAX_VALUE - 1, None);
        sem.release().unwrap();
        assert_eq!(sem.release(), Err(AtMaximum { max: MAX_VALUE }));
    }

    #[test]
    fn timeouts_and_threads() {
        let sem = new(0, None);
        assert!(!sem.acquire_timeout(Duration::from_millis(5)));
        std::thread::scope(|s| {
            let t = s.spawn(|| sem.acquire_timeout(Duration::from_secs(30)));
            sem.release().unwrap();
            assert!(t.join().unwrap());
        });
        assert_eq!(sem.value(), 0);
    }
}
