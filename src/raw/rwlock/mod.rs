//! `RawRwLock`: a reader-writer lock that survives the death of a reader, a
//! writer or an upgradable reader, for memory you map yourself.
//!
//! | field         | meaning |
//! |---------------|---------|
//! | `state`       | futex word: the exclusive side (see below) |
//! | `drain`       | futex word: a sequence that readers bump to wake the exclusive holder |
//! | `poisoned`    | 0 = healthy, 1 = a writer died or panicked holding it |
//! | `held_reads`  | read locks the exclusive holder holds *through* the exclusive side (no slot was free); holder-only |
//! | `owner_start` | the exclusive holder's start time (0 = not known) |
//! | `claimed`     | bit `i`: reader slot `i` has been taken at least once (never cleared) |
//! | `waiting`     | bit `i`: slot `i`'s thread waits for a writer to leave |
//! | `upgradable`  | 1 while the exclusive holder holds it as an upgradable read; holder-only |
//! | `slots`       | [`READER_SLOTS`] reader slots, one cache line each |
//!
//! `state` bits: 0..22 HOLDER, the tid of the exclusive holder (tids are below
//! the kernel's `PID_MAX_LIMIT`, 2^22); 22 WRITING, the holder writes (or is
//! about to) and new readers must wait; 23 SLEEPERS, someone may sleep on
//! `state`; 24 DRAINING, the holder sleeps on `drain`; 25..32 a phase that
//! every release of the exclusive side or of WRITING bumps, so a sleeper's
//! expected word never comes back (ABA).
//!
//! A slot's word: bits 0..16 the read locks its thread holds (nested), bit 16
//! WAITING, bits 17..32 a tag bumped whenever the slot changes hands, bits
//! 32..64 the owner's tid (0 = free). The slot's `stamp` is the owner's start
//! time tagged with the tag of the claim that wrote it: a stamp whose tag is
//! not the word's is not known yet (a claim in progress), and liveness is then
//! judged by the tid alone. Who the owner is thus never rests on a pid that
//! could have been recycled.
//!
//! Protocol.
//! - *Read*: a thread finds its slot (the one its tid hashes to, else one it
//!   claims, or an idle one it takes over), adds 1 to its count (SeqCst),
//!   then loads `state` (SeqCst): no WRITING means it holds a read. Otherwise
//!   it gives the count back, marks its slot WAITING (and `waiting`), and
//!   sleeps on `state` until WRITING clears. A thread that already holds a read
//!   only adds 1: it blocks any writer anyway, so nested reads never deadlock
//!   behind a waiting writer. With no slot free (more than [`READER_SLOTS`]
//!   threads reading at once), a reader holds its read through the exclusive
//!   side, as its holder without WRITING.
//! - *Write*: one compare-exchange puts the writer's tid and WRITING in
//!   `state` (SeqCst), then it scans the claimed slots (SeqCst) until every
//!   count is 0, sleeping on `drain` with DRAINING set; the reader whose count
//!   falls to 0 and sees DRAINING bumps `drain` and wakes it. The two SeqCst
//!   pairs are a Dekker handshake: either the reader sees WRITING or the
//!   writer sees the reader's count. Writers wait for each other by sleeping
//!   on `state` with SLEEPERS set.
//! - *Upgradable*: the exclusive side without WRITING: it shuts out writers
//!   and other upgradable readers but not readers. `upgrade` sets WRITING and
//!   drains the readers as a writer does; `downgrade`s take a read count in
//!   the thread's slot before letting go of the exclusive side.
//! - *Unlock*: a read gives back its count (SeqCst) and, if it was the last
//!   and DRAINING is set, wakes the holder. A write (or upgradable) release
//!   clears HOLDER and WRITING keeping SLEEPERS, wakes every sleeper on
//!   `state`, then clears SLEEPERS only if the word is still what it
//!   published (a later sleeper sets it again).
//!
//! Fairness: writer-preferring with a bound for readers. A writer's WRITING
//! stops new readers at once, so a writer waits only for the reads already
//! in progress, however many readers keep coming. A reader that had to wait
//! is WAITING; the next writer to take the exclusive side sees `waiting`,
//! clears its own WRITING, lets those readers in, and only then sets WRITING
//! again: a waiting reader is passed by at most one writer after the one it
//! waited for. (`try_write` takes what is free without that courtesy.) The
//! courtesy is bounded: a queued reader that has not come in after two of
//! the writer's re-check slices (at least 0.75 s; it cannot run, or its
//! mark is garbage) is no longer waited for, and queues again when it runs.
//!
//! Deaths (the kernel's robust list covers only pthread mutexes, so this
//! lock judges deaths itself, by tid and start time):
//! - a reader killed holding: its count stays in its slot. A writer that
//!   waits for it checks, after each re-check slice, whether the slot's owner
//!   lives, and reclaims the slot of a dead one; nothing is poisoned. Bound:
//!   [`RECHECK`](super::RECHECK) after the death (the writer's first slice,
//!   250 ms, if it came later).
//! - a writer (or an upgraded reader) killed holding, or while announcing
//!   itself (WRITING already set): every waiter on `state` checks the holder
//!   after each slice; the first to find it dead poisons the lock, frees the
//!   exclusive side and wakes the rest. Same bound.
//! - an upgradable reader killed before upgrading: freed the same way, not
//!   poisoned (no WRITING: it changed nothing).
//! - a reader killed while WAITING: the writer that lets waiting readers in
//!   checks them before each sleep, so a dead one costs it a liveness check.
//! - a releaser killed between publishing and waking: SLEEPERS stays, the
//!   next release wakes everyone, and a sleeper re-checks within a slice.
//! - a waiter woken and killed: a release wakes every sleeper on `state`, and
//!   a reader's wake of the holder bumps `drain`, so no other waiter depended
//!   on the dead one.
//!
//! Why not a robust pthread mutex for the exclusive side: glibc's robust
//! lock and unlock cost more than this whole write path (they keep the
//! thread's robust list), and the kernel's instant owner-death wake would
//! reach only waiters asleep on that mutex, not the readers; every waiter
//! here already re-checks within a slice. Nothing of this lock is on glibc's
//! robust list, so a forgotten guard pins no mapping. Why not one shared
//! reader count: every reader on every core would write its cache line, and
//! a dead reader's share could not be told apart.
//!
//! Limits: identities are thread ids, so every process sharing the lock must
//! be in one pid namespace (as for the crate's other locks). More than
//! [`READER_SLOTS`] threads holding reads at once take turns on the
//! exclusive side, so code that needs more than that many to hold at the
//! same moment waits. One thread nests at most 65,535 reads.
//!
//! With nobody waiting, no call makes a syscall: a read is two
//! compare-exchanges and a few loads on the reader's own cache line and the
//! shared read-mostly first line; a write is two compare-exchanges and a scan
//! of the claimed slots. All-zero bytes are a valid, free, healthy lock.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::lock::Locked;
use super::sleep::{Sleeper, Woke};
use super::spin::{Spin, SpinWait};
use crate::sys::futex;
use crate::sys::proc::Identity;
use crate::sys::thread;
use crate::sys::time::Deadline;

mod drain;
mod exclusive;
mod read;
mod slots;
mod write;

/// This module's crash points (see [`crate::crash`]).
pub(crate) const CRASH_POINTS: &[&str] = &[
    "rwlock.read.counted",
    "rwlock.read.waiting",
    "rwlock.read.woken",
    "rwlock.read_unlock.released",
    "rwlock.write.announced",
    "rwlock.write.yielded",
    "rwlock.write.drained",
    "rwlock.exclusive.woken",
    "rwlock.unlock.published",
    "rwlock.unlock.woken",
    "rwlock.upgradable.acquired",
    "rwlock.upgrade.announced",
    "rwlock.upgrade.drained",
    "rwlock.downgrade.counted",
    "rwlock.recover.released",
];

/// How many threads can hold or wait for read locks at once, each in its
/// own slot; more readers than that hold theirs one at a time through the
/// exclusive side.
pub const READER_SLOTS: usize = 64;

const HOLDER: u32 = (1 << 22) - 1;
const WRITING: u32 = 1 << 22;
const SLEEPERS: u32 = 1 << 23;
const DRAINING: u32 = 1 << 24;
const PHASE_ONE: u32 = 1 << 25;
const PHASE: u32 = !(PHASE_ONE - 1);

const COUNT: u64 = 0xffff;
const WAITING: u64 = 1 << 16;
const TAG_SHIFT: u32 = 17;
const TAG: u64 = 0x7fff << TAG_SHIFT;
const OWNER_SHIFT: u32 = 32;
const STAMP_SHIFT: u32 = 48;
const START: u64 = (1 << STAMP_SHIFT) - 1;

const HEALTHY: u32 = 0;
const POISONED: u32 = 1;

#[inline]
fn owner(w: u64) -> u32 {
    (w >> OWNER_SHIFT) as u32
}

#[inline]
fn count(w: u64) -> u64 {
    w & COUNT
}

/// `w` with no owner, no count, not waiting, and the next tag.
#[inline]
fn freed(w: u64) -> u64 {
    (w & TAG).wrapping_add(1 << TAG_SHIFT) & TAG
}

/// The stamp an owner with `start` writes for the claim that made word `w`.
#[inline]
fn stamp(w: u64, start: u64) -> u64 {
    ((w & TAG) >> TAG_SHIFT) << STAMP_SHIFT | (start & START)
}

/// The slots whose bits are set in `mask`, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            i
        })
    })
}

/// One reader's place: its own cache line, so readers on different cores
/// never write the same line.
#[repr(C, align(64))]
struct Slot {
    word: AtomicU64,
    stamp: AtomicU64,
    _pad: [u64; 6],
}

/// The calling thread, as slots and `state` record it.
#[derive(Clone, Copy)]
struct Me {
    tid: u32,
    start: u64,
}

#[inline]
fn me() -> Me {
    let id = thread::this_thread();
    if id.id == 0 || id.id > HOLDER {
        tid_out_of_range(id.id);
    }
    Me { tid: id.id, start: id.start & START }
}

#[cold]
#[inline(never)]
fn tid_out_of_range(tid: u32) -> ! {
    panic!("shmsync: thread id {tid} is outside 1..2^22, which Linux's PID_MAX_LIMIT rules out")
}

thread_local! {
    /// The slot this thread last read in (any lock): where it looks first.
    static HINT: Cell<u32> = const { Cell::new(u32::MAX) };
}

/// The slot to look at first: the last one used, else the one `tid` hashes to.
#[inline]
fn hint(tid: u32) -> usize {
    let h = HINT.get() as usize;
    if h < READER_SLOTS {
        h
    } else {
        home(tid)
    }
}

fn home(tid: u32) -> usize {
    (tid.wrapping_mul(0x9e37_79b9) >> 26) as usize % READER_SLOTS
}

/// Where the exclusive holder's wait on `drain` is when it looks again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Look {
    /// Spinning, or just woken by a reader.
    Again,
    /// About to sleep.
    BeforeSleep,
    /// A slice of sleep ran out.
    AfterSlice,
}

/// Why a lock call did not get the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fail {
    /// The deadline passed.
    Timeout,
    /// The calling thread holds what it would wait for.
    Deadlock,
    /// The calling thread holds the most nested reads one slot counts.
    TooManyReads,
}

#[cold]
#[inline(never)]
fn refuse(what: &str, why: Fail) -> ! {
    match why {
        Fail::TooManyReads => panic!("{what}: the calling thread holds 65,535 nested read locks already"),
        _ => panic!("{what}: the calling thread holds this lock in a way that makes the call wait for itself"),
    }
}

/// Unwraps the outcome of a call without a deadline.
fn blocking<T>(what: &str, r: Result<T, Fail>) -> T {
    match r {
        Ok(v) => v,
        Err(why) => refuse(what, why),
    }
}

/// A process-shared reader-writer lock whose readers and writers may be
/// killed at any instant without stranding the others (see the module
/// documentation for the protocol and its bounds).
///
/// Layout: `#[repr(C)]`, 64-byte aligned, 4160 bytes: a 64-byte line of
/// shared words and [`READER_SLOTS`] 64-byte reader slots. All-zero bytes are
/// a valid, free, healthy lock; [`init`](Self::init) writes exactly that.
///
/// Poisoning follows std: a writer that dies or panics holding the lock
/// poisons it, and every later lock call (read or write) reports it until
/// [`clear_poison`](Self::clear_poison). A reader's death poisons nothing.
///
/// Calls that would wait for the calling thread itself panic (`write` while
/// holding a read or the write lock, `read` while holding the write lock);
/// their `try_` forms return `None`. Nested reads on one thread are fine, up
/// to 65,535 (more panic, as std's do past its maximum). As with
/// parking_lot, a thread that holds a read must not wait for an upgradable
/// read: if the upgradable holder then upgrades, each waits for the other.
///
/// ```
/// use shmsync::raw::RawRwLock;
///
/// let lock = RawRwLock::default(); // or RawRwLock::init on shared memory
/// assert!(!lock.read().is_poisoned());
/// assert!(lock.try_read().is_some()); // readers share it
/// assert!(lock.try_write().is_none()); // a writer does not
/// // SAFETY: this thread holds the two reads taken above.
/// unsafe { lock.unlock_read(); lock.unlock_read() };
/// assert!(lock.try_write().is_some());
/// // SAFETY: this thread holds the write lock.
/// unsafe { lock.unlock_write() };
/// ```
#[repr(C, align(64))]
pub struct RawRwLock {
    state: AtomicU32,
    drain: AtomicU32,
    poisoned: AtomicU32,
    held_reads: AtomicU32,
    owner_start: AtomicU64,
    claimed: AtomicU64,
    waiting: AtomicU64,
    upgradable: AtomicU32,
    _reserved: [u32; 5],
    slots: [Slot; READER_SLOTS],
}

impl Default for RawRwLock {
    fn default() -> Self {
        // SAFETY: every field is an atomic, an integer or an array of them,
        // for which all-zero bytes are valid, and all-zero is a free lock.
        unsafe { std::mem::zeroed() }
    }
}

impl RawRwLock {
    /// Initialises the lock in place: free and healthy (all zero bytes).
    ///
    /// # Safety
    /// `this` must be valid for writes of `Self` and aligned for it, and no
    /// thread in any process may use the lock until `init` returns.
    pub unsafe fn init(this: *mut Self) {
        // SAFETY: forwarded from the caller; all-zero bytes are a free lock.
        unsafe { this.cast::<u8>().write_bytes(0, std::mem::size_of::<Self>()) }
    }

    /// On open: whether the words are a state this lock can be in, even
    /// mid-operation. A description of the first problem if not.
    pub(crate) fn check(&self) -> Result<(), String> {
        let poisoned = self.poisoned.load(Ordering::Relaxed);
        if poisoned > POISONED {
            return Err(format!("its poison flag is {poisoned}, not 0 or 1"));
        }
        let upgradable = self.upgradable.load(Ordering::Relaxed);
        if upgradable > 1 {
            return Err(format!("its upgradable flag is {upgradable}, not 0 or 1"));
        }
        let s = self.state.load(Ordering::Relaxed);
        if s & WRITING != 0 && s & HOLDER == 0 {
            return Err(format!("its state word {s:#x} marks a writer but names no holder"));
        }
        let claimed = self.claimed.load(Ordering::Relaxed);
        for (i, slot) in self.slots.iter().enumerate() {
            let w = slot.word.load(Ordering::Relaxed);
            let tid = owner(w);
            if tid == 0 && (count(w) != 0 || w & WAITING != 0) {
                return Err(format!("reader slot {i} has no owner but holds {} reads or waits", count(w)));
            }
            if tid > HOLDER {
                return Err(format!("reader slot {i} names thread {tid}, beyond any Linux thread id"));
            }
            if tid != 0 && claimed & (1 << i) == 0 {
                return Err(format!("reader slot {i} is owned but not marked as claimed"));
            }
        }
        Ok(())
    }

    #[inline]
    fn flag(&self) -> Locked {
        // Relaxed: a report, as std's is; a holder reads it after the
        // acquire that made it the holder.
        if self.poisoned.load(Ordering::Relaxed) == HEALTHY {
            Locked::Clean
        } else {
            Locked::Poisoned
        }
    }

    /// Whether the lock is poisoned.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed) != HEALTHY
    }

    /// Marks the lock poisoned, e.g. from a write guard dropped while its
    /// thread panics.
    pub fn poison(&self) {
        self.poisoned.store(POISONED, Ordering::Relaxed);
    }

    /// Clears the poison flag for every process.
    pub fn clear_poison(&self) {
        self.poisoned.store(HEALTHY, Ordering::Relaxed);
    }

    /// Whether a writer holds the lock or waits for its readers (a snapshot).
    pub fn is_write_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & WRITING != 0
    }

    /// The tid of the thread holding the exclusive side (a writer or an
    /// upgradable reader), if any (a snapshot).
    pub fn exclusive_holder(&self) -> Option<u32> {
        Some(self.state.load(Ordering::Relaxed) & HOLDER).filter(|&t| t != 0)
    }

    /// How many read locks are held (a snapshot, counting those of readers
    /// that died and are not reclaimed yet).
    pub fn readers(&self) -> u32 {
        let in_slots: u64 =
            bits(self.claimed.load(Ordering::Relaxed)).map(|i| count(self.slots[i].word.load(Ordering::Relaxed))).sum();
        let through = if self.exclusive_holder().is_some() { self.held_reads.load(Ordering::Relaxed) } else { 0 };
        u32::try_from(in_slots).unwrap_or(u32::MAX).saturating_add(through)
    }
}

impl std::fmt::Debug for RawRwLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRwLock")
            .field("readers", &self.readers())
            .field("write_locked", &self.is_write_locked())
            .field("exclusive_holder", &self.exclusive_holder())
            .field("poisoned", &self.is_poisoned())
            .finish()
    }
}

#[cfg(test)]
mod tests;
