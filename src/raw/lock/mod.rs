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

mod kinds;
mod robust;

pub use kinds::{RawLock, RawRLock};
pub(crate) use robust::Robust;

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
