//! `RawLock` and `RawRLock`: a robust, process-shared pthread mutex plus a
//! poison flag.
//!
//! | field      | meaning |
//! |------------|---------|
//! | `mutex`    | glibc `pthread_mutex_t`, `PTHREAD_PROCESS_SHARED` + `PTHREAD_MUTEX_ROBUST`; `ERRORCHECK` for `RawLock`, `RECURSIVE` for `RawRLock` |
//! | `poisoned` | 0 = healthy, 1 = a holder died or panicked holding it; cleared only by `clear_poison` |
//!
//! Owner death: when a holder thread exits or its process is killed, the
//! kernel marks the mutex, and the next locker gets `EOWNERDEAD`. The `sys`
//! layer calls `pthread_mutex_consistent` at once, and this layer sets the
//! poison flag, which lives beside the mutex in the shared memory, so every
//! process sees it until one clears it.
//!
//! Taking the lock: one `pthread_mutex_trylock`; when it is busy, a spin of
//! `trylock`s on the lock's spin budget; then sleeping on the lock word
//! itself (the kernel's robust-futex word: owner tid, `FUTEX_WAITERS`,
//! `FUTEX_OWNER_DIED`), after setting `FUTEX_WAITERS` so the unlock wakes
//! one sleeper. A sleeper that wins the lock sets `FUTEX_WAITERS` again, as
//! glibc's own lock does, so that its unlock passes the wake on.
//!
//! Why not glibc's blocking lock: its unlock clears the word and wakes one
//! sleeper; if another locker takes the free word meanwhile (a spinner's
//! `trylock` does not set `FUTEX_WAITERS`) and the woken one is killed before
//! it marks the word again, the next unlock wakes nobody, and the other
//! sleepers sleep on a free lock. Here a sleeper sleeps at most one
//! [`RECHECK`](super::RECHECK) slice, then tries again, so it takes a
//! free lock at most that late. After a slice it also checks that the owner
//! the word names is alive: a word naming a thread that is gone (the kernel
//! missed its death, or the word was forged) is marked owner-died, exactly as
//! the kernel would, so the next `trylock` recovers the lock, poisoned.
//!
//! Every attempt first checks that the mutex's kind is the one `init` made
//! (glibc would take non-robust or priority-inheritance paths for another):
//! a changed kind is restored, and the lock reported poisoned. A mutex left
//! `ENOTRECOVERABLE` by a foreign process is repaired into an owner-died one,
//! which the next attempt recovers, poisoned.
//!
//! All-zero bytes are *not* a valid lock: `init` must run first.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::sleep::{Sleeper, Woke};
use super::spin::{Spin, SpinWait};
use crate::sys::proc::{self, Identity};
use crate::sys::pthread::{self, Acquire};
use crate::sys::time::Deadline;

/// This module's crash points (see [`crate::crash`]).
pub(crate) const CRASH_POINTS: &[&str] = &["lock.unlock.before", "lock.contended.woken", "lock.contended.acquired"];

/// How a lock call ended when the caller got the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a Locked means the caller holds the lock and must unlock it"]
pub enum Locked {
    /// The lock was taken and is not poisoned.
    Clean,
    /// The lock was taken, but it is poisoned: a previous holder died or
    /// panicked while holding it, and nobody has called `clear_poison` since.
    /// The data it protects may be half-updated.
    Poisoned,
}

impl Locked {
    /// Whether the lock is poisoned.
    pub fn is_poisoned(self) -> bool {
        self == Locked::Poisoned
    }
}

const HEALTHY: u32 = 0;
const POISONED: u32 = 1;

/// One attempt's result, before it becomes a [`Locked`].
enum Attempt {
    Got(Locked),
    Busy,
    /// This thread holds the (non-recursive) lock already.
    Deadlock,
}

/// The shared body of both lock types; guards hold a reference to it.
#[repr(C)]
pub(crate) struct Robust {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    poisoned: AtomicU32,
    _reserved: u32,
}

impl Robust {
    /// # Safety
    /// As for `RawLock::init`.
    unsafe fn init(this: *mut Self, kind: pthread::Kind) {
        // SAFETY: the caller guarantees `this` is valid for writes, aligned and
        // not yet shared, so its fields are too.
        unsafe {
            pthread::init(UnsafeCell::raw_get(&raw const (*this).mutex), kind);
            (&raw mut (*this).poisoned).write(AtomicU32::new(HEALTHY));
            (&raw mut (*this)._reserved).write(0);
        }
    }

    #[inline]
    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.mutex.get()
    }

    fn word(&self) -> &AtomicU32 {
        // SAFETY: the mutex is mapped for as long as `self` lives.
        unsafe { pthread::lock_word(self.mutex()) }
    }

    /// On open: whether the lock's bytes are a lock of `kind` as `init` made.
    pub(crate) fn check(&self, kind: pthread::Kind) -> Result<(), String> {
        // SAFETY: the mutex is mapped for as long as `self` lives.
        if unsafe { pthread::kind_matches(self.mutex(), kind) } {
            Ok(())
        } else {
            Err(format!("its lock is not a robust process-shared {kind:?} mutex"))
        }
    }

    /// One `trylock`, with the repairs the module docs describe.
    #[inline]
    fn attempt(&self, kind: pthread::Kind) -> Attempt {
        // SAFETY: `self` is a reference to an initialised lock (the type's
        // contract), so the mutex is initialised and mapped for the call.
        if unsafe { !pthread::kind_matches(self.mutex(), kind) } {
            return self.repair_kind(kind);
        }
        // SAFETY: as above.
        match unsafe { pthread::try_lock(self.mutex()) } {
            Acquire::Acquired => Attempt::Got(self.flag()),
            Acquire::OwnerDied => {
                // Relaxed is enough: we hold the mutex, whose unlock/lock pairs
                // order this store for the next holder in any process.
                self.poisoned.store(POISONED, Ordering::Relaxed);
                Attempt::Got(Locked::Poisoned)
            }
            Acquire::WouldBlock => Attempt::Busy,
            Acquire::Deadlock => Attempt::Deadlock,
            Acquire::NotRecoverable => self.repair_not_recoverable(),
            Acquire::Invalid => self.repair_kind(kind),
        }
    }

    #[cold]
    fn repair_kind(&self, kind: pthread::Kind) -> Attempt {
        log::warn!("shmsync: a lock's mutex kind was overwritten; restoring it and poisoning the lock");
        // SAFETY: the mutex is mapped, and was initialised as `kind`.
        unsafe { pthread::restore_kind(self.mutex(), kind) };
        self.poison();
        Attempt::Busy
    }

    #[cold]
    fn repair_not_recoverable(&self) -> Attempt {
        log::warn!("shmsync: a lock was left unrecoverable by another process; recovering it as poisoned");
        // SAFETY: the mutex is mapped; our last trylock returned NotRecoverable.
        unsafe { pthread::repair_not_recoverable(self.mutex(), proc::tid()) };
        Attempt::Busy
    }

    #[inline]
    fn flag(&self) -> Locked {
        if self.is_poisoned() {
            Locked::Poisoned
        } else {
            Locked::Clean
        }
    }

    /// Takes the lock: one attempt inline, then the contended path.
    #[inline]
    fn lock(&self, kind: pthread::Kind, what: &str) -> Locked {
        match self.attempt(kind) {
            Attempt::Got(how) => how,
            Attempt::Deadlock => deadlock(what),
            Attempt::Busy => match self.lock_contended(kind, None) {
                Some(how) => how,
                None => deadlock(what),
            },
        }
    }

    #[inline]
    fn try_lock(&self, kind: pthread::Kind) -> Option<Locked> {
        match self.attempt(kind) {
            Attempt::Got(how) => Some(how),
            // Held, by another thread or by this one: either way not ours to take.
            Attempt::Busy | Attempt::Deadlock => None,
        }
    }

    pub(crate) fn try_lock_until(&self, kind: pthread::Kind, deadline: &Deadline) -> Option<Locked> {
        match self.attempt(kind) {
            Attempt::Got(how) => Some(how),
            Attempt::Deadlock => None,
            Attempt::Busy => self.lock_contended(kind, Some(deadline)),
        }
    }

    /// The slow path of every lock call: spin, then sleep on the lock word in
    /// slices, until the lock is ours or `deadline` passes (`None`). Also
    /// `None` if this thread turns out to hold it already.
    #[cold]
    fn lock_contended(&self, kind: pthread::Kind, deadline: Option<&Deadline>) -> Option<Locked> {
        let mut spin = SpinWait::new(Spin::Lock, deadline);
        while spin.spin() {
            match self.attempt(kind) {
                Attempt::Got(how) => return Some(how),
                Attempt::Deadlock => return None,
                Attempt::Busy => {}
            }
        }
        drop(spin);
        let word = self.word();
        let mut slept = false;
        let mut sleeper = Sleeper::new();
        loop {
            match self.attempt(kind) {
                Attempt::Got(how) => {
                    if slept {
                        crash_point!("lock.contended.acquired");
                        // Others may sleep behind us, and the unlock that
                        // woke us cleared their bit: set it again (we own the
                        // word), so our unlock wakes the next.
                        word.fetch_or(pthread::WAITERS, Ordering::Relaxed);
                    }
                    return Some(how);
                }
                Attempt::Deadlock => return None,
                Attempt::Busy => {}
            }
            let seen = word.load(Ordering::Relaxed);
            if seen & pthread::TID_MASK == 0 {
                continue; // free, or owner-died: try again
            }
            if seen & pthread::WAITERS == 0
                && word.compare_exchange(seen, seen | pthread::WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            slept = true;
            match sleeper.sleep(word, seen | pthread::WAITERS, deadline) {
                Woke::Deadline => return self.try_lock(kind),
                Woke::Signalled => crash_point!("lock.contended.woken"),
                Woke::Recheck => self.recover_if_owner_gone(word),
            }
        }
    }

    /// For async waits: if the lock is held, marks a sleeper on its word
    /// (`FUTEX_WAITERS`, so the unlock wakes) and returns the word and the
    /// value to sleep on; `None` if it is free.
    fn arm(&self) -> Option<(&AtomicU32, u32)> {
        let word = self.word();
        loop {
            let seen = word.load(Ordering::Relaxed);
            if seen & pthread::TID_MASK == 0 {
                return None;
            }
            if seen & pthread::WAITERS != 0
                || word.compare_exchange(seen, seen | pthread::WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                return Some((word, seen | pthread::WAITERS));
            }
        }
    }

    /// After a slice of sleep on a lock that stayed held: if the owner the
    /// word names is gone, mark the word as the kernel would have.
    #[cold]
    fn recover_if_owner_gone(&self, word: &AtomicU32) {
        let seen = word.load(Ordering::Relaxed);
        let tid = seen & pthread::TID_MASK;
        if tid != 0 && !(Identity { id: tid, start: 0 }).is_alive() {
            log::warn!("shmsync: a lock's owner, thread {tid}, is gone but the lock was never released; recovering it");
            // SAFETY: the mutex is mapped and initialised; its owner is dead.
            unsafe { pthread::declare_owner_dead(self.mutex(), seen) };
        }
    }

    /// # Safety
    /// The calling thread holds the lock.
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        crash_point!("lock.unlock.before");
        // SAFETY: the caller holds the lock; the mutex is initialised and mapped.
        unsafe { pthread::unlock(self.mutex()) }
    }

    fn owner(&self) -> Option<u32> {
        // SAFETY: the mutex is initialised and mapped for as long as `self` lives.
        unsafe { pthread::owner(self.mutex()) }
    }

    /// How deep the holder has nested the lock (a snapshot).
    pub(crate) fn depth(&self) -> u32 {
        // SAFETY: as above.
        unsafe { pthread::depth(self.mutex()) }
    }

    #[inline]
    fn is_poisoned(&self) -> bool {
        // Relaxed: a hint, as std's is; holders read it under the mutex.
        self.poisoned.load(Ordering::Relaxed) == POISONED
    }

    pub(crate) fn poison(&self) {
        self.poisoned.store(POISONED, Ordering::Relaxed);
    }
}

#[cold]
#[inline(never)]
fn deadlock(what: &str) -> ! {
    panic!("{what}: the calling thread already holds this lock")
}

macro_rules! raw_lock {
    ($(#[$doc:meta])* $name:ident, $kind:expr, $what:literal) => {
        $(#[$doc])*
        #[repr(C)]
        pub struct $name(Robust);

        // SAFETY: the pthread mutex is process-shared and built for concurrent
        // use from any thread; the poison flag is atomic.
        unsafe impl Sync for $name {}
        // SAFETY: the lock holds no thread-bound state; ownership is tracked by
        // tid inside the mutex, not by where the Rust value lives.
        unsafe impl Send for $name {}

        impl $name {
            /// Initialises the lock in place: unlocked and not poisoned.
            ///
            /// # Safety
            /// `this` must be valid for writes of `Self` and aligned for it, and
            /// stay mapped while any process uses the lock. No thread in any
            /// process may use the lock before `init` returns, and `init` must
            /// not run again while any thread may hold or wait for it.
            pub unsafe fn init(this: *mut Self) {
                // SAFETY: forwarded from the caller; `Self` is a repr(C) wrapper
                // of `Robust`, so the cast keeps validity and alignment.
                unsafe { Robust::init(this.cast::<Robust>(), $kind) }
            }

            /// Blocks until the calling thread holds the lock.
            ///
            /// Returns [`Locked::Poisoned`] when a previous holder died (the
            /// lock has been recovered) or panicked holding it.
            #[inline]
            pub fn lock(&self) -> Locked {
                self.0.lock($kind, concat!($what, "::lock"))
            }

            /// Takes the lock if it is free; `None` if another thread holds it.
            #[inline]
            pub fn try_lock(&self) -> Option<Locked> {
                self.0.try_lock($kind)
            }

            /// Takes the lock, waiting at most `timeout`; `None` on timeout.
            pub fn try_lock_for(&self, timeout: Duration) -> Option<Locked> {
                self.0.try_lock_until($kind, &Deadline::after(timeout))
            }

            /// On open: whether the bytes are a lock of this type as `init`
            /// made it (the mutex kind); a description of the problem if not.
            pub(crate) fn check(&self) -> Result<(), String> {
                self.0.check($kind)
            }

            /// The core that guards hold.
            pub(crate) fn robust(&self) -> &Robust {
                &self.0
            }

            /// Releases the lock (one level, for a nested `RawRLock`).
            ///
            /// # Safety
            /// The calling thread must hold the lock.
            #[inline]
            pub unsafe fn unlock(&self) {
                // SAFETY: forwarded from the caller.
                unsafe { self.0.unlock() }
            }

            /// Whether some thread holds the lock right now (a snapshot).
            pub fn is_locked(&self) -> bool {
                self.0.owner().is_some()
            }

            /// The kernel thread id of the holder, if any (a snapshot).
            pub fn owner_tid(&self) -> Option<u32> {
                self.0.owner()
            }

            /// How many times the holder has locked it without unlocking (a
            /// snapshot: 1 for a held `RawLock`, the nesting depth for a
            /// `RawRLock`, meaningless while it is free).
            pub fn depth(&self) -> u32 {
                self.0.depth()
            }

            /// Whether the lock is poisoned.
            pub fn is_poisoned(&self) -> bool {
                self.0.is_poisoned()
            }

            /// Marks the lock poisoned, e.g. from a guard dropped while its
            /// thread panics.
            pub fn poison(&self) {
                self.0.poison();
            }

            /// Clears the poison flag for every process.
            pub fn clear_poison(&self) {
                self.0.poisoned.store(HEALTHY, Ordering::Relaxed);
            }

            /// Whether the lock word says its last owner died holding it
            /// (`FUTEX_OWNER_DIED`, set by the kernel or by a waiter's
            /// recovery), so the next lock reports poison. A snapshot, read
            /// with one load, for the inspector.
            pub(crate) fn owner_died(&self) -> bool {
                self.0.word().load(Ordering::Relaxed) & pthread::OWNER_DIED != 0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("owner_tid", &self.owner_tid())
                    .field("poisoned", &self.is_poisoned())
                    .finish()
            }
        }
    };
}

raw_lock!(
    /// A robust, process-shared mutual-exclusion lock, for memory you map
    /// yourself.
    ///
    /// Layout: `#[repr(C)]`, 48 bytes, 8-byte aligned on x86_64 and aarch64
    /// Linux (a glibc `pthread_mutex_t` plus a 4-byte poison flag and 4 bytes
    /// reserved). All-zero bytes are not a valid lock; call [`init`](Self::init).
    ///
    /// Locking it twice on one thread panics instead of deadlocking.
    ///
    /// # Example
    /// ```
    /// use shmsync::raw::RawLock;
    /// use std::mem::MaybeUninit;
    ///
    /// let mut slot = Box::new(MaybeUninit::<RawLock>::uninit());
    /// // SAFETY: the box is valid, aligned storage that nothing else uses yet.
    /// unsafe { RawLock::init(slot.as_mut_ptr()) };
    /// // SAFETY: init ran.
    /// let lock = unsafe { slot.assume_init_ref() };
    /// assert!(!lock.lock().is_poisoned());
    /// assert!(lock.is_locked());
    /// // SAFETY: this thread holds the lock.
    /// unsafe { lock.unlock() };
    /// ```
    RawLock,
    pthread::Kind::ErrorCheck,
    "RawLock"
);

impl RawLock {
    /// Takes the lock and, if a holder died or panicked holding it, clears
    /// the poison at once and returns `true`. Only for the crate's own
    /// structures whose every change is committed by one store, so a dead
    /// holder cannot have left them half-changed.
    pub(crate) fn lock_recovering(&self) -> bool {
        let recovered = self.lock().is_poisoned();
        if recovered {
            self.clear_poison();
        }
        recovered
    }

    /// For async waits on a busy lock: see `Robust::arm`.
    pub(crate) fn arm(&self) -> Option<(&AtomicU32, u32)> {
        self.0.arm()
    }

    /// As [`lock_recovering`](Self::lock_recovering), waiting at most until
    /// `deadline`: `None` if the lock could not be had by then.
    pub(crate) fn lock_recovering_until(&self, deadline: &Deadline) -> Option<bool> {
        let recovered = self.0.try_lock_until(pthread::Kind::ErrorCheck, deadline)?.is_poisoned();
        if recovered {
            self.clear_poison();
        }
        Some(recovered)
    }
}

raw_lock!(
    /// A robust, process-shared *reentrant* lock: the holding thread may lock
    /// it again, and must unlock it as many times.
    ///
    /// Layout: as [`RawLock`]. All-zero bytes are not a valid lock; call
    /// [`init`](Self::init).
    RawRLock,
    pthread::Kind::Recursive,
    "RawRLock"
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, size_of};

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn layout_is_as_documented() {
        assert_eq!(size_of::<RawLock>(), 48);
        assert_eq!(align_of::<RawLock>(), 8);
        assert_eq!(size_of::<RawRLock>(), 48);
    }
}
