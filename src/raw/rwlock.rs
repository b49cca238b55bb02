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
//! waited for. (`try_write` takes what is free without that courtesy.)
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

fn owner(w: u64) -> u32 {
    (w >> OWNER_SHIFT) as u32
}

fn count(w: u64) -> u64 {
    w & COUNT
}

/// `w` with no owner, no count, not waiting, and the next tag.
fn freed(w: u64) -> u64 {
    (w & TAG).wrapping_add(1 << TAG_SHIFT) & TAG
}

/// The stamp an owner with `start` writes for the claim that made word `w`.
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
}

#[cold]
#[inline(never)]
fn deadlock(what: &str) -> ! {
    panic!("{what}: the calling thread holds this lock in a way that makes the call wait for itself")
}

/// Unwraps the outcome of a call without a deadline.
fn blocking<T>(what: &str, r: Result<T, Fail>) -> T {
    match r {
        Ok(v) => v,
        Err(_) => deadlock(what),
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
/// their `try_` forms return `None`. Nested reads on one thread are fine.
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

    // ---- reading -------------------------------------------------------

    /// Blocks until the calling thread holds a read lock (shared with other
    /// readers, exclusive of writers). [`Locked::Poisoned`] if the lock is
    /// poisoned.
    ///
    /// # Panics
    /// If the calling thread holds the write lock.
    #[inline]
    pub fn read(&self) -> Locked {
        match self.read_fast() {
            Ok(how) => how,
            Err(mine) => blocking("RawRwLock::read", self.read_slow(mine, None)),
        }
    }

    /// Takes a read lock if no writer holds or waits for the lock; `None`
    /// otherwise (also if the calling thread holds the write lock).
    #[inline]
    pub fn try_read(&self) -> Option<Locked> {
        match self.read_fast() {
            Ok(how) => Some(how),
            Err(mine) => self.read_slow(mine, Some(&Deadline::after(Duration::ZERO))).ok(),
        }
    }

    /// Takes a read lock, waiting at most `timeout`; `None` on timeout (or
    /// at once if the calling thread holds the write lock).
    pub fn try_read_for(&self, timeout: Duration) -> Option<Locked> {
        match self.read_fast() {
            Ok(how) => Some(how),
            Err(mine) => self.read_slow(mine, Some(&Deadline::after(timeout))).ok(),
        }
    }

    /// Whether slot `i`, whose word is `w`, is the calling thread's.
    #[inline]
    fn is_mine(&self, i: usize, w: u64, me: Me) -> bool {
        owner(w) == me.tid && self.slots[i].stamp.load(Ordering::Relaxed) == stamp(w, me.start)
    }

    /// The uncontended read: this thread's slot is where it looked last.
    /// `Err` carries that slot if it is this thread's, for the slow path.
    #[inline]
    fn read_fast(&self) -> Result<Locked, Option<usize>> {
        let me = me();
        let i = hint(me.tid);
        let slot = &self.slots[i];
        let w = slot.word.load(Ordering::Relaxed);
        if !self.is_mine(i, w, me) {
            return Err(None);
        }
        match count(w) {
            0 if w & WAITING == 0 => {}
            COUNT => return Err(Some(i)),
            0 => return Err(Some(i)),
            _ => {
                // Nested: this thread holds a read already, so no writer is
                // in, nor can one get in; no ordering is needed.
                return match slot.word.compare_exchange(w, w + 1, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => Ok(self.flag()),
                    Err(_) => Err(Some(i)),
                };
            }
        }
        // SeqCst, with the SeqCst load of `state` below: the reader's half of
        // the handshake with a writer's SeqCst claim of WRITING and scan.
        if slot.word.compare_exchange(w, w + 1, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return Err(Some(i));
        }
        crash_point!("rwlock.read.counted");
        if self.state.load(Ordering::SeqCst) & WRITING == 0 {
            return Ok(self.flag());
        }
        self.give_back(i, false);
        Err(Some(i))
    }

    /// Takes back the count a reader just added to its slot `i` on finding
    /// a writer, marking it WAITING if `wait`.
    #[cold]
    fn give_back(&self, i: usize, wait: bool) {
        let slot = &self.slots[i];
        let mut w = slot.word.load(Ordering::Relaxed);
        loop {
            let next = if wait { (w - 1) | WAITING } else { w - 1 };
            // SeqCst: the writer's scan must see the count gone before this
            // thread looks at DRAINING.
            match slot.word.compare_exchange(w, next, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        if wait {
            self.waiting.fetch_or(1 << i, Ordering::SeqCst);
        }
        if self.state.load(Ordering::SeqCst) & DRAINING != 0 {
            self.wake_drainer();
        }
    }

    /// The one read path that waits: finds the thread's slot, then enters
    /// whenever no writer is in, waiting (WAITING, asleep on `state`)
    /// while one is.
    #[cold]
    fn read_slow(&self, mine: Option<usize>, deadline: Option<&Deadline>) -> Result<Locked, Fail> {
        let me = me();
        let Some(i) = self.own_slot(me, mine) else {
            return self.read_through_exclusive(me, deadline);
        };
        HINT.set(i as u32);
        let slot = &self.slots[i];
        let mut spin = SpinWait::new(Spin::RwLock, deadline);
        let mut sleeper = Sleeper::new();
        loop {
            let w = slot.word.load(Ordering::Relaxed);
            if !self.is_mine(i, w, me) {
                // Taken over while idle (this thread had not counted yet).
                return self.read_slow(None, deadline);
            }
            match count(w) {
                0 => {}
                COUNT => return self.read_through_exclusive(me, deadline),
                _ => {
                    if slot.word.compare_exchange(w, w + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                        return Ok(self.flag());
                    }
                    continue;
                }
            }
            let s = self.state.load(Ordering::SeqCst);
            if s & WRITING == 0 {
                let entered = (w & !WAITING) + 1;
                // SeqCst: as in `read_fast`.
                if slot.word.compare_exchange(w, entered, Ordering::SeqCst, Ordering::Relaxed).is_err() {
                    continue;
                }
                crash_point!("rwlock.read.counted");
                if self.state.load(Ordering::SeqCst) & WRITING == 0 {
                    if w & WAITING != 0 {
                        self.stop_waiting(i);
                    }
                    return Ok(self.flag());
                }
                self.give_back(i, true);
                continue;
            }
            if self.held_by_me(s, me) {
                self.unqueue(i);
                return Err(Fail::Deadlock);
            }
            if deadline.is_some_and(Deadline::has_passed) {
                self.unqueue(i);
                return Err(Fail::Timeout);
            }
            if w & WAITING == 0 {
                // Queue up: the next writer lets waiting readers in first.
                // The slot's bit first, then the mask's (see `check`).
                if slot.word.compare_exchange(w, w | WAITING, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                    self.waiting.fetch_or(1 << i, Ordering::SeqCst);
                    crash_point!("rwlock.read.waiting");
                }
                continue;
            }
            if spin.spin() {
                continue;
            }
            if s & SLEEPERS == 0
                && self.state.compare_exchange(s, s | SLEEPERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            match sleeper.sleep(&self.state, s | SLEEPERS, deadline) {
                Woke::Signalled => crash_point!("rwlock.read.woken"),
                Woke::Recheck => self.recover_dead_holder(),
                Woke::Deadline => {}
            }
        }
    }

    /// A reader that queued has got in: it leaves the queue, and wakes a
    /// holder that waits for the queue to empty.
    fn stop_waiting(&self, i: usize) {
        // SeqCst: pairs with the holder's DRAINING and its look at `waiting`.
        self.waiting.fetch_and(!(1 << i), Ordering::SeqCst);
        if self.state.load(Ordering::SeqCst) & DRAINING != 0 {
            self.wake_drainer();
        }
    }

    /// A queued reader gives up (deadline, or it would wait for itself).
    fn unqueue(&self, i: usize) {
        let prev = self.slots[i].word.fetch_and(!WAITING, Ordering::SeqCst);
        if prev & WAITING != 0 {
            self.stop_waiting(i);
        }
    }

    /// A read held as the exclusive holder, for a thread that found no slot
    /// (or whose slot's count is full).
    #[cold]
    fn read_through_exclusive(&self, me: Me, deadline: Option<&Deadline>) -> Result<Locked, Fail> {
        let s = self.state.load(Ordering::Relaxed);
        if self.held_by_me(s, me) {
            if s & WRITING != 0 {
                return Err(Fail::Deadlock);
            }
            // Holder-only fields: only this thread writes them now.
            self.held_reads.fetch_add(1, Ordering::Relaxed);
            return Ok(self.flag());
        }
        self.take_exclusive(me, 0, deadline)?;
        self.upgradable.store(0, Ordering::Relaxed);
        self.held_reads.store(1, Ordering::Relaxed);
        Ok(self.flag())
    }

    /// Releases a read lock.
    ///
    /// # Safety
    /// The calling thread must hold a read lock on this lock (from `read`,
    /// a `try_read` that returned `Some`, or a downgrade).
    #[inline]
    pub unsafe fn unlock_read(&self) {
        let me = me();
        let i = hint(me.tid);
        let w = self.slots[i].word.load(Ordering::Relaxed);
        if count(w) != 0 && self.is_mine(i, w, me) && self.release_count(i, w) {
            return;
        }
        self.unlock_read_slow(me);
    }

    /// Gives back one count of slot `i` (word `w`, this thread's), waking a
    /// holder that drains the readers. `false` if the word changed.
    #[inline]
    fn release_count(&self, i: usize, w: u64) -> bool {
        // SeqCst: pairs with a draining holder's SeqCst DRAINING and rescan;
        // and it is a release: the reader's reads happen before a writer's
        // writes.
        if self.slots[i].word.compare_exchange(w, w - 1, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return false;
        }
        if count(w) == 1 {
            crash_point!("rwlock.read_unlock.released");
            if self.state.load(Ordering::SeqCst) & DRAINING != 0 {
                self.wake_drainer();
            }
        }
        true
    }

    #[cold]
    fn unlock_read_slow(&self, me: Me) {
        loop {
            let found = (0..READER_SLOTS).find_map(|i| {
                let w = self.slots[i].word.load(Ordering::Relaxed);
                (count(w) != 0 && self.is_mine(i, w, me)).then_some((i, w))
            });
            match found {
                Some((i, w)) => {
                    if self.release_count(i, w) {
                        HINT.set(i as u32);
                        return;
                    }
                }
                None => break,
            }
        }
        let s = self.state.load(Ordering::Relaxed);
        if self.held_by_me(s, me) && self.held_reads.load(Ordering::Relaxed) > 0 {
            if self.held_reads.fetch_sub(1, Ordering::Relaxed) == 1 && self.upgradable.load(Ordering::Relaxed) == 0 {
                self.release_exclusive();
            }
            return;
        }
        debug_assert!(false, "RawRwLock::unlock_read: the calling thread holds no read lock");
        log::error!("shmsync: RawRwLock::unlock_read called by a thread that holds no read lock; ignored");
    }

    /// Wakes the exclusive holder asleep on `drain` (a reader left, or a
    /// waiting reader got in). DRAINING is the holder's to clear.
    #[cold]
    fn wake_drainer(&self) {
        // SeqCst: the holder loads `drain` before its last look at the slots.
        self.drain.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&self.drain);
    }

    // ---- finding a slot --------------------------------------------------

    /// This thread's slot: `mine` if it still is, one it already has, a free
    /// one it claims, an idle one it takes over, or a dead reader's (whose
    /// share it reclaims). `None` if every slot is busy with a live reader.
    fn own_slot(&self, me: Me, mine: Option<usize>) -> Option<usize> {
        if let Some(i) = mine {
            if self.is_mine(i, self.slots[i].word.load(Ordering::Relaxed), me) {
                return Some(i);
            }
        }
        let start = home(me.tid);
        let order = || (0..READER_SLOTS).map(move |k| (start + k) % READER_SLOTS);
        if let Some(i) = order().find(|&i| self.is_mine(i, self.slots[i].word.load(Ordering::Relaxed), me)) {
            return Some(i);
        }
        for i in order() {
            let w = self.slots[i].word.load(Ordering::Relaxed);
            if owner(w) == 0 && self.claim(i, w, me, false) {
                return Some(i);
            }
        }
        for i in order() {
            let w = self.slots[i].word.load(Ordering::Relaxed);
            if count(w) == 0 && w & WAITING == 0 && self.claim(i, w, me, true) {
                return Some(i);
            }
        }
        for i in order() {
            let w = self.slots[i].word.load(Ordering::Relaxed);
            if !self.identity(i, w).is_alive() && self.reclaim(i, w) {
                let w = self.slots[i].word.load(Ordering::Relaxed);
                if owner(w) == 0 && self.claim(i, w, me, false) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Takes slot `i`, whose word is `w` (free, or idle if `take_over`),
    /// and stamps it with this thread's start time.
    fn claim(&self, i: usize, w: u64, me: Me, take_over: bool) -> bool {
        let slot = &self.slots[i];
        // The mask bit before the word, so an owned slot is always in the
        // mask writers scan.
        self.claimed.fetch_or(1 << i, Ordering::SeqCst);
        let base = if take_over { freed(w) } else { w & TAG };
        let mine = base | u64::from(me.tid) << OWNER_SHIFT;
        if slot.word.compare_exchange(w, mine, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return false;
        }
        // The stamp is replaced only while the word still shows this claim,
        // so a slow claimer that lost the slot cannot overwrite the stamp of
        // the thread that took it over.
        let want = stamp(mine, me.start);
        let mut seen = slot.stamp.load(Ordering::Acquire);
        loop {
            if slot.word.load(Ordering::Acquire) & !(COUNT | WAITING) != mine & !(COUNT | WAITING) {
                return false;
            }
            match slot.stamp.compare_exchange(seen, want, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => seen = now,
            }
        }
    }

    /// Who owns slot `i` (word `w`), as far as its stamp tells.
    fn identity(&self, i: usize, w: u64) -> Identity {
        let st = self.slots[i].stamp.load(Ordering::Acquire);
        let start = if st >> STAMP_SHIFT == (w & TAG) >> TAG_SHIFT { st & START } else { 0 };
        Identity { id: owner(w), start }
    }

    /// Frees slot `i` of a dead owner (word `w`): its reads and its place in
    /// the queue go with it.
    fn reclaim(&self, i: usize, w: u64) -> bool {
        if self.slots[i].word.compare_exchange(w, freed(w), Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return false;
        }
        if count(w) != 0 {
            log::warn!(
                "shmsync: a reader (thread {}) died holding {} read lock(s) of an RwLock; reclaimed",
                owner(w),
                count(w)
            );
        }
        if w & WAITING != 0 {
            self.waiting.fetch_and(!(1 << i), Ordering::SeqCst);
        }
        true
    }

    // ---- the exclusive side ------------------------------------------

    /// Whether `state` word `s` names the calling thread as the exclusive
    /// holder. A holder with this tid and an unknown start is this thread:
    /// the only other candidate, a dead thread whose tid was recycled to
    /// this one in the instant between its claim and its stamp, is not
    /// worth a false recovery.
    fn held_by_me(&self, s: u32, me: Me) -> bool {
        s & HOLDER == me.tid && {
            let start = self.owner_start.load(Ordering::Relaxed);
            start == me.start || start == 0
        }
    }

    /// Takes the exclusive side, with `bits` (WRITING or nothing) set in the
    /// same step; waits while another thread holds it.
    fn take_exclusive(&self, me: Me, bits: u32, deadline: Option<&Deadline>) -> Result<(), Fail> {
        let mut spin = SpinWait::new(Spin::RwLock, deadline);
        let mut sleeper = Sleeper::new();
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & HOLDER == 0 {
                // WRITING with no holder is never written by this crate (a
                // scribbled word): taken as a writer's death.
                let stray = s & WRITING != 0;
                let next = (s & !WRITING) | me.tid | bits;
                // SeqCst: a writer's half of the handshake with readers.
                if self.state.compare_exchange(s, next, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                    self.owner_start.store(me.start, Ordering::Relaxed);
                    if stray {
                        log::warn!("shmsync: an RwLock's state marked a writer without a holder; poisoned");
                        self.poison();
                    }
                    return Ok(());
                }
                continue;
            }
            if self.held_by_me(s, me) {
                return Err(Fail::Deadlock);
            }
            if deadline.is_some_and(Deadline::has_passed) {
                return Err(Fail::Timeout);
            }
            if spin.spin() {
                continue;
            }
            if s & SLEEPERS == 0
                && self.state.compare_exchange(s, s | SLEEPERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            match sleeper.sleep(&self.state, s | SLEEPERS, deadline) {
                Woke::Signalled => crash_point!("rwlock.exclusive.woken"),
                Woke::Recheck => self.recover_dead_holder(),
                Woke::Deadline => {}
            }
        }
    }

    /// Gives up the exclusive side: clears HOLDER, WRITING and DRAINING in
    /// one step that keeps SLEEPERS, then wakes the sleepers.
    fn release_exclusive(&self) {
        self.owner_start.store(0, Ordering::Relaxed);
        let mut s = self.state.load(Ordering::Relaxed);
        let published = loop {
            let next = (s & (SLEEPERS | PHASE)).wrapping_add(PHASE_ONE);
            // Release: the holder's writes happen before the next holder's
            // or reader's acquire of this word.
            match self.state.compare_exchange_weak(s, next, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(now) => s = now,
            }
        };
        if published & SLEEPERS != 0 {
            crash_point!("rwlock.unlock.published");
            self.wake_sleepers(published);
            crash_point!("rwlock.unlock.woken");
        }
    }

    /// Clears WRITING (and DRAINING), keeping the exclusive side, and wakes
    /// the readers waiting for it.
    fn clear_writing(&self) {
        let mut s = self.state.load(Ordering::Relaxed);
        let published = loop {
            let next = (s & !(WRITING | DRAINING)).wrapping_add(PHASE_ONE);
            match self.state.compare_exchange_weak(s, next, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(now) => s = now,
            }
        };
        if published & SLEEPERS != 0 {
            self.wake_sleepers(published);
        }
    }

    /// Wakes everyone asleep on `state`, then clears SLEEPERS only if the
    /// word is still `published` (a later sleeper has set it again).
    #[cold]
    fn wake_sleepers(&self, published: u32) {
        futex::wake_all(&self.state);
        let _ = self.state.compare_exchange(published, published & !SLEEPERS, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// After a slice of sleep on `state`: if the exclusive holder is dead,
    /// poison the lock if it was writing, free the exclusive side, and wake
    /// the other sleepers.
    #[cold]
    fn recover_dead_holder(&self) {
        let s = self.state.load(Ordering::Acquire);
        let tid = s & HOLDER;
        if tid == 0 {
            return; // free (a stray WRITING is repaired by the next taker)
        }
        let start = self.owner_start.load(Ordering::Relaxed);
        if (Identity { id: tid, start }).is_alive() {
            return;
        }
        if s & WRITING != 0 {
            // Before the exclusive side is freed: no one may take it clean.
            self.poisoned.store(POISONED, Ordering::Release);
        }
        // A late recoverer's 0 reads as "unknown" to a new holder: harmless.
        self.owner_start.store(0, Ordering::Relaxed);
        let mut cur = self.state.load(Ordering::Relaxed);
        let published = loop {
            // The same holder in the same phase, or someone recovered first.
            if cur & !SLEEPERS != s & !SLEEPERS {
                return;
            }
            let next = (cur & (SLEEPERS | PHASE)).wrapping_add(PHASE_ONE);
            match self.state.compare_exchange(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(now) => cur = now,
            }
        };
        log::warn!(
            "shmsync: an RwLock's {} (thread {tid}) died holding it; recovered{}",
            if s & WRITING != 0 { "writer" } else { "upgradable reader" },
            if s & WRITING != 0 { ", poisoned" } else { "" }
        );
        crash_point!("rwlock.recover.released");
        if published & SLEEPERS != 0 {
            self.wake_sleepers(published);
        }
    }

    // ---- writing -------------------------------------------------------

    /// Blocks until the calling thread holds the write lock (exclusive).
    /// [`Locked::Poisoned`] if a previous writer died or panicked holding it.
    ///
    /// # Panics
    /// If the calling thread holds a read, upgradable or write lock on it.
    #[inline]
    pub fn write(&self) -> Locked {
        let me = me();
        match self.write_fast(me) {
            Some(true) => self.flag(),
            Some(false) => blocking("RawRwLock::write", self.finish_write(me, None, true)),
            None => blocking("RawRwLock::write", self.write_slow(me, None)),
        }
    }

    /// Takes the write lock if no one holds the lock; `None` otherwise.
    #[inline]
    pub fn try_write(&self) -> Option<Locked> {
        let me = me();
        match self.write_fast(me) {
            Some(true) => Some(self.flag()),
            Some(false) => self.finish_write(me, Some(&Deadline::after(Duration::ZERO)), false).ok(),
            None => None,
        }
    }

    /// Takes the write lock, waiting at most `timeout`; `None` on timeout.
    pub fn try_write_for(&self, timeout: Duration) -> Option<Locked> {
        let me = me();
        let deadline = Deadline::after(timeout);
        match self.write_fast(me) {
            Some(true) => Some(self.flag()),
            Some(false) => self.finish_write(me, Some(&deadline), true).ok(),
            None => self.write_slow(me, Some(&deadline)).ok(),
        }
    }

    /// One compare-exchange for the exclusive side with WRITING, then a
    /// look at the readers. `None`: the exclusive side is taken; `Some(true)`:
    /// the write lock is ours; `Some(false)`: ours once readers drain.
    #[inline]
    fn write_fast(&self, me: Me) -> Option<bool> {
        let s = self.state.load(Ordering::Relaxed);
        if s & (HOLDER | WRITING) != 0 {
            return None;
        }
        // SeqCst: the writer's half of the handshake with readers.
        if self.state.compare_exchange(s, s | me.tid | WRITING, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return None;
        }
        self.owner_start.store(me.start, Ordering::Relaxed);
        crash_point!("rwlock.write.announced");
        if self.waiting.load(Ordering::SeqCst) == 0 && self.no_readers() {
            crash_point!("rwlock.write.drained");
            return Some(true);
        }
        Some(false)
    }

    #[cold]
    fn write_slow(&self, me: Me, deadline: Option<&Deadline>) -> Result<Locked, Fail> {
        self.take_exclusive(me, WRITING, deadline)?;
        crash_point!("rwlock.write.announced");
        self.finish_write(me, deadline, true)
    }

    /// Holding the exclusive side with WRITING: lets waiting readers in
    /// first (if `fair`), then waits for the readers to drain. On failure
    /// the exclusive side is released.
    #[cold]
    fn finish_write(&self, me: Me, deadline: Option<&Deadline>, fair: bool) -> Result<Locked, Fail> {
        match self.drain_all(me, deadline, fair) {
            Ok(()) => {
                crash_point!("rwlock.write.drained");
                Ok(self.flag())
            }
            Err(e) => {
                self.release_exclusive();
                Err(e)
            }
        }
    }

    /// Whether no slot holds a read (SeqCst: the writer's scan).
    #[inline]
    fn no_readers(&self) -> bool {
        bits(self.claimed.load(Ordering::SeqCst)).all(|i| count(self.slots[i].word.load(Ordering::SeqCst)) == 0)
    }

    /// A slot that holds reads, and its word.
    fn a_reader(&self) -> Option<(usize, u64)> {
        bits(self.claimed.load(Ordering::SeqCst))
            .map(|i| (i, self.slots[i].word.load(Ordering::SeqCst)))
            .find(|&(_, w)| count(w) != 0)
    }

    /// Holding the exclusive side with WRITING: the fairness step, then the
    /// drain.
    fn drain_all(&self, me: Me, deadline: Option<&Deadline>, fair: bool) -> Result<(), Fail> {
        if fair && self.waiting.load(Ordering::SeqCst) != 0 {
            self.let_waiting_readers_in(deadline)?;
        }
        self.wait_for(deadline, |lock, look| match lock.a_reader() {
            None => Ok(false),
            Some((i, w)) if lock.is_mine(i, w, me) => Err(Fail::Deadlock),
            Some(_) => {
                if look == Look::AfterSlice {
                    lock.reclaim_dead_readers();
                }
                Ok(true)
            }
        })
    }

    /// Clears WRITING so the readers that queued behind an earlier writer
    /// get in, waits until none is queued, and sets WRITING again.
    #[cold]
    fn let_waiting_readers_in(&self, deadline: Option<&Deadline>) -> Result<(), Fail> {
        self.clear_writing();
        crash_point!("rwlock.write.yielded");
        // A queued reader that died costs a liveness check, made before each
        // sleep rather than after a slice.
        self.wait_for(deadline, |lock, look| Ok(lock.queued_readers(look != Look::Again)))?;
        self.state.fetch_or(WRITING, Ordering::SeqCst);
        Ok(())
    }

    /// Whether a live reader is queued; clears stale queue bits, and (if
    /// `check_alive`) reclaims the slots of dead queued readers.
    fn queued_readers(&self, check_alive: bool) -> bool {
        for i in bits(self.waiting.load(Ordering::SeqCst)) {
            let w = self.slots[i].word.load(Ordering::SeqCst);
            if w & WAITING == 0 || owner(w) == 0 {
                self.waiting.fetch_and(!(1 << i), Ordering::SeqCst);
            } else if !(check_alive && !self.identity(i, w).is_alive() && self.reclaim(i, w)) {
                return true;
            }
        }
        false
    }

    /// After a slice: reclaims the slots of readers that died holding reads.
    #[cold]
    fn reclaim_dead_readers(&self) {
        for i in bits(self.claimed.load(Ordering::SeqCst)) {
            let w = self.slots[i].word.load(Ordering::SeqCst);
            if count(w) != 0 && !self.identity(i, w).is_alive() {
                self.reclaim(i, w);
            }
        }
    }

    /// The exclusive holder's wait on `drain`: spins, then sleeps with
    /// DRAINING set, until `blocked` says there is nothing left to wait
    /// for; `blocked` is told where the wait is, to choose when to check
    /// for the dead.
    fn wait_for(
        &self,
        deadline: Option<&Deadline>,
        mut blocked: impl FnMut(&Self, Look) -> Result<bool, Fail>,
    ) -> Result<(), Fail> {
        let mut spin = SpinWait::new(Spin::RwLock, deadline);
        let mut sleeper = Sleeper::new();
        let mut announced = false;
        let mut look = Look::Again;
        let result = loop {
            match blocked(self, look) {
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
                Ok(true) => {}
            }
            if deadline.is_some_and(Deadline::has_passed) {
                break Err(Fail::Timeout);
            }
            look = Look::Again;
            if spin.spin() {
                continue;
            }
            if !announced {
                // SeqCst: set before the last look below, which the readers'
                // SeqCst changes and loads of `state` pair with.
                self.state.fetch_or(DRAINING, Ordering::SeqCst);
                announced = true;
            }
            let seq = self.drain.load(Ordering::SeqCst);
            match blocked(self, Look::BeforeSleep) {
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
                Ok(true) => {}
            }
            if sleeper.sleep(&self.drain, seq, deadline) == Woke::Recheck {
                look = Look::AfterSlice;
            }
        };
        if announced {
            self.state.fetch_and(!DRAINING, Ordering::Relaxed);
        }
        result
    }

    /// Releases the write lock.
    ///
    /// # Safety
    /// The calling thread must hold the write lock (from `write`, a `try_`
    /// form that returned `Some`, or `upgrade`).
    #[inline]
    pub unsafe fn unlock_write(&self) {
        self.release_exclusive();
    }

    // ---- upgradable reads ------------------------------------------------

    /// Blocks until the calling thread holds an upgradable read: shared with
    /// readers, exclusive of writers and of other upgradable readers, and
    /// convertible to the write lock with [`upgrade`](Self::upgrade).
    ///
    /// # Panics
    /// If the calling thread holds the write lock or an upgradable read.
    pub fn upgradable_read(&self) -> Locked {
        blocking("RawRwLock::upgradable_read", self.upgradable_until(None))
    }

    /// Takes an upgradable read if the exclusive side is free.
    pub fn try_upgradable_read(&self) -> Option<Locked> {
        self.upgradable_until(Some(&Deadline::after(Duration::ZERO))).ok()
    }

    /// Takes an upgradable read, waiting at most `timeout`.
    pub fn try_upgradable_read_for(&self, timeout: Duration) -> Option<Locked> {
        self.upgradable_until(Some(&Deadline::after(timeout))).ok()
    }

    fn upgradable_until(&self, deadline: Option<&Deadline>) -> Result<Locked, Fail> {
        let me = me();
        let s = self.state.load(Ordering::Relaxed);
        if self.held_by_me(s, me) {
            // This thread reads through the exclusive side already.
            if s & WRITING == 0 && self.upgradable.load(Ordering::Relaxed) == 0 {
                self.upgradable.store(1, Ordering::Relaxed);
                return Ok(self.flag());
            }
            return Err(Fail::Deadlock);
        }
        self.take_exclusive(me, 0, deadline)?;
        self.held_reads.store(0, Ordering::Relaxed);
        self.upgradable.store(1, Ordering::Relaxed);
        crash_point!("rwlock.upgradable.acquired");
        Ok(self.flag())
    }

    /// Turns the calling thread's upgradable read into the write lock,
    /// waiting for the other readers to leave.
    ///
    /// # Safety
    /// The calling thread must hold an upgradable read on this lock.
    ///
    /// # Panics
    /// If the calling thread also holds a read lock (it would wait for
    /// itself); the upgradable read is kept.
    pub unsafe fn upgrade(&self) -> Locked {
        blocking("RawRwLock::upgrade", self.upgrade_until(None, true))
    }

    /// As [`upgrade`](Self::upgrade), if no other reader holds the lock;
    /// `false` (still upgradable) otherwise.
    ///
    /// # Safety
    /// As for `upgrade`.
    pub unsafe fn try_upgrade(&self) -> bool {
        self.upgrade_until(Some(&Deadline::after(Duration::ZERO)), false).is_ok()
    }

    /// As [`upgrade`](Self::upgrade), waiting at most `timeout`; `false`
    /// (still upgradable) on timeout.
    ///
    /// # Safety
    /// As for `upgrade`.
    pub unsafe fn try_upgrade_for(&self, timeout: Duration) -> bool {
        self.upgrade_until(Some(&Deadline::after(timeout)), true).is_ok()
    }

    fn upgrade_until(&self, deadline: Option<&Deadline>, fair: bool) -> Result<Locked, Fail> {
        let me = me();
        if self.held_reads.load(Ordering::Relaxed) != 0 {
            return Err(Fail::Deadlock);
        }
        // SeqCst: the writer's half of the handshake with readers.
        self.state.fetch_or(WRITING, Ordering::SeqCst);
        crash_point!("rwlock.upgrade.announced");
        match self.drain_all(me, deadline, fair) {
            Ok(()) => {
                self.upgradable.store(0, Ordering::Relaxed);
                crash_point!("rwlock.upgrade.drained");
                Ok(self.flag())
            }
            Err(e) => {
                self.clear_writing();
                Err(e)
            }
        }
    }

    /// Releases an upgradable read.
    ///
    /// # Safety
    /// The calling thread must hold an upgradable read on this lock.
    pub unsafe fn unlock_upgradable(&self) {
        self.upgradable.store(0, Ordering::Relaxed);
        if self.held_reads.load(Ordering::Relaxed) == 0 {
            self.release_exclusive();
        }
    }

    // ---- downgrades ------------------------------------------------------

    /// Takes a read count for the calling thread, which holds the exclusive
    /// side: in its slot, or through the exclusive side if no slot is free
    /// (or its slot's count is full). Returns whether it used a slot.
    fn count_own_read(&self, me: Me) -> bool {
        if let Some(i) = self.own_slot(me, Some(hint(me.tid))) {
            HINT.set(i as u32);
            let slot = &self.slots[i];
            let mut w = slot.word.load(Ordering::Relaxed);
            while self.is_mine(i, w, me) && count(w) < COUNT {
                // SeqCst, as any reader's count; the release of the exclusive
                // side that follows publishes it before a writer can scan.
                match slot.word.compare_exchange(w, w + 1, Ordering::SeqCst, Ordering::Relaxed) {
                    Ok(_) => return true,
                    Err(now) => w = now,
                }
            }
        }
        self.held_reads.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Turns the calling thread's write lock into a read lock, letting other
    /// readers in and keeping writers out throughout.
    ///
    /// # Safety
    /// The calling thread must hold the write lock.
    pub unsafe fn downgrade(&self) {
        let me = me();
        // A writer holds no reads through the exclusive side; a dead former
        // holder may have left counts here.
        self.held_reads.store(0, Ordering::Relaxed);
        self.upgradable.store(0, Ordering::Relaxed);
        let in_slot = self.count_own_read(me);
        crash_point!("rwlock.downgrade.counted");
        if in_slot {
            self.release_exclusive();
        } else {
            self.clear_writing();
        }
    }

    /// Turns the calling thread's write lock into an upgradable read.
    ///
    /// # Safety
    /// The calling thread must hold the write lock.
    pub unsafe fn downgrade_to_upgradable(&self) {
        self.held_reads.store(0, Ordering::Relaxed);
        self.upgradable.store(1, Ordering::Relaxed);
        self.clear_writing();
    }

    /// Turns the calling thread's upgradable read into a plain read lock.
    ///
    /// # Safety
    /// The calling thread must hold an upgradable read.
    pub unsafe fn downgrade_upgradable(&self) {
        let me = me();
        self.count_own_read(me);
        // SAFETY: forwarded from the caller.
        unsafe { self.unlock_upgradable() };
    }

    // ---- state -----------------------------------------------------------

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
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32};

    #[test]
    fn layout_is_as_documented() {
        assert_eq!(std::mem::size_of::<RawRwLock>(), 4160);
        assert_eq!(std::mem::align_of::<RawRwLock>(), 64);
        assert_eq!(std::mem::offset_of!(RawRwLock, slots), 64);
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert!(RawRwLock::default().check().is_ok());
    }

    #[test]
    fn reads_nest_and_shut_writers_out() {
        let lock = RawRwLock::default();
        assert_eq!(lock.read(), Locked::Clean);
        assert_eq!(lock.read(), Locked::Clean);
        assert_eq!(lock.readers(), 2);
        assert!(lock.try_write().is_none());
        assert!(lock.try_write_for(Duration::from_millis(5)).is_none());
        // SAFETY: this thread holds two reads.
        unsafe { lock.unlock_read() };
        assert!(lock.try_write().is_none());
        // SAFETY: this thread holds one read.
        unsafe { lock.unlock_read() };
        assert_eq!(lock.readers(), 0);
        assert_eq!(lock.try_write(), Some(Locked::Clean));
        assert!(lock.is_write_locked());
        assert!(lock.try_read().is_none());
        assert!(lock.try_upgradable_read().is_none());
        // SAFETY: this thread holds the write lock.
        unsafe { lock.unlock_write() };
        assert!(!lock.is_write_locked());
        assert_eq!(lock.exclusive_holder(), None);
    }

    #[test]
    fn a_writer_waits_for_a_reader_thread() {
        let lock = RawRwLock::default();
        let inside = AtomicBool::new(false);
        std::thread::scope(|s| {
            let _ = lock.read();
            s.spawn(|| {
                let _ = lock.write();
                inside.store(true, Ordering::Relaxed);
                // SAFETY: this thread holds the write lock.
                unsafe { lock.unlock_write() };
            });
            std::thread::sleep(Duration::from_millis(20));
            assert!(!inside.load(Ordering::Relaxed));
            // A nested read by a reader does not wait for the waiting writer.
            assert_eq!(lock.try_read(), Some(Locked::Clean));
            // SAFETY: this thread holds two reads.
            unsafe {
                lock.unlock_read();
                lock.unlock_read();
            }
        });
        assert!(inside.load(Ordering::Relaxed));
    }

    #[test]
    fn upgrade_and_downgrades() {
        let lock = RawRwLock::default();
        assert_eq!(lock.upgradable_read(), Locked::Clean);
        assert!(lock.try_upgradable_read().is_none());
        std::thread::scope(|s| {
            s.spawn(|| {
                // Readers share the lock with an upgradable reader...
                assert!(lock.try_read().is_some());
                // SAFETY: this thread holds the read.
                unsafe { lock.unlock_read() };
                // ... writers do not.
                assert!(lock.try_write().is_none());
            });
        });
        // SAFETY: this thread holds the upgradable read.
        unsafe {
            assert_eq!(lock.upgrade(), Locked::Clean);
            assert!(lock.is_write_locked());
            lock.downgrade();
        }
        assert!(!lock.is_write_locked());
        assert_eq!(lock.readers(), 1);
        assert!(lock.try_write().is_none());
        // SAFETY: this thread holds the read from the downgrade.
        unsafe { lock.unlock_read() };
        let _ = lock.write();
        // SAFETY: this thread holds the write lock, then an upgradable read,
        // then a read.
        unsafe {
            lock.downgrade_to_upgradable();
            assert!(lock.try_read().is_some());
            lock.unlock_read();
            lock.downgrade_upgradable();
            lock.unlock_read();
        }
        assert_eq!(lock.exclusive_holder(), None);
        assert_eq!(lock.readers(), 0);
    }

    #[test]
    fn calls_that_would_wait_for_their_own_thread_refuse() {
        let lock = RawRwLock::default();
        let _ = lock.write();
        assert!(lock.try_read().is_none());
        assert!(lock.try_read_for(Duration::from_secs(30)).is_none());
        assert!(lock.try_write_for(Duration::from_secs(30)).is_none());
        // SAFETY: this thread holds the write lock.
        unsafe { lock.unlock_write() };
        let _ = lock.read();
        assert!(lock.try_write_for(Duration::from_secs(30)).is_none());
        let _ = lock.upgradable_read();
        // SAFETY: this thread holds an upgradable read and a read.
        unsafe {
            assert!(!lock.try_upgrade_for(Duration::from_secs(30)));
            lock.unlock_read();
            assert!(lock.try_upgrade());
            lock.unlock_write();
        }
        assert!(std::panic::catch_unwind(|| lock.write()).is_ok());
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lock.read())).is_err());
        // SAFETY: this thread holds the write lock.
        unsafe { lock.unlock_write() };
    }

    #[test]
    fn a_slot_for_every_reader_and_the_rest_take_turns() {
        let lock = RawRwLock::default();
        // Every slot held at once, by as many threads...
        let holding = std::sync::Barrier::new(READER_SLOTS + 1);
        let release = std::sync::Barrier::new(READER_SLOTS + 1);
        let extra = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..READER_SLOTS {
                s.spawn(|| {
                    assert!(lock.try_read_for(Duration::from_secs(30)).is_some());
                    holding.wait();
                    release.wait();
                    // SAFETY: this thread holds the read taken above.
                    unsafe { lock.unlock_read() };
                });
            }
            holding.wait();
            assert_eq!(lock.readers(), READER_SLOTS as u32);
            // ... and readers beyond them still get in, one at a time,
            // through the exclusive side, while writers stay out.
            for _ in 0..4 {
                s.spawn(|| {
                    assert!(lock.try_read_for(Duration::from_secs(30)).is_some());
                    assert!(lock.try_read().is_some()); // nested
                    extra.fetch_add(1, Ordering::Relaxed);
                    // SAFETY: this thread holds the two reads taken above.
                    unsafe {
                        lock.unlock_read();
                        lock.unlock_read();
                    }
                });
            }
            while extra.load(Ordering::Relaxed) < 4 {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(lock.try_write().is_none());
            release.wait();
        });
        assert_eq!(lock.readers(), 0);
        assert_eq!(lock.exclusive_holder(), None);
        assert!(lock.try_write().is_some());
    }

    #[test]
    fn a_reader_thread_that_exits_holding_is_reclaimed() {
        let lock = RawRwLock::default();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = lock.read();
            });
        });
        assert_eq!(lock.readers(), 1);
        assert_eq!(lock.try_write_for(Duration::from_secs(30)), Some(Locked::Clean));
        // SAFETY: this thread holds the write lock.
        unsafe { lock.unlock_write() };
        assert_eq!(lock.readers(), 0);
    }

    #[test]
    fn a_writer_thread_that_exits_holding_poisons() {
        let lock = RawRwLock::default();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = lock.write();
            });
        });
        assert_eq!(lock.try_read_for(Duration::from_secs(30)), Some(Locked::Poisoned));
        // SAFETY: this thread holds the read.
        unsafe { lock.unlock_read() };
        lock.clear_poison();
        assert_eq!(lock.try_write(), Some(Locked::Clean));
        // SAFETY: this thread holds the write lock.
        unsafe { lock.unlock_write() };
    }
}
