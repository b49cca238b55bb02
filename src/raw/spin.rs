//! The one spin policy: how long a waiter keeps checking before it sleeps.
//!
//! A kernel wake across cores costs tens of microseconds on a VM (measured
//! here: 45–57 µs per round trip), while a peer that is running on another
//! core answers in well under one. So a waiter first polls its word with
//! `pause` for a while, then sleeps on its futex.
//!
//! How long is learned, per thread and per kind of wait ([`Spin`]): a wait
//! that spinning satisfied doubles that kind's budget (up to `MAX_BUDGET`
//! pauses); one that had to sleep cuts it by a quarter (down to
//! `MIN_BUDGET`, so it keeps probing cheaply). Per kind, because the kinds
//! behave differently: lock hand-offs are short and spinning pays, while a
//! thread's long condition waits would otherwise burn the maximum on every
//! wait after its locks taught the budget to grow. Spinning helps only when
//! the peer runs on another core at the same time, which a waiter cannot
//! see; when the peer shares our core every poll fails, and the budget
//! falls to a few pauses within a handful of waits.
//!
//! A spin never outlives its wait's deadline: it checks the clock between
//! bursts, and a wait whose deadline has already passed (a `try_` call, a
//! zero timeout) does not spin at all.
//!
//! No `sched_yield`: with an unrelated busy process on the core, a yield can
//! hand it a whole time slice (milliseconds), while a futex sleeper that is
//! woken gets the scheduler's wake-up preference.
//!
//! The limits were chosen with `cargo bench --bench handoff` (three
//! placements, plus a CPU hog on one core for the unpinned case). The price
//! is CPU: a wait that ends up sleeping first burns its budget, at most
//! `MAX_BUDGET` pauses (tens of microseconds, about what one kernel wake
//! costs here, the classic bound for spinning before blocking), and only
//! while spinning keeps paying off for that kind of wait.

use std::cell::Cell;

use crate::sys::time::Deadline;

/// The least a waiter spins, in pauses: under a microsecond.
const MIN_BUDGET: u32 = 32;
/// The most a waiter spins, in pauses: some tens of microseconds.
const MAX_BUDGET: u32 = 2048;
/// Where a thread starts: spinning as long as it may, so two processes on
/// different cores start out, and stay, in the fast polling regime.
const INITIAL_BUDGET: u32 = MAX_BUDGET;
/// The longest burst of pauses between two looks at the word.
const MAX_BURST: u32 = 64;

/// The kinds of wait that learn their own spin budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spin {
    /// Taking a contended robust lock.
    Lock,
    /// Waiting for an event to be set.
    Event,
    /// Waiting on a condition variable.
    Condition,
    /// Waiting for a semaphore unit.
    Semaphore,
    /// Waiting for a barrier's generation to end.
    Barrier,
    /// Waiting for a queue's ring to change.
    Ring,
    /// Waiting on several objects at once (`wait_any`, `wait_all`).
    Many,
    /// Waiting on a reader-writer lock: for its writer to leave, or for its
    /// readers to drain.
    RwLock,
}

/// How many kinds there are (the last one's index, plus one).
const KINDS: usize = Spin::RwLock as usize + 1;

thread_local! {
    /// This thread's spin budget for each kind of wait, in pauses.
    static BUDGETS: [Cell<u32>; KINDS] = const { [const { Cell::new(INITIAL_BUDGET) }; KINDS] };
}

/// A bounded spin countdown for one wait. Dropping it records whether the
/// spin paid off.
pub(crate) struct SpinWait<'a> {
    kind: Spin,
    spent: u32,
    budget: u32,
    burst: u32,
    exhausted: bool,
    /// The deadline stopped the spin: it says nothing about whether spinning pays.
    cut: bool,
    deadline: Option<&'a Deadline>,
}

impl<'a> SpinWait<'a> {
    /// A new countdown with this thread's current budget for `kind`, cut
    /// short by `deadline`: none at all if it has passed already.
    pub(crate) fn new(kind: Spin, deadline: Option<&'a Deadline>) -> SpinWait<'a> {
        let budget =
            if deadline.is_some_and(Deadline::has_passed) { 0 } else { BUDGETS.with(|b| b[kind as usize].get()) };
        SpinWait { kind, spent: 0, budget, burst: 1, exhausted: false, cut: false, deadline }
    }

    /// Pauses a little (bursts double, so the word is checked often at
    /// first). Returns `false` when the budget is spent, or the deadline has
    /// passed, and the caller should sleep on its futex (or give up).
    pub(crate) fn spin(&mut self) -> bool {
        if self.spent >= self.budget {
            // A wait that never spun (its deadline had passed) teaches nothing.
            self.exhausted = self.budget > 0;
            return false;
        }
        if self.burst == MAX_BURST && self.deadline.is_some_and(Deadline::has_passed) {
            self.cut = true;
            self.budget = self.spent;
            return false;
        }
        let n = self.burst.min(self.budget - self.spent);
        for _ in 0..n {
            std::hint::spin_loop();
        }
        self.spent += n;
        self.burst = (self.burst * 2).min(MAX_BURST);
        true
    }
}

impl Drop for SpinWait<'_> {
    fn drop(&mut self) {
        let next = if self.cut {
            return;
        } else if self.exhausted {
            // A gentle cut: one slow wake between two spinning peers must not
            // tip them both into sleeping for good, while a peer on our own
            // core (every spin fails) still brings the budget down to the
            // floor within about a dozen waits.
            (self.budget - self.budget / 4).max(MIN_BUDGET)
        } else if self.spent > 0 {
            (self.budget * 2).min(MAX_BUDGET)
        } else {
            return;
        };
        BUDGETS.with(|b| b[self.kind as usize].set(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(kind: Spin) -> u32 {
        BUDGETS.with(|b| b[kind as usize].get())
    }

    #[test]
    fn the_budget_falls_after_a_failed_spin_and_doubles_after_a_good_one() {
        BUDGETS.with(|b| b[Spin::Event as usize].set(INITIAL_BUDGET));
        let mut failed = SpinWait::new(Spin::Event, None);
        while failed.spin() {}
        drop(failed);
        assert_eq!(budget(Spin::Event), INITIAL_BUDGET - INITIAL_BUDGET / 4);
        let mut good = SpinWait::new(Spin::Event, None);
        assert!(good.spin());
        drop(good);
        assert_eq!(budget(Spin::Event), MAX_BUDGET);
        for _ in 0..40 {
            let mut failed = SpinWait::new(Spin::Event, None);
            while failed.spin() {}
        }
        assert_eq!(budget(Spin::Event), MIN_BUDGET);
    }

    #[test]
    fn kinds_learn_apart() {
        BUDGETS.with(|b| b.iter().for_each(|c| c.set(INITIAL_BUDGET)));
        for _ in 0..40 {
            let mut failed = SpinWait::new(Spin::Condition, None);
            while failed.spin() {}
        }
        assert_eq!(budget(Spin::Condition), MIN_BUDGET);
        assert_eq!(budget(Spin::Lock), INITIAL_BUDGET);
    }

    #[test]
    fn a_passed_deadline_means_no_spin_and_no_lesson() {
        BUDGETS.with(|b| b[Spin::Semaphore as usize].set(INITIAL_BUDGET));
        let now = Deadline::after(Duration::ZERO);
        let mut spin = SpinWait::new(Spin::Semaphore, Some(&now));
        assert!(!spin.spin());
        drop(spin);
        assert_eq!(budget(Spin::Semaphore), INITIAL_BUDGET);
    }
}
