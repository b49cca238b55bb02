//! How every waiter in the crate sleeps: on a shared futex word, in slices,
//! re-checking its condition after each.
//!
//! The slices are the last line of the crash rules. Every primitive is built
//! so that a process killed between a state change and its wake leaves a
//! flag that the next live operation acts on; but when no live operation
//! comes (the last setter died right after publishing, or a waiter was woken
//! for a unit and died before taking it while nobody releases again), a
//! sleeper still notices the change within one slice.
//!
//! A wait's first slice is [`FIRST_SLICE`]; each slice that ends with
//! nothing to do doubles the next, up to [`RECHECK`]. The bound: a survivor
//! goes on at most [`RECHECK`] (1 s) after the state it waits for holds, and
//! within a quarter of that early in a wait. The cost: a waiter that sleeps
//! for long wakes once a second to look at one word; `cargo bench --bench
//! sleeper` measures the CPU that takes against a plain futex sleep.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use crate::sys::futex;
use crate::sys::time::Deadline;

/// The longest a waiter sleeps before it re-checks its condition: the bound
/// on how long a survivor can wait for what a killed process left undone.
pub const RECHECK: Duration = Duration::from_secs(1);

/// A wait's first slice.
pub const FIRST_SLICE: Duration = Duration::from_millis(250);

/// Marks a sleeper on a sequence word whose bit `flag` says "someone may
/// sleep" and whose other bits count in steps of `step`: sets the flag *and*
/// advances the count, so the word always changes. Returns the new value, to
/// sleep on. SeqCst, for the sleeper's look at its condition that follows.
///
/// Why the count must move: a waker may clear the flag after a wake that
/// found nobody, but only if the word is still the value it left. A sleeper
/// that merely set an already-set flag would leave the word unchanged, sleep
/// on it, and have its flag cleared from under it: the next waker would skip
/// the wake.
pub(crate) fn register_sleeper(word: &AtomicU32, flag: u32, step: u32) -> u32 {
    let mut seen = word.load(std::sync::atomic::Ordering::Relaxed);
    loop {
        let next = seen.wrapping_add(step) | flag;
        match word.compare_exchange_weak(
            seen,
            next,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::Relaxed,
        ) {
            Ok(_) => return next,
            Err(now) => seen = now,
        }
    }
}

/// Why a sleep ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woke {
    /// A wake, a changed word, or a signal: look again.
    Signalled,
    /// The slice ran out: look again, and check for the dead.
    Recheck,
    /// The caller's deadline passed.
    Deadline,
}

/// A test's override of the slices, in milliseconds (0: none). Only in
/// `failpoints` builds, so the crash-point suite can show which recoveries
/// do not depend on the slices.
#[cfg(feature = "failpoints")]
static SLICE_OVERRIDE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets the slice this process's waiters sleep in (tests only).
#[cfg(feature = "failpoints")]
pub fn set_recheck_for_tests(slice: Duration) {
    SLICE_OVERRIDE_MS.store(slice.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
}

fn overridden() -> Option<Duration> {
    #[cfg(feature = "failpoints")]
    {
        let ms = SLICE_OVERRIDE_MS.load(std::sync::atomic::Ordering::Relaxed);
        if ms != 0 {
            return Some(Duration::from_millis(ms));
        }
    }
    None
}

/// One wait's sleeps: each slice twice the last, up to [`RECHECK`].
pub(crate) struct Sleeper {
    slice: Duration,
    /// Whether a sleep of this wait had time left to sleep in.
    slept: bool,
}

impl Sleeper {
    pub(crate) fn new() -> Sleeper {
        Sleeper { slice: overridden().unwrap_or(FIRST_SLICE), slept: false }
    }

    /// Whether this wait has slept at all (not only been told its deadline
    /// had passed). A wait whose deadline ends it before its first slice
    /// does, having slept, look for the dead before it gives up: else a
    /// caller looping on short timeouts would never see a dead holder.
    pub(crate) fn slept(&self) -> bool {
        self.slept
    }

    /// Sleeps while `*word == expected`, for at most one slice and never
    /// past `deadline`.
    pub(crate) fn sleep(&mut self, word: &AtomicU32, expected: u32, deadline: Option<&Deadline>) -> Woke {
        self.sleep_at(word, expected, deadline)
    }

    /// As [`sleep`](Self::sleep), for a word known only by its address (the
    /// kernel alone reads it; see `futex::wait_at`).
    pub(crate) fn sleep_at(&mut self, word: *const AtomicU32, expected: u32, deadline: Option<&Deadline>) -> Woke {
        let slice = Deadline::after(self.slice);
        let until = deadline.map_or(&slice, |d| d.earlier(&slice));
        self.slept |= !until.has_passed();
        if futex::wait_at(word, expected, Some(until)) {
            Woke::Signalled
        } else {
            self.timed_out(deadline)
        }
    }

    /// Sleeps while every word holds its expected value (one `futex_waitv`),
    /// for at most one slice and never past `deadline`. `None` if the kernel
    /// cannot wait on many words.
    pub(crate) fn sleep_many(
        &mut self,
        words: &[(*const AtomicU32, u32)],
        deadline: Option<&Deadline>,
    ) -> Option<Woke> {
        let slice = Deadline::after(self.slice);
        let until = deadline.map_or(&slice, |d| d.earlier(&slice));
        self.slept |= !until.has_passed();
        match futex::wait_many(words, Some(until)) {
            futex::Many::Woken(_) | futex::Many::Changed => Some(Woke::Signalled),
            futex::Many::TimedOut => Some(self.timed_out(deadline)),
            futex::Many::Unsupported => None,
        }
    }

    /// After a sleep that ran to its end: the caller's deadline, or the end
    /// of a slice (and the next is longer).
    fn timed_out(&mut self, deadline: Option<&Deadline>) -> Woke {
        if deadline.is_some_and(Deadline::has_passed) {
            Woke::Deadline
        } else {
            self.slice = overridden().unwrap_or((self.slice * 2).min(RECHECK));
            Woke::Recheck
        }
    }
}
