//! `RawBarrier`: `parties` processes meet, then all go on (Python's
//! `Barrier`), reusable generation after generation.
//!
//! | field          | meaning |
//! |----------------|---------|
//! | `lock`         | robust lock over every change; a dead holder's lock is recovered silently |
//! | `state`        | bit 0 BROKEN (waits fail until `reset`), bits 1.. the parties arrived in this generation |
//! | `seq`          | the futex word: bit 0 SLEEPERS (someone may be asleep), bits 1.. bumped when a generation ends |
//! | `gen`          | the generation, 64 bits, +1 each time one ends |
//! | `broken_count` | how many generations ever ended broken |
//! | `broken`       | the last 32 of them, as `generation + 1`, at `index % 32` |
//! | `parties`      | fixed at `init` |
//!
//! Every change is made under the lock by single stores, so a process that
//! dies holding the lock leaves the state whole and the next locker just
//! clears the poison. A party that dies after arriving still counts as
//! arrived.
//!
//! How a waiter learns its generation's outcome without a lock: it notes
//! `broken_count` when it arrives (under the lock). Generations end in
//! order, and breaks are recorded in order, before `gen` moves (Release), so
//! once it sees `gen` move: if no break was recorded since it arrived, its
//! generation passed; otherwise the first break recorded since is either its
//! own generation (broken) or a later one (so its own passed). Only if 32
//! breaks were recorded while it was descheduled is that record gone; then it
//! reports broken, never a pass it cannot prove. Normal ends need no record,
//! so a waiter may sleep through any number of them.
//!
//! Waking: a sleeper sets SLEEPERS in `seq` (and bumps it, so the word
//! changes: see `sleep::register_sleeper`), checks `gen`, and sleeps on
//! `seq`. The last arriver (or a breaker) stores `gen + 1`, bumps `seq`
//! keeping SLEEPERS, wakes everyone if the bit was set, then clears it only if
//! `seq` is unchanged (no new sleeper). An ender killed between the store
//! and the wake leaves SLEEPERS set for the next ender, and the sleepers see
//! `gen` move at their next re-check slice anyway (at most `RECHECK`).
//!
//! All-zero bytes are not valid (the lock needs `init`, parties must be >= 1).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::lock::RawLock;
use super::sleep::{register_sleeper, Sleeper, Woke};
use super::spin::{Spin, SpinWait};
use crate::sys::futex;
use crate::sys::time::Deadline;

/// This module's crash points (see [`crate::crash`]).
pub(crate) const CRASH_POINTS: &[&str] = &["barrier.wait.arrived", "barrier.generation.ended"];

const BROKEN: u32 = 1;
const COUNT_SHIFT: u32 = 1;
const SLEEPERS: u32 = 1;
const SEQ_STEP: u32 = 2;
/// How many broken generations the record keeps.
const RECORD: u64 = 32;

/// The most parties a barrier may have.
pub const MAX_PARTIES: u32 = 0x7fff;

fn count_of(state: u32) -> u32 {
    state >> COUNT_SHIFT
}

fn pack(count: u32, broken: bool) -> u32 {
    (count << COUNT_SHIFT) | u32::from(broken)
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
/// A barrier whose shared state makes no sense (more parties arrived than it
/// has) also reads as broken, until `reset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Broken;

/// A process-shared, reusable barrier.
///
/// Layout: `#[repr(C)]`, a [`RawLock`], two `u32`s, two `u64`s, 32 `u64`s and
/// two `u32`s: 336 bytes, 8-byte aligned on 64-bit Linux. All-zero bytes are
/// not valid; call [`init`](Self::init).
#[repr(C)]
pub struct RawBarrier {
    lock: RawLock,
    state: AtomicU32,
    seq: AtomicU32,
    gen: AtomicU64,
    broken_count: AtomicU64,
    broken: [AtomicU64; RECORD as usize],
    parties: u32,
    _reserved: u32,
}

/// Where a party stands after arriving.
pub(crate) enum Arrival {
    /// It arrived last: the generation is over.
    Leader(BarrierWaitResult),
    /// It waits for generation `gen` to end.
    Waiting { gen: u64, index: u32, breaks_seen: u64 },
}

impl RawBarrier {
    /// Initialises the barrier for `parties` parties, `1..=MAX_PARTIES`.
    /// Returns a description of the problem, writing nothing, otherwise.
    ///
    /// # Safety
    /// As for [`RawLock::init`].
    pub unsafe fn init(this: *mut Self, parties: u32) -> Result<(), String> {
        check_parties(parties)?;
        // SAFETY: forwarded from the caller; the fields are in bounds of
        // `this`, and all-zero bytes are valid for every field but the lock
        // and `parties`, written next.
        unsafe {
            this.cast::<u8>().write_bytes(0, std::mem::size_of::<Self>());
            RawLock::init(&raw mut (*this).lock);
            (&raw mut (*this).parties).write(parties);
        }
        Ok(())
    }

    /// On open: whether the fields are a barrier `init` could have made.
    pub(crate) fn check(&self) -> Result<(), String> {
        self.lock.check()?;
        check_parties(self.parties)?;
        let count = count_of(self.state.load(Ordering::Relaxed));
        if count >= self.parties {
            return Err(format!("{count} parties wait at a barrier of {}", self.parties));
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

    /// The current generation: how many have ended (a snapshot).
    pub fn generation(&self) -> u64 {
        self.gen.load(Ordering::Relaxed)
    }

    /// Runs `f` under the internal lock. A poisoned lock is recovered
    /// silently: every change is one store, so the state is whole.
    fn locked<R>(&self, f: impl FnOnce(u32) -> R) -> R {
        self.lock.lock_recovering();
        let r = f(self.state.load(Ordering::Relaxed));
        // SAFETY: locked just above on this thread.
        unsafe { self.lock.unlock() };
        r
    }

    /// Ends generation `gen` (under the lock): records a break first, then
    /// the new state and generation, then wakes the sleepers.
    fn end_generation(&self, gen: u64, broken_outcome: bool, broken_after: bool) {
        if broken_outcome {
            let n = self.broken_count.load(Ordering::Relaxed);
            self.broken[(n % RECORD) as usize].store(gen.wrapping_add(1), Ordering::Release);
            self.broken_count.store(n.wrapping_add(1), Ordering::Release);
        }
        self.state.store(pack(0, broken_after), Ordering::Release);
        // SeqCst, with the sleeper's SeqCst `seq` update and `gen` load: if
        // the sleeper saw the old `gen`, its SLEEPERS bit is in the `seq` we
        // read below.
        self.gen.store(gen.wrapping_add(1), Ordering::SeqCst);
        crash_point!("barrier.generation.ended");
        let bumped = self.seq.fetch_add(SEQ_STEP, Ordering::SeqCst).wrapping_add(SEQ_STEP);
        if bumped & SLEEPERS != 0 {
            futex::wake_all(&self.seq);
            let _ = self.seq.compare_exchange(bumped, bumped & !SLEEPERS, Ordering::Relaxed, Ordering::Relaxed);
        }
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

    /// Arrives (counts this party) in the current generation.
    pub(crate) fn arrive(&self) -> Result<Arrival, Broken> {
        self.locked(|state| {
            let index = count_of(state);
            if state & BROKEN != 0 || index >= self.parties {
                return Err(Broken);
            }
            let gen = self.gen.load(Ordering::Relaxed);
            if index + 1 == self.parties {
                self.end_generation(gen, false, false);
                return Ok(Arrival::Leader(BarrierWaitResult { index, leader: true }));
            }
            // Release: whoever sees the count sees what this party did first.
            self.state.store(pack(index + 1, false), Ordering::Release);
            crash_point!("barrier.wait.arrived");
            Ok(Arrival::Waiting { gen, index, breaks_seen: self.broken_count.load(Ordering::Relaxed) })
        })
    }

    /// For waiting on many objects and for async waits: marks a sleeper and
    /// returns the word and the value to sleep on, or `None` if generation
    /// `gen` has ended.
    pub(crate) fn arm(&self, gen: u64) -> Option<(&AtomicU32, u32)> {
        let seen = register_sleeper(&self.seq, SLEEPERS, SEQ_STEP);
        (self.gen.load(Ordering::SeqCst) == gen).then_some((&self.seq, seen))
    }

    pub(crate) fn wait_until(&self, deadline: Option<&Deadline>) -> Result<BarrierWaitResult, Broken> {
        let arrival = self.arrive()?;
        let (gen, index, breaks_seen) = match arrival {
            Arrival::Leader(leader) => return Ok(leader),
            Arrival::Waiting { gen, index, breaks_seen } => (gen, index, breaks_seen),
        };
        let mut spin = SpinWait::new(Spin::Barrier, deadline);
        let mut sleeper = Sleeper::new();
        loop {
            if self.gen.load(Ordering::Acquire) != gen {
                return self.outcome(gen, index, breaks_seen);
            }
            if spin.spin() {
                continue;
            }
            let seen = register_sleeper(&self.seq, SLEEPERS, SEQ_STEP);
            if self.gen.load(Ordering::SeqCst) != gen {
                continue;
            }
            if sleeper.sleep(&self.seq, seen, deadline) == Woke::Deadline {
                // Deadline: break the generation, unless it ended meanwhile.
                return self.locked(|_| {
                    if self.gen.load(Ordering::Relaxed) == gen {
                        self.end_generation(gen, true, true);
                        Err(Broken)
                    } else {
                        self.outcome(gen, index, breaks_seen)
                    }
                });
            }
        }
    }

    /// How generation `gen`, which has ended, ended for the party that
    /// arrived `index`-th and saw `breaks_seen` breaks recorded on arrival.
    pub(crate) fn outcome(&self, gen: u64, index: u32, breaks_seen: u64) -> Result<BarrierWaitResult, Broken> {
        let passed = Ok(BarrierWaitResult { index, leader: false });
        // Acquire, after the Acquire load of `gen` that saw it move: the
        // records made before that store are visible.
        if self.broken_count.load(Ordering::Acquire) == breaks_seen {
            return passed;
        }
        let first = self.broken[(breaks_seen % RECORD) as usize].load(Ordering::Acquire);
        // Unless 32 more breaks have been recorded, `first` is the first
        // break since arrival (see the module docs).
        if self.broken_count.load(Ordering::Acquire).wrapping_sub(breaks_seen) >= RECORD {
            return Err(Broken);
        }
        if first == gen.wrapping_add(1) {
            Err(Broken)
        } else {
            passed
        }
    }

    /// Breaks the barrier: current and future waiters get `Err(Broken)`
    /// until [`reset`](Self::reset).
    pub fn abort(&self) {
        self.locked(|state| {
            if state & BROKEN == 0 {
                self.end_generation(self.gen.load(Ordering::Relaxed), true, true);
            }
        });
    }

    /// Returns the barrier to its empty state. Parties waiting now get
    /// `Err(Broken)`. Also repairs a barrier whose count made no sense.
    pub fn reset(&self) {
        self.locked(|state| {
            if count_of(state) > 0 {
                self.end_generation(self.gen.load(Ordering::Relaxed), true, false);
            } else if state & BROKEN != 0 {
                self.state.store(pack(0, false), Ordering::Release);
            }
        });
    }
}

fn check_parties(parties: u32) -> Result<(), String> {
    if parties == 0 || parties > MAX_PARTIES {
        return Err(format!("parties must be between 1 and {MAX_PARTIES}, not {parties}"));
    }
    Ok(())
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
        assert_eq!(std::mem::size_of::<RawBarrier>(), 336);
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
    fn a_late_waiter_reads_its_own_generation_after_many_others() {
        // Two parties, three threads: while one waiter is slow to look, the
        // other two run far more than 32 generations and break some of them.
        let b = new(2);
        let g = b.generation();
        let breaks = b.broken_count.load(Ordering::Relaxed);
        // As if a party arrived in generation g, then was descheduled.
        b.state.store(pack(1, false), Ordering::Relaxed);
        b.locked(|_| b.end_generation(g, false, false)); // g passes
        for _ in 0..100 {
            b.wait_timeout(Duration::from_millis(1)).unwrap_err(); // breaks one
            b.reset();
        }
        assert_eq!(b.outcome(g, 0, breaks), Err(Broken), "32+ breaks later the outcome is unknown: broken");
        let g2 = b.generation();
        let breaks2 = b.broken_count.load(Ordering::Relaxed);
        b.state.store(pack(1, false), Ordering::Relaxed);
        b.locked(|_| b.end_generation(g2, false, false));
        for _ in 0..10 {
            b.wait_timeout(Duration::from_millis(1)).unwrap_err();
            b.reset();
        }
        assert!(b.outcome(g2, 0, breaks2).is_ok(), "a later break does not make a passed generation broken");
        let g3 = b.generation();
        let breaks3 = b.broken_count.load(Ordering::Relaxed);
        b.state.store(pack(1, false), Ordering::Relaxed);
        b.reset(); // g3 ends broken
        assert_eq!(b.outcome(g3, 0, breaks3), Err(Broken));
    }

    #[test]
    fn a_count_beyond_the_parties_reads_as_broken_until_reset() {
        let b = new(3);
        b.state.store(pack(7, false), Ordering::Relaxed);
        assert!(b.check().is_err());
        assert_eq!(b.wait_timeout(Duration::from_millis(1)), Err(Broken));
        b.reset();
        assert!(b.check().is_ok());
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
