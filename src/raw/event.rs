//! `RawEvent`: a flag that waiters sleep on until it is set (Python's
//! `Event`).
//!
//! One 32-bit futex word:
//!
//! | bits  | name    | meaning |
//! |-------|---------|---------|
//! | 0     | SET     | the flag |
//! | 1     | WAITERS | someone may be asleep on the word; `set` must wake |
//! | 2..32 | gen     | bumped by every `set`, so a waiter that sleeps through a set-then-clear pulse still returns `true`, as Python's does |
//!
//! `set` with nobody asleep is one compare-exchange; `is_set` is one load.
//! Waiters spin briefly (see `spin`), then set WAITERS and sleep.
//!
//! Crash safety. `set` publishes SET (and the new gen) *keeping* WAITERS,
//! wakes every sleeper, and only then clears WAITERS, and only if the word
//! is still exactly what it published: any later `set`, `clear` or new
//! sleeper changes the word, and then the bit stays. So a setter killed
//! between publishing and waking leaves WAITERS set, and the next `set` from
//! any process wakes the sleepers; even with no next `set`, they see SET at
//! their next re-check slice (at most `RECHECK`). A setter killed after the
//! wake leaves WAITERS set: one spare `FUTEX_WAKE` for the next `set`. A
//! waiter killed in its sleep leaves WAITERS set: the next `set` wakes
//! nobody, clears the bit, and later sets make no syscall.
//!
//! All-zero bytes are a valid, clear event; `init` writes exactly that.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::sleep::{Sleeper, Woke};
use super::spin::{Spin, SpinWait};
use crate::sys::futex;
use crate::sys::time::Deadline;

/// This module's crash points (see [`crate::crash`]).
pub(crate) const CRASH_POINTS: &[&str] = &["event.set.published", "event.set.woken"];

const SET: u32 = 1;
const WAITERS: u32 = 2;
const GEN_ONE: u32 = 4;

/// A process-shared event flag.
///
/// Layout: `#[repr(C)]`, 4 bytes, 4-byte aligned; all-zero is a clear event.
///
/// ```
/// use shmsync::raw::RawEvent;
/// use std::time::Duration;
///
/// let ev = RawEvent::default();
/// assert!(!ev.wait_timeout(Duration::from_millis(1)));
/// ev.set();
/// assert!(ev.wait_timeout(Duration::ZERO));
/// ```
#[repr(C)]
#[derive(Default)]
pub struct RawEvent {
    word: AtomicU32,
}

impl RawEvent {
    /// Initialises the event in place, clear.
    ///
    /// # Safety
    /// `this` must be valid for writes and aligned, and no thread in any
    /// process may use the event until `init` returns.
    pub unsafe fn init(this: *mut Self) {
        // SAFETY: the caller guarantees `this` is valid, aligned and unshared.
        unsafe { this.write(RawEvent::default()) }
    }

    /// Whether the flag is set.
    #[inline]
    pub fn is_set(&self) -> bool {
        // Acquire: pairs with the Release in `set`, so what the setter wrote
        // before `set` is visible once this returns true.
        self.word.load(Ordering::Acquire) & SET != 0
    }

    /// Sets the flag and wakes every waiter. No syscall when nobody sleeps.
    #[inline]
    pub fn set(&self) {
        let mut v = self.word.load(Ordering::Relaxed);
        let published = loop {
            // Always one Release read-modify-write, even when the flag is
            // already set, so whatever the caller wrote before `set` is
            // published to the waiters that see it. WAITERS is kept.
            let next = v.wrapping_add(GEN_ONE) | SET;
            match self.word.compare_exchange_weak(v, next, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(now) => v = now,
            }
        };
        if published & WAITERS != 0 {
            self.wake(published);
        }
    }

    #[cold]
    fn wake(&self, published: u32) {
        crash_point!("event.set.published");
        futex::wake_all(&self.word);
        crash_point!("event.set.woken");
        // Everyone asleep on the word is awake. The bit may go only if the
        // word is still what we published: then no later sleeper exists (a
        // waiter that saw this word saw SET and did not sleep).
        let _ = self.word.compare_exchange(published, published & !WAITERS, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Clears the flag. Waiters sleep again until the next `set`.
    #[inline]
    pub fn clear(&self) {
        // WAITERS is kept: sleepers still need the next set to wake them.
        self.word.fetch_and(!SET, Ordering::Relaxed);
    }

    /// Blocks until the flag is set.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Blocks until the flag is set or `timeout` passes. Returns `true` if it
    /// was set (including a set that was cleared again before this waiter
    /// ran), `false` on timeout.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.is_set() || self.wait_until(Some(&Deadline::after(timeout)))
    }

    /// For waiting on many objects and for async waits: marks a sleeper and
    /// returns the word and the value to sleep on, or `None` if the flag is
    /// set (or the generation moved past `gen`, when given).
    pub(crate) fn arm(&self, gen: Option<u32>) -> Option<(&AtomicU32, u32)> {
        loop {
            let v = self.word.load(Ordering::Acquire);
            if v & SET != 0 || gen.is_some_and(|g| v & !(SET | WAITERS) != g) {
                return None;
            }
            if v & WAITERS != 0
                || self.word.compare_exchange_weak(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                return Some((&self.word, v | WAITERS));
            }
        }
    }

    /// The generation now (for a wait that must also see set-then-clear
    /// pulses, as `wait` does).
    pub(crate) fn generation(&self) -> u32 {
        self.word.load(Ordering::Acquire) & !(SET | WAITERS)
    }

    /// Whether the flag is set or the generation moved past `gen`.
    pub(crate) fn signalled_since(&self, gen: u32) -> bool {
        let v = self.word.load(Ordering::Acquire);
        v & SET != 0 || v & !(SET | WAITERS) != gen
    }

    /// The shared slow path of every wait.
    pub(crate) fn wait_until(&self, deadline: Option<&Deadline>) -> bool {
        let start = self.word.load(Ordering::Acquire);
        if start & SET != 0 {
            return true;
        }
        let gen = start & !(SET | WAITERS);
        let signalled = |v: u32| v & SET != 0 || v & !(SET | WAITERS) != gen;
        let mut spin = SpinWait::new(Spin::Event, deadline);
        let mut sleeper = Sleeper::new();
        loop {
            let v = self.word.load(Ordering::Acquire);
            if signalled(v) {
                return true;
            }
            if spin.spin() {
                continue;
            }
            if v & WAITERS == 0
                && self.word.compare_exchange_weak(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            if sleeper.sleep(&self.word, v | WAITERS, deadline) == Woke::Deadline {
                return signalled(self.word.load(Ordering::Acquire));
            }
        }
    }
}

impl std::fmt::Debug for RawEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawEvent").field("is_set", &self.is_set()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_as_documented() {
        assert_eq!(std::mem::size_of::<RawEvent>(), 4);
        assert_eq!(std::mem::align_of::<RawEvent>(), 4);
    }

    #[test]
    fn set_clear_and_timeouts() {
        let ev = RawEvent::default();
        assert!(!ev.is_set());
        assert!(!ev.wait_timeout(Duration::ZERO));
        ev.set();
        ev.set();
        assert!(ev.is_set());
        ev.wait();
        ev.clear();
        assert!(!ev.wait_timeout(Duration::from_millis(5)));
    }

    #[test]
    fn a_pulse_wakes_a_sleeper() {
        let ev = RawEvent::default();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| ev.wait_timeout(Duration::from_secs(30)));
            // Wait until the waiter is asleep (WAITERS set), then pulse.
            while ev.word.load(Ordering::Relaxed) & WAITERS == 0 {
                std::thread::yield_now();
            }
            ev.set();
            ev.clear();
            assert!(waiter.join().unwrap());
        });
    }
}
