//! The one spin policy: how long a waiter keeps checking before it sleeps.
//!
//! A kernel wake across cores costs tens of microseconds on a VM (measured
//! here: 45–57 µs per round trip), while a peer that is running on another
//! core answers in well under one. So a waiter first polls its word with
//! `pause` for a while, then sleeps on its futex.
//!
//! How long is learned, per thread: a wait that spinning satisfied doubles
//! the budget (up to `MAX_BUDGET` pauses); one that had to sleep cuts it by
//! a quarter (down to `MIN_BUDGET`, so it keeps probing cheaply). Spinning helps only
//! when the peer runs on another core at the same time, which a waiter
//! cannot see: processes may be pinned anywhere, or share a core because the
//! scheduler put them there. When the peer shares our core, polling only
//! delays it, every poll fails, and the budget falls to a few pauses within
//! a handful of waits.
//!
//! No `sched_yield`: with an unrelated busy process on the core, a yield can
//! hand it a whole time slice (milliseconds), while a futex sleeper that is
//! woken gets the scheduler's wake-up preference.
//!
//! The limits were chosen with `cargo bench --bench handoff` (three
//! placements, plus a CPU hog on one core for the unpinned case). The price
//! is CPU: a wait that ends up sleeping first burns the budget, at most
//! `MAX_BUDGET` pauses (tens of microseconds, about what one kernel wake
//! costs here, the classic bound for spinning before blocking), and only
//! while spinning keeps paying off.

use std::cell::Cell;

/// The least a waiter spins, in pauses: under a microsecond.
const MIN_BUDGET: u32 = 32;
/// The most a waiter spins, in pauses: some tens of microseconds.
const MAX_BUDGET: u32 = 2048;
/// Where a thread starts: spinning as long as it may, so two processes on
/// different cores start out, and stay, in the fast polling regime.
const INITIAL_BUDGET: u32 = MAX_BUDGET;

thread_local! {
    /// This thread's spin budget, in pauses.
    static BUDGET: Cell<u32> = const { Cell::new(INITIAL_BUDGET) };
}

/// A bounded spin countdown for one wait. Dropping it records whether the
/// spin paid off.
pub(crate) struct SpinWait {
    spent: u32,
    budget: u32,
    burst: u32,
    exhausted: bool,
}

impl SpinWait {
    /// A new countdown with this thread's current budget.
    pub(crate) fn new() -> SpinWait {
        SpinWait { spent: 0, budget: BUDGET.get(), burst: 1, exhausted: false }
    }

    /// Pauses a little (bursts double, so the word is checked often at
    /// first). Returns `false` when the budget is spent and the caller should
    /// sleep on its futex.
    pub(crate) fn spin(&mut self) -> bool {
        if self.spent >= self.budget {
            self.exhausted = true;
            return false;
        }
        let n = self.burst.min(self.budget - self.spent);
        for _ in 0..n {
            std::hint::spin_loop();
        }
        self.spent += n;
        self.burst = (self.burst * 2).min(64);
        true
    }
}

impl Drop for SpinWait {
    fn drop(&mut self) {
        if self.exhausted {
            // A gentle cut: one slow wake between two spinning peers must not
            // tip them both into sleeping for good, while a peer on our own
            // core (every spin fails) still brings the budget down to the
            // floor within about a dozen waits.
            BUDGET.set((self.budget - self.budget / 4).max(MIN_BUDGET));
        } else if self.spent > 0 {
            BUDGET.set((self.budget * 2).min(MAX_BUDGET));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_halves_after_a_failed_spin_and_doubles_after_a_good_one() {
        BUDGET.set(INITIAL_BUDGET);
        let mut failed = SpinWait::new();
        while failed.spin() {}
        drop(failed);
        assert_eq!(BUDGET.get(), INITIAL_BUDGET - INITIAL_BUDGET / 4);
        let mut good = SpinWait::new();
        assert!(good.spin());
        drop(good);
        assert_eq!(BUDGET.get(), MAX_BUDGET);
        for _ in 0..40 {
            let mut failed = SpinWait::new();
            while failed.spin() {}
        }
        assert_eq!(BUDGET.get(), MIN_BUDGET);
    }
}
