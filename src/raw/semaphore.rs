//! `RawSemaphore`: a counting semaphore, optionally bounded (Python's
//! `Semaphore` and `BoundedSemaphore`).
//!
//! | field     | meaning |
//! |-----------|---------|
//! | `value`   | the futex word: bits 0..31 the units available, bit 31 SLEEPERS (someone may be asleep on the word) |
//! | `_reserved` | zero |
//! | `max`     | the largest value `release` may reach (`MAX_VALUE` when unbounded) |
//!
//! `acquire` with a unit free is one compare-exchange; `release` with nobody
//! asleep is one compare-exchange. A waiter sets SLEEPERS (keeping the units,
//! which are 0) before it sleeps on the word; `release` adds a unit keeping
//! SLEEPERS, and if the bit was set, wakes one sleeper. A woken waiter that
//! takes its unit and sees units left and SLEEPERS set wakes the next (a
//! release may have woken it for a unit another took).
//!
//! SLEEPERS is cleared only by a `release` whose wake found nobody asleep,
//! and only while units are free: then no one can be asleep for the lack of
//! one (a waiter sleeps only on a word showing 0 units, and a word showing
//! units makes its sleep fail at once). So a waiter killed in its sleep costs
//! the next release one `FUTEX_WAKE`, and no release after it anything.
//!
//! Crash safety: a releaser killed between adding its unit and waking leaves
//! SLEEPERS set, and the next release wakes a sleeper, which finds both units;
//! a waiter woken and killed before it takes its unit leaves the unit free.
//! Either way a sleeper also sees the free unit at its next re-check slice
//! (at most `RECHECK`), so no one sleeps longer than that beside a free unit.
//!
//! All-zero bytes are *not* valid (`max` would be 0); call `init`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::sleep::{Sleeper, Woke};
use super::spin::{Spin, SpinWait};
use crate::sys::futex;
use crate::sys::time::Deadline;

/// This module's crash points (see [`crate::crash`]).
pub(crate) const CRASH_POINTS: &[&str] = &["semaphore.release.published", "semaphore.acquire.woken"];

/// The largest value a semaphore may hold (`i32::MAX`).
pub const MAX_VALUE: u32 = i32::MAX as u32;

const SLEEPERS: u32 = 1 << 31;
const UNITS: u32 = !SLEEPERS;

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
    _reserved: u32,
    /// Checked at open, but a peer may write it later: read atomically and
    /// bounded by [`MAX_VALUE`] at every use.
    max: AtomicU32,
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
        check_values(value, max)?;
        let sem = RawSemaphore { value: AtomicU32::new(value), _reserved: 0, max: AtomicU32::new(max) };
        // SAFETY: the caller guarantees `this` is valid, aligned and unshared.
        unsafe { this.write(sem) };
        Ok(())
    }

    /// On open: whether the fields are a semaphore `init` could have made.
    pub(crate) fn check(&self) -> Result<(), String> {
        check_values(self.value(), self.max.load(Ordering::Relaxed))
    }

    /// The units available now (a snapshot).
    pub fn value(&self) -> u32 {
        self.value.load(Ordering::Relaxed) & UNITS
    }

    /// The largest value `release` may reach.
    pub fn max(&self) -> u32 {
        // Bounded, so `release` never carries the count into the flag bit.
        self.max.load(Ordering::Relaxed).min(MAX_VALUE)
    }

    /// Takes a unit if one is free, without blocking.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let mut v = self.value.load(Ordering::Relaxed);
        while v & UNITS > 0 {
            // Acquire: what the releaser wrote before releasing is visible to
            // the taker.
            match self.value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
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

    /// The slow path of every acquire: spin, then sleep while no unit is free.
    #[cold]
    pub(crate) fn acquire_slow(&self, deadline: Option<&Deadline>) -> bool {
        let mut spin = SpinWait::new(Spin::Semaphore, deadline);
        while spin.spin() {
            if self.try_acquire() {
                return true;
            }
        }
        drop(spin);
        let mut slept = false;
        let mut sleeper = Sleeper::new();
        loop {
            if self.try_acquire() {
                if slept {
                    self.pass_on();
                }
                return true;
            }
            let v = self.value.load(Ordering::Relaxed);
            if v & UNITS > 0 {
                continue;
            }
            if v & SLEEPERS == 0
                && self.value.compare_exchange_weak(v, v | SLEEPERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            slept = true;
            match sleeper.sleep(&self.value, v | SLEEPERS, deadline) {
                Woke::Deadline => return self.try_acquire(),
                Woke::Signalled => crash_point!("semaphore.acquire.woken"),
                Woke::Recheck => {}
            }
        }
    }

    /// For waiting on many objects and for async waits: marks a sleeper and
    /// returns the word and the value to sleep on, or `None` if a unit is free.
    pub(crate) fn arm(&self) -> Option<(&AtomicU32, u32)> {
        loop {
            let v = self.value.load(Ordering::Relaxed);
            if v & UNITS > 0 {
                return None;
            }
            if v & SLEEPERS != 0
                || self.value.compare_exchange_weak(v, v | SLEEPERS, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                return Some((&self.value, v | SLEEPERS));
            }
        }
    }

    /// After a sleeper took a unit, or a waiter that may have absorbed a
    /// wake left without one: if units are left and others may sleep, wake
    /// the next, in case the wake meant for them went to us.
    pub(crate) fn pass_on(&self) {
        let v = self.value.load(Ordering::Relaxed);
        if v & UNITS > 0 && v & SLEEPERS != 0 {
            self.wake_one();
        }
    }

    /// Returns a unit, waking one waiter if any sleeps.
    ///
    /// `Err(AtMaximum)` leaves the semaphore unchanged; the check and the
    /// increment are one compare-exchange, so of several processes racing to
    /// release the last missing units, exactly as many succeed as were missing.
    #[inline]
    pub fn release(&self) -> Result<(), AtMaximum> {
        let max = self.max();
        let mut v = self.value.load(Ordering::Relaxed);
        loop {
            if v & UNITS >= max {
                return Err(AtMaximum { max });
            }
            // Release: publishes the releaser's writes to the next taker.
            match self.value.compare_exchange_weak(v, v + 1, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if v & SLEEPERS != 0 {
            self.wake_one();
        }
        Ok(())
    }

    /// Wakes one sleeper; if none was asleep, clears SLEEPERS while units
    /// are free (see the module docs for why that is safe).
    #[cold]
    fn wake_one(&self) {
        crash_point!("semaphore.release.published");
        if futex::wake(&self.value, 1) == 0 {
            let v = self.value.load(Ordering::Relaxed);
            if v & UNITS > 0 && v & SLEEPERS != 0 {
                let _ = self.value.compare_exchange(v, v & !SLEEPERS, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }
}

fn check_values(value: u32, max: u32) -> Result<(), String> {
    if max > MAX_VALUE {
        return Err(format!("the maximum {max} exceeds {MAX_VALUE}"));
    }
    if value > max {
        return Err(format!("the value {value} exceeds the maximum {max}"));
    }
    Ok(())
}

impl std::fmt::Debug for RawSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSemaphore").field("value", &self.value()).field("max", &self.max()).finish()
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
    fn a_sleeper_killed_in_its_sleep_costs_one_wake_then_none() {
        let sem = new(0, None);
        // As a dead sleeper leaves it: SLEEPERS set, nobody asleep.
        sem.value.fetch_or(SLEEPERS, Ordering::Relaxed);
        sem.release().unwrap();
        assert_eq!(sem.value.load(Ordering::Relaxed) & SLEEPERS, 0);
        let before = futex::wake_calls();
        for _ in 0..10 {
            sem.release().unwrap();
        }
        assert_eq!(futex::wake_calls(), before);
        assert_eq!(sem.value(), 11);
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
