//! How every waiter in the crate sleeps: on a shared futex word, in slices
//! of at most [`RECHECK`], re-checking its condition after each.
//!
//! The slices are the last line of the crash rules. Every primitive is built
//! so that a process killed between a state change and its wake leaves a
//! flag or count that the next live operation acts on; but when no live
//! operation comes (the last setter died right after publishing, or a waiter
//! was woken for a unit and died before taking it while nobody releases
//! again), a sleeper still notices the change within one slice. The bound:
//! a survivor goes on at most [`RECHECK`] after the state it waits for holds.
//! The cost: a sleeper wakes four times a second to look at one word, a few
//! microseconds of CPU per second asleep (measured in
//! `tests/crash_points.rs`' neighbour, `benches/handoff.rs`), and no
//! syscall for anyone else.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use crate::sys::futex;
use crate::sys::time::Deadline;

/// The longest a waiter sleeps before it re-checks its condition.
pub const RECHECK: Duration = Duration::from_millis(250);

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

/// A test's override of [`RECHECK`], in milliseconds (0: none). Only in
/// `failpoints` builds, so the crash-point suite can show which recoveries
/// do not depend on the slices.
#[cfg(feature = "failpoints")]
static RECHECK_OVERRIDE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets the slice this process's waiters sleep in (tests only).
#[cfg(feature = "failpoints")]
pub fn set_recheck_for_tests(slice: Duration) {
    RECHECK_OVERRIDE_MS.store(slice.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
}

fn recheck() -> Duration {
    #[cfg(feature = "failpoints")]
    {
        let ms = RECHECK_OVERRIDE_MS.load(std::sync::atomic::Ordering::Relaxed);
        if ms != 0 {
            return Duration::from_millis(ms);
        }
    }
    RECHECK
}

/// Sleeps while `*word == expected`, for at most one slice and never past
/// `deadline`.
pub(crate) fn sleep(word: &AtomicU32, expected: u32, deadline: Option<&Deadline>) -> Woke {
    let slice = Deadline::after(recheck());
    let until = deadline.map_or(&slice, |d| d.earlier(&slice));
    if futex::wait(word, expected, Some(until)) {
        Woke::Signalled
    } else if deadline.is_some_and(Deadline::has_passed) {
        Woke::Deadline
    } else {
        Woke::Recheck
    }
}
