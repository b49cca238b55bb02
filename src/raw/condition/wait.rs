//! The waiting side: a waiter's slot (claimed under the lock, freed only
//! after it relocked), its spin and sleep, the overflow waiters beyond
//! [`SLOTS`], and the hand-on of notifications whose waiters died.

use std::time::Duration;

use super::*;
use crate::raw::lock::Locked;
use crate::raw::sleep::{register_sleeper, Sleeper, Woke};
use crate::raw::spin::{Spin, SpinWait};
use crate::sys::time::Deadline;

impl RawCondition {
    /// Atomically unlocks the lock and waits for a notify, then relocks.
    /// Returns how the relock went (poisoned if a holder died meanwhile).
    ///
    /// # Safety
    /// The calling thread must hold [`lock`](Self::lock).
    pub unsafe fn wait(&self) -> Locked {
        // SAFETY: forwarded from the caller.
        unsafe { self.wait_until(None).0 }
    }

    /// As [`wait`](Self::wait), for at most `timeout`. The `bool` is `true`
    /// if the wait timed out.
    ///
    /// # Safety
    /// The calling thread must hold [`lock`](Self::lock).
    pub unsafe fn wait_timeout(&self, timeout: Duration) -> (Locked, bool) {
        // SAFETY: forwarded from the caller.
        unsafe { self.wait_until(Some(&Deadline::after(timeout))) }
    }

    /// The one wait path. Returns the relock outcome and whether the deadline
    /// passed.
    ///
    /// # Safety
    /// The calling thread must hold the lock.
    pub(crate) unsafe fn wait_until(&self, deadline: Option<&Deadline>) -> (Locked, bool) {
        let me = Identity::this_thread();
        let slot = self.claim(me).or_else(|| {
            self.reclaim_dead();
            self.claim(me)
        });
        match slot {
            // SAFETY: forwarded from the caller.
            Some(i) => unsafe { self.wait_in_slot(i, deadline) },
            // SAFETY: forwarded from the caller.
            None => unsafe { self.wait_overflow(deadline) },
        }
    }

    /// Under the lock: takes a free slot for `me`, with the next ticket.
    fn claim(&self, me: Identity) -> Option<usize> {
        let mut mask = self.claimed.load(Ordering::Relaxed);
        let i = loop {
            if mask == u64::MAX {
                return None;
            }
            let i = (!mask).trailing_zeros() as usize;
            match self.claimed.compare_exchange_weak(mask, mask | 1 << i, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break i,
                Err(now) => mask = now,
            }
        };
        let slot = &self.slots[i];
        slot.tid.store(me.id, Ordering::Relaxed);
        slot.start.store(me.start, Ordering::Relaxed);
        slot.ticket.store(self.ticket.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        // Release: a notifier that sees WAITING sees the identity and ticket.
        slot.state.store(WAITING, Ordering::Release);
        Some(i)
    }

    /// Frees slot `i`: its state first, then its bit.
    fn free(&self, i: usize) {
        self.slots[i].state.store(FREE, Ordering::Release);
        self.claimed.fetch_and(!(1 << i), Ordering::Release);
    }

    /// # Safety
    /// The calling thread holds the lock, and slot `i` is its own.
    unsafe fn wait_in_slot(&self, i: usize, deadline: Option<&Deadline>) -> (Locked, bool) {
        let slot = &self.slots[i];
        // SAFETY: the caller holds the lock.
        unsafe { self.lock.unlock() };
        let mut spin = SpinWait::new(Spin::Condition, deadline);
        let mut sleeper = Sleeper::new();
        let timed_out = loop {
            match slot.state.load(Ordering::Acquire) {
                NOTIFIED | WAKING => break false,
                WAITING if spin.spin() => {}
                WAITING => {
                    let _ = slot.state.compare_exchange(WAITING, SLEEPING, Ordering::Relaxed, Ordering::Relaxed);
                }
                SLEEPING => match sleeper.sleep(&slot.state, SLEEPING, deadline) {
                    Woke::Deadline => {
                        if sleeper.slept() {
                            // Hand on what a dead waiter was given, even if
                            // every wait here ends before its first slice.
                            self.adopt_orphans(i);
                        }
                        if slot.state.compare_exchange(SLEEPING, FREE, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                            self.claimed.fetch_and(!(1 << i), Ordering::Release);
                            break true;
                        }
                    }
                    Woke::Recheck => self.adopt_orphans(i),
                    Woke::Signalled => {}
                },
                // Not a state this crate writes (a peer scribbled on it): take
                // it as a spurious wakeup rather than spin on it.
                _ => break false,
            }
        };
        drop(spin);
        if !timed_out {
            crash_point!("condition.wait.notified");
        }
        // The lock's own acquire ordering publishes the notifier's writes.
        let relocked = self.lock.lock();
        if !timed_out {
            crash_point!("condition.wait.relocked");
            // Consumed only now, holding the lock: until here a death hands
            // the notification on (see the module docs).
            self.free(i);
        }
        (relocked, timed_out)
    }

    /// Waits as one of the waiters beyond [`SLOTS`]: on the overflow word,
    /// for any notify that finds too few slot waiters.
    ///
    /// # Safety
    /// The calling thread holds the lock.
    unsafe fn wait_overflow(&self, deadline: Option<&Deadline>) -> (Locked, bool) {
        let seen = register_sleeper(&self.overflow, OVERFLOW_SLEEPERS, OVERFLOW_STEP);
        // SAFETY: the caller holds the lock.
        unsafe { self.lock.unlock() };
        let mut sleeper = Sleeper::new();
        let timed_out = loop {
            match sleeper.sleep(&self.overflow, seen, deadline) {
                Woke::Deadline => break self.overflow.load(Ordering::Relaxed) == seen,
                Woke::Recheck if self.overflow.load(Ordering::Relaxed) == seen => {}
                _ => break false,
            }
        };
        (self.lock.lock(), timed_out)
    }

    /// After a slice of sleep: hands on the notifications of waiters that
    /// died before consuming them (slots NOTIFIED whose thread is gone).
    #[cold]
    fn adopt_orphans(&self, mine: usize) {
        let mask = self.claimed.load(Ordering::Acquire) & !(1 << mine);
        for j in bits(mask) {
            let slot = &self.slots[j];
            let st = slot.state.load(Ordering::Acquire);
            if is_notified(st)
                && !slot.owner().could_hold(self as *const Self as usize)
                && slot.state.compare_exchange(st, FREE, Ordering::AcqRel, Ordering::Relaxed).is_ok()
            {
                self.claimed.fetch_and(!(1 << j), Ordering::Release);
                self.notify_slow(1);
            }
        }
    }

    /// Reclaims the slots of dead threads, when every slot is taken.
    #[cold]
    fn reclaim_dead(&self) {
        for j in bits(self.claimed.load(Ordering::Acquire)) {
            let slot = &self.slots[j];
            let st = slot.state.load(Ordering::Acquire);
            if st != FREE
                && !slot.owner().could_hold(self as *const Self as usize)
                && slot.state.compare_exchange(st, FREE, Ordering::AcqRel, Ordering::Relaxed).is_ok()
            {
                self.claimed.fetch_and(!(1 << j), Ordering::Release);
                if is_notified(st) {
                    self.notify_slow(1);
                }
            }
        }
    }
}
