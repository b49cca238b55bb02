//! `RawBarrier`: `parties` processes meet, then all go on (Python's
//! `Barrier`), reusable generation after generation.
//!
//! One futex word, `state`, holds the whole phase, so every change is a
//! single store that a dying process cannot leave half-done:
//!
//! | bits   | name    | meaning |
//! |--------|---------|---------|
//! | 0      | BROKEN  | waits fail with `Broken` until `reset` |
//! | 1..16  | count   | parties arrived in this generation (at most `MAX_PARTIES`) |
//! | 16..32 | gen     | generation number, +1 each time one ends (wraps) |
//!
//! `outcomes` keeps, for the last 32 generations, one bit each: set if that
//! generation ended broken (timeout, `abort`, `reset` with waiters). It is
//! written before the `state` store that ends the generation (Release), so a
//! waiter that sees the generation change (Acquire) reads the right outcome.
//!
//! Changes happen under the barrier's own robust lock; waiting happens on
//! the futex, outside it. A party that dies after arriving still counts as
//! arrived. A party that dies holding the internal lock (a few instructions)
//! leaves the state consistent, because each change is one store; the next
//! locker recovers the lock and clears its poison.
//!
//! All-zero bytes are not valid (the lock needs `init`, parties must be >= 1).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::lock::RawLock;
use super::spin::SpinWait;
use crate::sys::futex;
use crate::sys::time::Deadline;

const BROKEN: u32 = 1;
const COUNT_SHIFT: u32 = 1;
const COUNT_MASK: u32 = 0x7fff << COUNT_SHIFT;
const GEN_SHIFT: u32 = 16;

/// The most parties a barrier may have.
pub const MAX_PARTIES: u32 = 0x7fff;

fn gen_of(state: u32) -> u32 {
    state >> GEN_SHIFT
}

fn count_of(state: u32) -> u32 {
    (state & COUNT_MASK) >> COUNT_SHIFT
}

fn pack(gen: u32, count: u32, broken: bool) -> u32 {
    ((gen & 0xffff) << GEN_SHIFT) | (count << COUNT_SHIFT) | u32::from(broken)
}

/// What a successful barrier wait returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarrierWaitResult {
    index: u32,
    leader: bool,
}

impl BarrierWaitResult {
    /// The arrival order in this generation, `0..parties`.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Whether this party arrived last (exactly one per generation).
    pub fn is_leader(&self) -> bool {
        self.leader
    }
}

/// The barrier is broken: a wait timed out, or `abort` or `reset` was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Broken;

/// A process-shared, reusable barrier.
///
/// Layout: `#[repr(C)]`, a [`RawLock`] then three `u32`s: 64 bytes, 8-byte
/// aligned on x86_64 and aarch64 Linux. All-zero bytes are not valid; call
/// [`init`](Self::init).
#[repr(C)]
pub struct RawBarrier {
    lock: RawLock,
    state: AtomicU32,
    outcomes: AtomicU32,
    parties: u32,
    _reserved: u32,
}

impl RawBarrier {
    /// Initialises the barrier for `parties` parties, `1..=MAX_PARTIES`.
    /// Returns a description of the problem, writing nothing, otherwise.
    ///
    /// # Safety
    /// As for [`RawLock::init`].
    pub unsafe fn init(this: *mut Self, parties: u32) -> Result<(), String> {
        if parties == 0 || parties > MAX_PARTIES {
            return Err(format!("parties must be between 1 and {MAX_PARTIES}, not {parties}"));
        }
        // SAFETY: forwarded from the caller; the fields are in bounds of `this`.
        unsafe {
            RawLock::init(&raw mut (*this).lock);
            (&raw mut (*this).state).write(AtomicU32::new(0));
            (&raw mut (*this).outcomes).write(AtomicU32::new(0));
            (&raw mut (*this).parties).write(parties);
            (&raw mut (*this)._reserved).write(0);
        }
        Ok(())
    }

    /// The number of parties.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// How many parties wait in the current generation (a snapshot).
    pub fn n_waiting(&self) -> u32 {
        count_of(self.state.load(Ordering::Relaxed))
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.state.load(Ordering::Relaxed) & BROKEN != 0
    }

    /// Runs `f` on the state under the internal lock. A poisoned lock is
    /// recovered silently: every change is one store, so the state is whole.
    fn locked<R>(&self, f: impl FnOnce(u32) -> R) -> R {
        self.lock.lock_recovering();
        let r = f(self.state.load(Ordering::Relaxed));
        // SAFETY: locked just above on this thread.
        unsafe { self.lock.unlock() };
        r
    }

    /// Ends generation `gen` (under the lock), recording its outcome first.
    fn end_generation(&self, gen: u32, broken_outcome: bool, broken_after: bool) {
        let bit = 1u32 << (gen % 32);
        if broken_outcome {
            self.outcomes.fetch_or(bit, Ordering::Relaxed);
        } else {
            self.outcomes.fetch_and(!bit, Ordering::Relaxed);
        }
        // Release: a waiter that sees the new generation sees the outcome.
        self.state.store(pack(gen.wrapping_add(1), 0, broken_after), Ordering::Release);
        futex::wake_all(&self.state);
    }

    /// Waits for all parties. `Err(Broken)` if the barrier is or becomes
    /// broken.
    pub fn wait(&self) -> Result<BarrierWaitResult, Broken> {
        self.wait_until(None)
    }

    /// Waits at most `timeout`. A timeout breaks the barrier, for every
    /// waiter, and returns `Err(Broken)`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult, Broken> {
        self.wait_until(Some(&Deadline::after(timeout)))
    }

    pub(crate) fn wait_until(&self, deadline: Option<&Deadline>) -> Result<BarrierWaitResult, Broken> {
        let arrival = self.locked(|state| {
            if state & BROKEN != 0 {
                return Err(Broken);
            }
            let (gen, index) = (gen_of(state), count_of(state));
            if index + 1 == self.parties {
                self.end_generation(gen, false, false);
                return Ok(Err(BarrierWaitResult { index, leader: true }));
            }
            self.state.store(pack(gen, index + 1, false), Ordering::Relaxed);
            Ok(Ok((gen, index)))
        })?;
        let (gen, index) = match arrival {
            Err(leader) => return Ok(leader),
            Ok(waiting) => waiting,
        };
        let mut spin = SpinWait::new();
        loop {
            let state = self.state.load(Ordering::Acquire);
            if gen_of(state) != gen {
                return self.outcome(gen, index);
            }
            if spin.spin() {
                continue;
            }
            if !futex::wait(&self.state, state, deadline) {
                // Deadline: break the generation, unless it ended meanwhile.
                return self.locked(|state| {
                    if gen_of(state) == gen {
                        self.end_generation(gen, true, true);
                        Err(Broken)
                    } else {
                        self.outcome(gen, index)
                    }
                });
            }
        }
    }

    fn outcome(&self, gen: u32, index: u32) -> Result<BarrierWaitResult, Broken> {
        if self.outcomes.load(Ordering::Relaxed) & (1 << (gen % 32)) != 0 {
            Err(Broken)
        } else {
            Ok(BarrierWaitResult { index, leader: false })
        }
    }

    /// Breaks the barrier: current and future waiters get `Err(Broken)`
    /// until [`reset`](Self::reset).
    pub fn abort(&self) {
        self.locked(|state| {
            if state & BROKEN == 0 {
                self.end_generation(gen_of(state), true, true);
            }
        });
    }

    /// Returns the barrier to its empty state. Parties waiting now get
    /// `Err(Broken)`.
    pub fn reset(&self) {
        self.locked(|state| {
            if count_of(state) > 0 {
                self.end_generation(gen_of(state), true, false);
            } else if state & BROKEN != 0 {
                self.state.store(pack(gen_of(state), 0, false), Ordering::Release);
            }
        });
    }
}

impl std::fmt::Debug for RawBarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawBarrier")
            .field("parties", &self.parties)
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.is_broken())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::MaybeUninit;

    fn new(parties: u32) -> Box<RawBarrier> {
        let mut b = Box::new(MaybeUninit::<RawBarrier>::uninit());
        // SAFETY: fresh, aligned, unshared storage.
        unsafe { RawBarrier::init(b.as_mut_ptr(), parties) }.unwrap();
        // SAFETY: init succeeded.
        unsafe { Box::from_raw(Box::into_raw(b).cast()) }
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn layout_is_as_documented() {
        assert_eq!(std::mem::size_of::<RawBarrier>(), 64);
        assert_eq!(std::mem::align_of::<RawBarrier>(), 8);
    }

    #[test]
    fn parties_are_checked() {
        let mut slot = MaybeUninit::<RawBarrier>::uninit();
        // SAFETY: valid storage; init writes nothing when it refuses.
        unsafe {
            assert!(RawBarrier::init(slot.as_mut_ptr(), 0).is_err());
            assert!(RawBarrier::init(slot.as_mut_ptr(), MAX_PARTIES + 1).is_err());
        }
    }

    #[test]
    fn one_party_is_always_the_leader() {
        let b = new(1);
        for _ in 0..3 {
            let r = b.wait().unwrap();
            assert!(r.is_leader() && r.index() == 0);
        }
    }

    #[test]
    fn threads_meet_for_many_generations_with_one_leader_each() {
        let b = new(3);
        let leaders = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if b.wait_timeout(Duration::from_secs(30)).unwrap().is_leader() {
                            leaders.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(leaders.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn timeout_breaks_and_reset_restores() {
        let b = new(2);
        assert_eq!(b.wait_timeout(Duration::from_millis(5)), Err(Broken));
        assert!(b.is_broken());
        assert_eq!(b.wait(), Err(Broken));
        b.reset();
        assert!(!b.is_broken());
        assert_eq!(b.n_waiting(), 0);
    }
}
