//! [`Robust`], the body both lock types share: the mutex and its poison
//! flag, one `trylock` with the repairs the [`lock`](super) docs describe,
//! and the contended path that spins, then sleeps on the lock word in
//! slices.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Locked, HEALTHY, POISONED};
use crate::raw::sleep::{Sleeper, Woke};
use crate::raw::spin::{Spin, SpinWait};
use crate::sys::proc::{self, Identity};
use crate::sys::pthread::{self, Acquire};
use crate::sys::time::Deadline;

/// One attempt's result, before it becomes a [`Locked`].
enum Attempt {
    Got(Locked),
    Busy,
    /// This thread holds the lock already and cannot take it again: a
    /// non-recursive lock, or a recursive one whose count is at its limit.
    Deadlock,
}

/// The shared body of both lock types; guards hold a reference to it.
#[repr(C)]
pub(crate) struct Robust {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    pub(super) poisoned: AtomicU32,
    _reserved: u32,
}

impl Robust {
    /// # Safety
    /// As for `RawLock::init`.
    pub(super) unsafe fn init(this: *mut Self, kind: pthread::Kind) {
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

    pub(super) fn word(&self) -> &AtomicU32 {
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
            Acquire::Deadlock | Acquire::TooDeep => Attempt::Deadlock,
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
    pub(super) fn lock(&self, kind: pthread::Kind, what: &str) -> Locked {
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
    pub(super) fn try_lock(&self, kind: pthread::Kind) -> Option<Locked> {
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
                // Free, or owner-died: try again (after repairing a word
                // that no attempt could take).
                self.repair_ownerless(seen);
                if deadline.is_some_and(Deadline::has_passed) {
                    return self.try_lock(kind);
                }
                continue;
            }
            if seen & pthread::WAITERS == 0
                && word.compare_exchange(seen, seen | pthread::WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            slept = true;
            match sleeper.sleep(word, seen | pthread::WAITERS, deadline) {
                Woke::Deadline => {
                    if sleeper.slept() {
                        self.recover_if_owner_gone(word);
                    }
                    return self.try_lock(kind);
                }
                Woke::Signalled => crash_point!("lock.contended.woken"),
                Woke::Recheck => self.recover_if_owner_gone(word),
            }
        }
    }

    /// For async waits: if the lock is held, marks a sleeper on its word
    /// (`FUTEX_WAITERS`, so the unlock wakes) and returns the word and the
    /// value to sleep on; `None` if it is free.
    pub(super) fn arm(&self) -> Option<(&AtomicU32, u32)> {
        let word = self.word();
        loop {
            let seen = word.load(Ordering::Relaxed);
            if seen & pthread::TID_MASK == 0 {
                self.repair_ownerless(seen);
                return None;
            }
            if seen & pthread::WAITERS != 0
                || word.compare_exchange(seen, seen | pthread::WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                return Some((word, seen | pthread::WAITERS));
            }
        }
    }

    /// A word that names no owner but has the sleepers' bit and no
    /// owner-died mark is garbage that no `trylock` can take (glibc takes
    /// only a zero word, or one the kernel marked owner-died) and no unlock
    /// or death will ever clear: neither glibc, the kernel nor this crate
    /// writes it. Marks it as a dead owner's, so the next attempt recovers
    /// the lock, poisoned.
    #[cold]
    fn repair_ownerless(&self, seen: u32) {
        if seen != pthread::WAITERS {
            return;
        }
        log::warn!("shmsync: a lock's word names no owner but has sleepers; recovering it");
        // SAFETY: the mutex is mapped and initialised; the word names no
        // owner, so nobody holds the lock.
        unsafe { pthread::declare_owner_dead(self.mutex(), seen) };
    }

    /// For a re-check slice of an async wait on this lock (which has no
    /// thread to sleep in slices): recovers an owner that is gone or a word
    /// no attempt could take, as a blocking waiter's slice would, and says
    /// whether an attempt may now succeed.
    pub(super) fn recover_if_stuck(&self) -> bool {
        let word = self.word();
        self.recover_if_owner_gone(word);
        let seen = word.load(Ordering::Relaxed);
        self.repair_ownerless(seen);
        let seen = word.load(Ordering::Relaxed);
        seen & pthread::TID_MASK == 0 || seen & pthread::OWNER_DIED != 0
    }

    /// After a slice of sleep on a lock that stayed held: if the owner the
    /// word names is gone, or is a live task that does not map this lock's
    /// memory (garbage naming a stranger, or a recycled tid), mark the word
    /// as the kernel would have for a dead owner.
    #[cold]
    fn recover_if_owner_gone(&self, word: &AtomicU32) {
        let seen = word.load(Ordering::Relaxed);
        let tid = seen & pthread::TID_MASK;
        if tid != 0 && !(Identity { id: tid, start: 0 }).could_hold(word as *const AtomicU32 as usize) {
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

    pub(super) fn owner(&self) -> Option<u32> {
        // SAFETY: the mutex is initialised and mapped for as long as `self` lives.
        unsafe { pthread::owner(self.mutex()) }
    }

    /// How deep the holder has nested the lock (a snapshot).
    pub(crate) fn depth(&self) -> u32 {
        // SAFETY: as above.
        unsafe { pthread::depth(self.mutex()) }
    }

    #[inline]
    pub(super) fn is_poisoned(&self) -> bool {
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
    panic!(
        "{what}: the calling thread already holds this lock and cannot take it again \
         (a Lock taken twice, or an RLock whose nesting count is at its limit)"
    )
}
