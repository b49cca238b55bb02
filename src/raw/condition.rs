//! `RawCondition`: a condition variable that owns its robust lock (as
//! Python's `Condition` does by default).
//!
//! | field     | meaning |
//! |-----------|---------|
//! | `lock`    | a [`RawLock`]: robust, so a holder's death poisons instead of hanging |
//! | `ticket`  | the next waiter's ticket: notifies serve the oldest tickets first |
//! | `overflow`| futex word for waiters beyond [`SLOTS`]: bit 0 SLEEPERS, the rest a sequence |
//! | `claimed` | bit `i` set: slot `i` belongs to a waiter |
//! | `slots`   | one per waiter: its futex word `state`, its ticket, and who it is (tid and start time) |
//!
//! A slot's `state` is FREE, WAITING (registered, spinning), SLEEPING (in
//! the kernel, or about to be), WAKING (notified while asleep; the notifier's
//! `FUTEX_WAKE` may not have happened yet) or NOTIFIED.
//!
//! Why not `pthread_cond_t`: with glibc 2.36, a process-shared condvar stops
//! waking anyone, and `pthread_cond_broadcast` blocks forever, once one
//! waiter has been SIGKILLed, because its waiter bookkeeping lives in the
//! shared object. Why slots and not one sequence word: a sequence word
//! cannot tell which waiter a `notify_one` was for, so it cannot hand a
//! notification on when the woken waiter dies, nor find the waiters killed in
//! their sleep, and the kernel would pick whom to wake (by priority, not age).
//!
//! Protocol. A waiter, holding the lock, claims a free slot (a bit of
//! `claimed`), writes its identity and ticket, stores WAITING, unlocks, spins
//! while WAITING, then moves WAITING → SLEEPING and sleeps on its own slot
//! word until NOTIFIED. It then relocks, and only then frees its slot. A
//! timed-out waiter moves its slot from SLEEPING to FREE; if that fails, a
//! notify got there first, and it takes the notification.
//!
//! A notifier reads `claimed` (and the overflow SLEEPERS bit): nothing there
//! means no waiter and no syscall; a notify is never banked. Otherwise it
//! picks the oldest WAITING or SLEEPING slots, up to `n`, moving each with a
//! compare-exchange: WAITING → NOTIFIED (the spinner will see it), or
//! SLEEPING → WAKING, then `FUTEX_WAKE`, then WAKING → NOTIFIED. The
//! notified are exactly the chosen, oldest first, whatever their scheduling
//! priorities. The notifier never waits for them.
//!
//! Crash safety:
//! - a notifier killed between WAKING and its wake: the next notify from any
//!   process finishes the wake of every WAKING slot first, and the waiter
//!   also sees WAKING at its next re-check slice (at most `RECHECK`);
//! - a waiter killed asleep: the first notify that picks its slot wakes
//!   nobody, finds its thread gone, reclaims the slot and notifies the next
//!   waiter instead; after that, notifies with nobody waiting make no
//!   syscall again;
//! - a waiter killed after being notified, before it relocked and freed its
//!   slot: any other waiter, at its next re-check slice, finds the NOTIFIED
//!   slot of a dead thread, reclaims it and hands the notification to the
//!   oldest live waiter;
//! - a waiter killed while registered but not asleep may be notified as if
//!   alive; that notification is handed on in the same way.
//!
//! More than [`SLOTS`] waiters at once: the rest sleep on `overflow`, which
//! a notify wakes all at once when it found fewer than `n` slot waiters;
//! they may see spurious wakeups, as std allows. All-zero bytes are not
//! valid (the lock needs `init`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::lock::{Locked, RawLock};
use super::sleep::{register_sleeper, Sleeper, Woke};
use super::spin::{Spin, SpinWait};
use crate::sys::futex;
use crate::sys::proc::Identity;
use crate::sys::time::Deadline;

/// This module's crash points (see [`crate::crash`]).
pub(crate) const CRASH_POINTS: &[&str] =
    &["condition.notify.published", "condition.wait.notified", "condition.wait.relocked"];

/// How many waiters a condition serves exactly, oldest first.
pub const SLOTS: usize = 64;

const FREE: u32 = 0;
const WAITING: u32 = 1;
const SLEEPING: u32 = 2;
const NOTIFIED: u32 = 3;
const WAKING: u32 = 4;

/// Whether a slot in `state` has been notified (woken or not).
fn is_notified(state: u32) -> bool {
    state == NOTIFIED || state == WAKING
}

/// `overflow`: someone may sleep on it.
const OVERFLOW_SLEEPERS: u32 = 1;
/// `overflow`: one step of its sequence.
const OVERFLOW_STEP: u32 = 2;

/// One waiter's place.
#[repr(C)]
struct Slot {
    state: AtomicU32,
    ticket: AtomicU32,
    tid: AtomicU32,
    _reserved: u32,
    start: AtomicU64,
}

impl Slot {
    fn owner(&self) -> Identity {
        Identity { id: self.tid.load(Ordering::Relaxed), start: self.start.load(Ordering::Relaxed) }
    }
}

/// A process-shared condition variable with its own robust lock.
///
/// Layout: `#[repr(C)]`, a [`RawLock`], two `u32`s, a `u64` and [`SLOTS`]
/// 24-byte slots: 1600 bytes, 8-byte aligned on 64-bit Linux. All-zero bytes
/// are not valid; call [`init`](Self::init).
#[repr(C)]
pub struct RawCondition {
    lock: RawLock,
    ticket: AtomicU32,
    overflow: AtomicU32,
    claimed: AtomicU64,
    slots: [Slot; SLOTS],
}

/// The bits set in `mask`, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            i
        })
    })
}

impl RawCondition {
    /// Initialises the condition and its lock in place.
    ///
    /// # Safety
    /// As for [`RawLock::init`].
    pub unsafe fn init(this: *mut Self) {
        // SAFETY: forwarded from the caller; the fields are in bounds of
        // `this`, and all-zero bytes are valid for every field but the lock,
        // which `RawLock::init` writes.
        unsafe {
            this.cast::<u8>().write_bytes(0, std::mem::size_of::<Self>());
            RawLock::init(&raw mut (*this).lock);
        }
    }

    /// On open: whether the fields are a condition `init` could have made.
    pub(crate) fn check(&self) -> Result<(), String> {
        self.lock.check()?;
        match self.slots.iter().map(|s| s.state.load(Ordering::Relaxed)).find(|&st| st > WAKING) {
            Some(st) => Err(format!("a waiter slot's state is {st}, not 0 to 4")),
            None => Ok(()),
        }
    }

    /// The condition's lock. Hold it (lock it through this reference) around
    /// `wait` and around the state the condition is about.
    pub fn lock(&self) -> &RawLock {
        &self.lock
    }

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
                && !slot.owner().is_alive()
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
                && !slot.owner().is_alive()
                && slot.state.compare_exchange(st, FREE, Ordering::AcqRel, Ordering::Relaxed).is_ok()
            {
                self.claimed.fetch_and(!(1 << j), Ordering::Release);
                if is_notified(st) {
                    self.notify_slow(1);
                }
            }
        }
    }

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
    fn notify_slow(&self, n: usize) {
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

    /// How many waiters are waiting (a snapshot, including any killed in
    /// their wait and not yet reclaimed; at least 1 if overflow waiters may
    /// sleep).
    pub fn waiters(&self) -> u32 {
        let in_slots = bits(self.claimed.load(Ordering::Relaxed))
            .filter(|&i| matches!(self.slots[i].state.load(Ordering::Relaxed), WAITING | SLEEPING))
            .count() as u32;
        in_slots + (self.overflow.load(Ordering::Relaxed) & OVERFLOW_SLEEPERS)
    }
}

impl std::fmt::Debug for RawCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawCondition").field("lock", &self.lock).field("waiters", &self.waiters()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::MaybeUninit;

    fn new() -> Box<RawCondition> {
        let mut slot = Box::new(MaybeUninit::<RawCondition>::uninit());
        // SAFETY: fresh, aligned, unshared storage.
        unsafe { RawCondition::init(slot.as_mut_ptr()) };
        // SAFETY: init ran.
        unsafe { Box::from_raw(Box::into_raw(slot).cast()) }
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn layout_is_as_documented() {
        assert_eq!(std::mem::size_of::<RawCondition>(), 1600);
        assert_eq!(std::mem::align_of::<RawCondition>(), 8);
    }

    #[test]
    fn notify_reaches_a_thread_and_timeouts_report() {
        let cond = new();
        let flag = AtomicU32::new(0);
        assert!(!cond.lock().lock().is_poisoned());
        // SAFETY: this thread holds the lock.
        let (l, timed_out) = unsafe { cond.wait_timeout(Duration::from_millis(5)) };
        assert!(timed_out && !l.is_poisoned());
        assert_eq!(cond.waiters(), 0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = cond.lock().lock();
                flag.store(1, Ordering::Relaxed);
                cond.notify_all();
                // SAFETY: this thread holds the lock.
                unsafe { cond.lock().unlock() };
            });
            while flag.load(Ordering::Relaxed) == 0 {
                // SAFETY: this thread holds the lock (taken above or relocked by wait).
                let (_, timed_out) = unsafe { cond.wait_timeout(Duration::from_secs(30)) };
                assert!(!timed_out);
            }
        });
        // SAFETY: this thread holds the lock.
        unsafe { cond.lock().unlock() };
        assert_eq!(cond.claimed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_zero_timeout_returns_at_once_and_frees_its_slot() {
        let cond = new();
        let _ = cond.lock().lock();
        // SAFETY: this thread holds the lock.
        let (_, timed_out) = unsafe { cond.wait_timeout(Duration::ZERO) };
        assert!(timed_out);
        assert_eq!(cond.claimed.load(Ordering::Relaxed), 0);
        // SAFETY: this thread holds the lock.
        unsafe { cond.lock().unlock() };
    }

    #[test]
    fn notify_one_wakes_the_oldest_and_only_it() {
        let cond = new();
        let order = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for k in 0..3u32 {
                let (cond, order) = (&cond, &order);
                let _ = cond.lock().lock();
                s.spawn(move || {
                    // SAFETY: this thread takes and holds the lock around the wait.
                    unsafe {
                        let _ = cond.lock().lock();
                        let (_, timed_out) = cond.wait_timeout(Duration::from_secs(30));
                        assert!(!timed_out);
                        order.lock().unwrap().push(k);
                        cond.lock().unlock();
                    }
                });
                // SAFETY: this thread holds the lock; releasing it lets waiter k register.
                unsafe { cond.lock().unlock() };
                while cond.waiters() < k + 1 {
                    std::thread::yield_now();
                }
            }
            for k in 0..3 {
                cond.notify_one();
                while order.lock().unwrap().len() < k + 1 {
                    std::thread::yield_now();
                }
                assert_eq!(cond.waiters() as usize, 2 - k);
            }
        });
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    }
}
