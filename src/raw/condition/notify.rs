//! The notifying side: picking the oldest waiters, waking sleeping ones
//! (WAITING → NOTIFIED, or SLEEPING → WAKING → NOTIFIED), finishing the
//! wakes of notifiers that died, and waking the overflow waiters.

use super::*;
use crate::sys::futex;

impl RawCondition {
    /// Wakes one waiter, if any sleeps.
    #[inline]
    pub fn notify_one(&self) {
        self.notify(1);
    }

    /// Wakes every waiter.
    #[inline]
    pub fn notify_all(&self) {
        self.notify(usize::MAX);
    }

    /// Wakes at most `n` of the waiters waiting now, oldest first. With no
    /// waiter, it is two loads and no syscall, and nothing is banked for
    /// later waiters.
    #[inline]
    pub fn notify(&self, n: usize) {
        // Acquire: pairs with the waiter's registration, published by its
        // unlock of the lock the notifier typically took since.
        if n == 0
            || (self.claimed.load(Ordering::Acquire) == 0
                && self.overflow.load(Ordering::Relaxed) & OVERFLOW_SLEEPERS == 0)
        {
            return;
        }
        self.notify_slow(n);
    }

    #[cold]
    pub(super) fn notify_slow(&self, n: usize) {
        self.finish_wakes();
        let mut delivered = 0;
        while delivered < n {
            let Some((i, state)) = self.oldest_waiting() else { break };
            let slot = &self.slots[i];
            let next = if state == SLEEPING { WAKING } else { NOTIFIED };
            if slot.state.compare_exchange(state, next, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue; // it timed out, fell asleep or was notified: look again
            }
            if next == WAKING && !self.wake_slot(i) {
                // Asleep in a dead thread: the slot is taken back, and the
                // notification goes to the next waiter.
                continue;
            }
            delivered += 1;
        }
        if delivered < n {
            self.wake_overflow();
        }
    }

    /// Wakes slot `i`, which this thread moved to WAKING, then marks it
    /// NOTIFIED. Returns `false` if its thread is dead (the slot is freed).
    fn wake_slot(&self, i: usize) -> bool {
        let slot = &self.slots[i];
        crash_point!("condition.notify.published");
        if futex::wake(&slot.state, 1) == 0 && !slot.owner().is_alive() {
            if slot.state.compare_exchange(WAKING, FREE, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                self.claimed.fetch_and(!(1 << i), Ordering::Release);
            }
            return false;
        }
        // Fails harmlessly if the waiter already consumed it.
        let _ = slot.state.compare_exchange(WAKING, NOTIFIED, Ordering::AcqRel, Ordering::Relaxed);
        true
    }

    /// Issues the wakes that notifiers killed between WAKING and their
    /// `FUTEX_WAKE` never made (or that one still running is about to
    /// make: a second wake is harmless).
    fn finish_wakes(&self) {
        for i in bits(self.claimed.load(Ordering::Acquire)) {
            if self.slots[i].state.load(Ordering::Acquire) == WAKING {
                self.wake_slot(i);
            }
        }
    }

    /// The oldest slot that waits for a notify, and its state.
    fn oldest_waiting(&self) -> Option<(usize, u32)> {
        let now = self.ticket.load(Ordering::Relaxed);
        let mut best: Option<(usize, u32, u32)> = None;
        for i in bits(self.claimed.load(Ordering::Acquire)) {
            let slot = &self.slots[i];
            let state = slot.state.load(Ordering::Acquire);
            if state != WAITING && state != SLEEPING {
                continue;
            }
            // Tickets wrap; the age is how many were handed out since.
            let age = now.wrapping_sub(slot.ticket.load(Ordering::Relaxed));
            if best.is_none_or(|(_, _, a)| age > a) {
                best = Some((i, state, age));
            }
        }
        best.map(|(i, state, _)| (i, state))
    }

    /// Wakes every overflow waiter, if any may sleep; the bit is cleared
    /// only if nothing changed since (as `RawEvent::set` does).
    fn wake_overflow(&self) {
        let seen = self.overflow.load(Ordering::Relaxed);
        if seen & OVERFLOW_SLEEPERS == 0 {
            return;
        }
        let bumped = self.overflow.fetch_add(OVERFLOW_STEP, Ordering::Release).wrapping_add(OVERFLOW_STEP);
        futex::wake_all(&self.overflow);
        let _ =
            self.overflow.compare_exchange(bumped, bumped & !OVERFLOW_SLEEPERS, Ordering::Relaxed, Ordering::Relaxed);
    }
}
