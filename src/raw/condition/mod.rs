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

use super::lock::RawLock;
use crate::sys::proc::Identity;

mod notify;
mod wait;

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
mod tests;
