//! `RawCondition`: a condition variable that owns its robust lock (as
//! Python's `Condition` does by default).
//!
//! | field     | meaning |
//! |-----------|---------|
//! | `lock`    | a [`RawLock`]: robust, so a holder's death poisons instead of hanging |
//! | `seq`     | the futex word: bumped by every notify that finds waiters |
//! | `waiters` | how many may be waiting; a notify with none makes no syscall |
//!
//! Why not `pthread_cond_t`: with glibc 2.36, a process-shared condvar stops
//! waking anyone — and `pthread_cond_broadcast` blocks forever — once one
//! waiter has been SIGKILLed, because its waiter bookkeeping lives in the
//! shared object. A sequence word has no bookkeeping a dead process can leave
//! half-done: a notify bumps the word and wakes, and never waits for the
//! woken side.
//!
//! Protocol. A waiter, holding the lock, increments `waiters` and reads `seq`
//! (both SeqCst), unlocks, spins briefly, sleeps while `seq` is unchanged,
//! decrements `waiters` and relocks. A notifier reads `waiters` (SeqCst); if
//! non-zero it bumps `seq` and wakes up to n sleepers. Of a waiter's
//! increment and a notifier's read, one sees the other: either the notifier
//! wakes the waiter, or the notify happened before the waiter began, which is
//! not banked, by design. A waiter that had unlocked but not yet slept sees
//! the changed `seq` and returns — a spurious wakeup, which std allows too.
//!
//! A waiter killed asleep leaves `waiters` too high: later notifies cost a
//! `FUTEX_WAKE` each, nothing more. All-zero bytes are not valid (the lock
//! needs `init`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::lock::{Locked, RawLock};
use super::spin::SpinWait;
use crate::sys::futex;
use crate::sys::time::Deadline;

/// A process-shared condition variable with its own robust lock.
///
/// Layout: `#[repr(C)]`, a [`RawLock`] followed by two `u32`s: 56 bytes,
/// 8-byte aligned on x86_64 and aarch64 Linux. All-zero bytes are not valid;
/// call [`init`](Self::init).
#[repr(C)]
pub struct RawCondition {
    lock: RawLock,
    seq: AtomicU32,
    waiters: AtomicU32,
}

impl RawCondition {
    /// Initialises the condition and its lock in place.
    ///
    /// # Safety
    /// As for [`RawLock::init`].
    pub unsafe fn init(this: *mut Self) {
        // SAFETY: forwarded from the caller; the fields are in bounds of `this`.
        unsafe {
            RawLock::init(&raw mut (*this).lock);
            (&raw mut (*this).seq).write(AtomicU32::new(0));
            (&raw mut (*this).waiters).write(AtomicU32::new(0));
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
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let seq = self.seq.load(Ordering::SeqCst);
        // SAFETY: the caller holds the lock.
        unsafe { self.lock.unlock() };
        let mut timed_out = false;
        let mut spin = SpinWait::new();
        while self.seq.load(Ordering::Relaxed) == seq {
            if spin.spin() {
                continue;
            }
            if !futex::wait(&self.seq, seq, deadline) {
                timed_out = self.seq.load(Ordering::Relaxed) == seq;
                break;
            }
        }
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        // The lock's own acquire ordering publishes the notifier's writes.
        (self.lock.lock(), timed_out)
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

    /// Wakes at most `n` of the waiters asleep now. With no waiter, it is one
    /// load and no syscall, and nothing is banked for later waiters.
    #[inline]
    pub fn notify(&self, n: usize) {
        if n == 0 || self.waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.notify_slow(n);
    }

    #[cold]
    fn notify_slow(&self, n: usize) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        futex::wake(&self.seq, u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// How many waiters may be waiting (a snapshot; includes any killed asleep).
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
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

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn layout_is_as_documented() {
        assert_eq!(std::mem::size_of::<RawCondition>(), 56);
        assert_eq!(std::mem::align_of::<RawCondition>(), 8);
    }

    #[test]
    fn notify_reaches_a_thread_and_timeouts_report() {
        let mut slot = Box::new(MaybeUninit::<RawCondition>::uninit());
        // SAFETY: fresh, aligned, unshared storage.
        unsafe { RawCondition::init(slot.as_mut_ptr()) };
        // SAFETY: init ran.
        let cond = unsafe { slot.assume_init_ref() };
        let flag = AtomicU32::new(0);
        assert!(!cond.lock().lock().is_poisoned());
        // SAFETY: this thread holds the lock.
        let (l, timed_out) = unsafe { cond.wait_timeout(Duration::from_millis(5)) };
        assert!(timed_out && !l.is_poisoned());
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
    }
}
