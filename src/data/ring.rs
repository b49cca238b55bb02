//! The shared ring behind `Queue` and `JoinableQueue`: a byte ring of
//! length-prefixed records with one robust lock per side.
//!
//! | field       | meaning |
//! |-------------|---------|
//! | `capacity`  | the ring's size in bytes `C`, a multiple of 8; read-only after init (and each handle keeps its own checked copy) |
//! | `put.lock`  | serialises producers; a dead holder's lock is recovered silently |
//! | `put.word`  | `puts << 32 \| tail`: messages ever committed (wrapping) and the write position, in `0..2C` |
//! | `get.lock`  | serialises consumers, likewise |
//! | `get.word`  | `gets << 32 \| head`: messages ever taken and the read position, in `0..2C` |
//! | `get.reading` | the `get.word` a consumer read a record under while a `get_with` closure ran, or `NOT_READING` |
//! | `not_empty`, `not_full`, `all_done` | futex words for getters, putters and joiners: bit 0 SLEEPERS, the rest a sequence |
//! | `done`      | `task_done` calls (wrapping); unfinished = puts − done |
//!
//! Producers and consumers share no lock: a producer reads the consumers'
//! word to see the free room and writes its own; a consumer does the
//! opposite. Positions run modulo `2C`, so `tail − head` (mod `2C`) is the
//! bytes in use, 0 to `C`, and full is never mistaken for empty. Each side's
//! fields sit on their own cache lines.
//!
//! A record is an 8-byte header (the payload length, and a kind: a MESSAGE
//! or a PAD) and the payload, padded to 8 bytes: a message costs its length
//! plus at most 15 bytes. A record that would run past the ring's end is
//! placed at its start when there is room, behind a PAD record that fills
//! the end, so nearly every payload lies in one piece (which `put_with` and
//! `get_with` hand out in place). Only a message too large for that is split
//! across the end, and it is copied in and out in two pieces.
//!
//! Crash safety: a side's bytes are written first, then its word is
//! committed with one store (Release), after which the change is whole.
//! - A producer killed before its commit leaves the queue as it was (its
//!   bytes lie in free space); after it, the message is wholly in.
//! - A consumer killed before its commit leaves the message in the queue for
//!   the next consumer (it never reached its caller); after it, the message
//!   is gone with it.
//! - A consumer killed inside a `get_with` closure has seen the message: the
//!   next consumer, recovering the lock, finds `reading` equal to the word it
//!   would read under and drops that one message instead of delivering it
//!   twice.
//! - Waking: a waiter sets SLEEPERS, looks again, then sleeps in re-check
//!   slices; a committer looks at SLEEPERS after its commit (both SeqCst, so
//!   one of the two sees the other) and wakes. A putter wakes one getter and
//!   a getter that slept passes the wake on while messages remain; a getter
//!   wakes every putter. A wake that finds nobody asleep clears the bit, so
//!   waiters killed in their sleep cost one syscall, once.
//! - A side's lock whose holder died is recovered silently: its word is
//!   whole.
//!
//! Every position, length and kind read from the segment is checked against
//! the ring's size before use; anything else is `Corrupt`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::raw::{register_sleeper, RawLock, Sleeper, Spin, SpinWait, Woke};
use crate::sys::futex;
use crate::sys::time::Deadline;

/// This module's crash points (see [`crate::crash`]).
pub(crate) const CRASH_POINTS: &[&str] = &[
    "queue.put.copied",
    "queue.put.committed",
    "queue.get.copied",
    "queue.get.committed",
    "queue.get_with.reading",
    "queue.getter.woken",
    "queue.task_done.counted",
];

/// Record header size and alignment.
const HEADER: usize = 8;
/// The largest ring (positions run to `2C`, in 32 bits).
pub const MAX_CAPACITY: usize = 1 << 31;
/// The smallest ring.
pub const MIN_CAPACITY: usize = 32;

const MESSAGE: u32 = 1;
const PAD: u32 = 2;

/// `get.reading` when no `get_with` closure runs.
const NOT_READING: u64 = u64::MAX;

const SLEEPERS: u32 = 1;
const SEQ_STEP: u32 = 2;

/// Bytes a message of `len` bytes takes in the ring.
fn record_size(len: usize) -> usize {
    HEADER + len.next_multiple_of(HEADER)
}

fn unpack(word: u64) -> (u32, usize) {
    ((word >> 32) as u32, (word & 0xffff_ffff) as usize)
}

fn pack(count: u32, pos: usize) -> u64 {
    (u64::from(count) << 32) | pos as u64
}

/// The largest message a ring of `capacity` bytes takes.
pub fn max_message(capacity: usize) -> usize {
    capacity.saturating_sub(2 * HEADER)
}

/// A waiting side's futex word.
#[repr(C, align(64))]
struct Waiters {
    seq: AtomicU32,
}

impl Waiters {
    /// Wakes one (or all) sleepers if any may sleep; after a wake that found
    /// nobody, clears SLEEPERS if nothing changed since.
    fn notify(&self, all: bool) {
        // SeqCst: pairs with the waiter's SeqCst SLEEPERS store and look.
        let seen = self.seq.load(Ordering::SeqCst);
        if seen & SLEEPERS == 0 {
            return;
        }
        self.wake(all);
    }

    #[cold]
    fn wake(&self, all: bool) {
        let bumped = self.seq.fetch_add(SEQ_STEP, Ordering::SeqCst).wrapping_add(SEQ_STEP);
        let woke = futex::wake(&self.seq, if all { u32::MAX } else { 1 });
        // After waking all, or finding nobody, no one sleeps on `bumped`:
        // a sleeper registered since would have changed the word.
        if all || woke == 0 {
            let _ = self.seq.compare_exchange(bumped, bumped & !SLEEPERS, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Marks a sleeper and returns the word to sleep on (the word always
    /// changes: see `raw::register_sleeper`).
    fn register(&self) -> u32 {
        register_sleeper(&self.seq, SLEEPERS, SEQ_STEP)
    }
}

/// A field alone on its cache line: a side's lock is touched only by that
/// side, its commit word by both, and the two must not share a line (the
/// other side's reads of the word would take the lock's line away from its
/// holder on every message).
#[repr(C, align(64))]
struct Line<T>(T);

/// One side's commit word.
#[repr(C)]
struct Words {
    word: AtomicU64,
    /// Consumers only: see `get.reading` in the module docs.
    reading: AtomicU64,
}

/// The ring's shared state. Its bytes follow it in the segment.
#[repr(C)]
pub struct Ring {
    capacity: Line<u64>,
    put_lock: Line<RawLock>,
    put: Line<Words>,
    get_lock: Line<RawLock>,
    get: Line<Words>,
    not_empty: Waiters,
    not_full: Waiters,
    all_done: Waiters,
    done: Line<AtomicU32>,
}

/// What one handle last saw of each side's word, so that a producer reads
/// the consumers' word (and a consumer the producers') only when its last
/// look says the ring is full (or empty). Read and written only under the
/// side's lock, which orders them between the handle's threads.
///
/// Why a stale value is safe (positions are taken modulo 2C, so a value that
/// is too old could alias):
/// - A consumer uses its last look at the producers' word only while it
///   shows a message beyond its own head: that message was committed before
///   the look, so the look's write position is at most C bytes ahead of the
///   head, and the stale view only understates the messages there.
/// - A producer uses its last look at the consumers' word only while no other
///   producer has committed since (the producers' word is still the one its
///   own last commit left): each of its commits stayed within the room that
///   look showed, so its write position is at most C bytes past the stale
///   read position, and the stale view only understates the room.
#[derive(Debug, Default)]
pub struct Cache {
    /// The producers' word, as this handle's consumers last saw it.
    put: AtomicU64,
    /// The consumers' word, as this handle's producers last saw it.
    get: AtomicU64,
    /// The producers' word when `get` was last trusted: after this handle's
    /// last commit, or when it read `get` afresh.
    put_then: AtomicU64,
}

/// A cache for views with no handle (the watcher's checks): never trusted.
static NO_CACHE: Cache = Cache { put: AtomicU64::new(0), get: AtomicU64::new(0), put_then: AtomicU64::new(u64::MAX) };

// SAFETY: every field is atomic, a process-shared lock, or read-only after
// init; the bytes are touched only under the side locks, as the module docs
// describe.
unsafe impl Sync for Ring {}

/// Why a put did not happen.
pub enum PutError {
    /// The message can never fit.
    TooLarge { max: usize },
    /// No room before the deadline.
    Full,
    /// The producers' lock was not to be had before the deadline (another
    /// producer holds it, perhaps stopped inside its critical section).
    Busy,
    /// The ring's shared words make no sense.
    Corrupt(String),
}

/// Why a get found nothing.
pub enum GetError {
    /// No message before the deadline.
    Empty,
    /// The consumers' lock was not to be had before the deadline.
    Busy,
    /// The ring's shared words make no sense.
    Corrupt(String),
}

/// Where a record goes.
#[derive(Clone, Copy)]
enum Place {
    /// At `at`, in one piece.
    Whole { at: usize },
    /// A PAD from `pad_at` to the end, the record at the start.
    AfterPad { pad_at: usize },
    /// At `at`, the payload wrapping around the end.
    Split { at: usize },
}

/// A ring as one handle sees it: the shared state, its bytes with a length
/// this handle checked once, at open, and what the handle last saw of each
/// side's word.
#[derive(Clone, Copy)]
pub struct View<'a> {
    ring: &'a Ring,
    data: *mut u8,
    cap: usize,
    cache: &'a Cache,
}

// SAFETY: a View is a shared reference to the ring (Sync) and the address of
// its bytes in a shared mapping, which it only touches under the ring's side
// locks as the module docs describe; any thread may do that.
unsafe impl Send for View<'_> {}
// SAFETY: as above.
unsafe impl Sync for View<'_> {}

impl Ring {
    /// Initialises an empty ring over `capacity` bytes (a multiple of 8).
    ///
    /// # Safety
    /// `this` is valid for writes, aligned and not yet shared.
    pub unsafe fn init(this: *mut Self, capacity: usize) {
        // SAFETY: forwarded from the caller; all-zero bytes are valid for
        // every field but the locks, the capacity and `reading`, written next.
        unsafe {
            this.cast::<u8>().write_bytes(0, std::mem::size_of::<Self>());
            (&raw mut (*this).capacity.0).write(capacity as u64);
            RawLock::init(&raw mut (*this).put_lock.0);
            RawLock::init(&raw mut (*this).get_lock.0);
            (*this).get.0.reading.store(NOT_READING, Ordering::Relaxed);
        }
    }

    /// On open: the recorded capacity must be a ring size that fits in the
    /// `trailing` bytes there, and the locks must be locks.
    pub fn check(&self, trailing: usize) -> Result<(), String> {
        let cap = self.capacity.0;
        if cap % 8 != 0 || cap < MIN_CAPACITY as u64 || cap > MAX_CAPACITY as u64 || cap > trailing as u64 {
            return Err(format!("its ring claims {cap} bytes but {trailing} are there"));
        }
        self.put_lock.0.check()?;
        self.get_lock.0.check()?;
        Ok(())
    }

    /// The recorded capacity (checked at open; a handle uses its own copy).
    pub fn capacity(&self) -> usize {
        self.capacity.0 as usize
    }

    /// Messages in the ring now (a snapshot), at most `capacity / 8`.
    pub fn len(&self) -> usize {
        // Consumers' word first: `gets` only grows and never passes `puts`,
        // so a later look at `puts` is at least as large.
        let (gets, _) = unpack(self.get.0.word.load(Ordering::Acquire));
        let (puts, _) = unpack(self.put.0.word.load(Ordering::Acquire));
        (puts.wrapping_sub(gets) as usize).min(self.capacity() / HEADER)
    }

    /// Bytes in use now (a snapshot), at most the capacity.
    pub fn used_bytes(&self) -> usize {
        let span = 2 * self.capacity();
        if span == 0 {
            return 0;
        }
        let (_, head) = unpack(self.get.0.word.load(Ordering::Acquire));
        let (_, tail) = unpack(self.put.0.word.load(Ordering::Acquire));
        ((tail % span + span - head % span) % span).min(self.capacity())
    }

    /// Messages put and not yet marked done (a snapshot).
    pub fn unfinished(&self) -> u32 {
        // `done` first, for the same reason as in `len`.
        let done = self.done.0.load(Ordering::SeqCst);
        let (puts, _) = unpack(self.put.0.word.load(Ordering::SeqCst));
        puts.wrapping_sub(done)
    }

    /// Whether a message is committed and not taken (a lock-free look, for
    /// waiters; reads only the two sides' counts).
    pub fn has_message(&self) -> bool {
        let (gets, _) = unpack(self.get.0.word.load(Ordering::SeqCst));
        let (puts, _) = unpack(self.put.0.word.load(Ordering::SeqCst));
        puts != gets
    }

    /// Whether a message of `len` bytes would fit now in this ring taken as
    /// `cap` bytes long (a lock-free look, for waiters).
    pub fn has_room_for(&self, cap: usize, len: usize) -> bool {
        View { ring: self, data: std::ptr::null_mut(), cap, cache: &NO_CACHE }.room_for(record_size(len))
    }

    /// Marks one task done. `false` if more were done than put.
    pub fn task_done(&self) -> bool {
        let mut done = self.done.0.load(Ordering::SeqCst);
        loop {
            let (puts, _) = unpack(self.put.0.word.load(Ordering::SeqCst));
            if puts.wrapping_sub(done) == 0 {
                return false;
            }
            match self.done.0.compare_exchange(done, done.wrapping_add(1), Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => done = now,
            }
        }
        crash_point!("queue.task_done.counted");
        if self.unfinished() == 0 {
            self.all_done.notify(true);
        }
        true
    }

    /// Waits until every message put has been marked done. `false` on timeout.
    pub fn join(&self, deadline: Option<&Deadline>) -> bool {
        let mut sleeper = Sleeper::new();
        loop {
            if self.unfinished() == 0 {
                return true;
            }
            let seen = self.all_done.register();
            if self.unfinished() == 0 {
                return true;
            }
            if sleeper.sleep(&self.all_done.seq, seen, deadline) == Woke::Deadline {
                return self.unfinished() == 0;
            }
        }
    }
}

/// What a get holds while it reads a record: where it is, and the word to
/// commit once it is taken.
struct Taken {
    /// Where the payload starts.
    at: usize,
    len: usize,
    next: u64,
}

impl<'a> View<'a> {
    /// The ring of `ring`, whose `cap` bytes start at `data`: `cap` is the
    /// handle's own copy of the capacity, checked against its mapping, and
    /// `cache` its own record of the sides' words.
    pub fn new(ring: &'a Ring, data: *mut u8, cap: usize, cache: &'a Cache) -> View<'a> {
        View { ring, data, cap, cache }
    }

    fn corrupt(&self, what: &str, value: impl std::fmt::Display) -> String {
        format!("its ring's {what} is {value}, impossible in a ring of {} bytes", self.cap)
    }

    /// A position read from a side's word, checked.
    fn position(&self, pos: usize, what: &str) -> Result<usize, String> {
        if pos < 2 * self.cap && pos % HEADER == 0 {
            Ok(pos)
        } else {
            Err(self.corrupt(what, pos))
        }
    }

    fn used(&self, tail: usize, head: usize) -> Result<usize, String> {
        let used = (tail + 2 * self.cap - head) % (2 * self.cap);
        if used > self.cap {
            return Err(self.corrupt("bytes in use", used));
        }
        Ok(used)
    }

    /// The two sides' words, checked against each other: both positions in
    /// range, at most `C` bytes in use, none without a message (a PAD is only
    /// ever committed with the message behind it) and no more messages than
    /// the bytes could hold. Returns the positions and the bytes in use.
    fn span(&self, put_word: u64, get_word: u64) -> Result<(usize, usize, usize), String> {
        let (puts, tail) = unpack(put_word);
        let (gets, head) = unpack(get_word);
        let tail = self.position(tail, "write position")?;
        let head = self.position(head, "read position")?;
        let used = self.used(tail, head)?;
        let count = puts.wrapping_sub(gets) as usize;
        if (count == 0) != (used == 0) || count > used / HEADER {
            return Err(self.corrupt("message count", format!("{count} in {used} bytes")));
        }
        Ok((tail, head, used))
    }

    fn advance(&self, pos: usize, by: usize) -> usize {
        (pos + by) % (2 * self.cap)
    }

    fn offset(&self, pos: usize) -> usize {
        pos % self.cap
    }

    // --- producers ---

    /// Puts one message of `len` bytes, written by `fill` into the payload's
    /// pieces (one unless the record is split). `contiguous`: only a placement
    /// in one piece will do (`put_with`); a message that cannot ever be
    /// placed so is split into a copy made by `fill` anyway.
    pub fn put(
        &self,
        len: usize,
        deadline: Option<&Deadline>,
        lock_by: Option<&Deadline>,
        fill: impl FnOnce(&mut [u8], &mut [u8]),
    ) -> Result<(), PutError> {
        let max = max_message(self.cap);
        if len > max {
            return Err(PutError::TooLarge { max });
        }
        let need = record_size(len);
        let mut spin = SpinWait::new(Spin::Ring, deadline);
        let mut sleeper = Sleeper::new();
        loop {
            let attempt = self.try_put(need, lock_by);
            match attempt {
                Err(e) => return Err(e),
                Ok(Some(reserved)) => {
                    self.write(reserved, len, fill);
                    self.ring.not_empty.notify(false);
                    return Ok(());
                }
                Ok(None) => {}
            }
            if deadline.is_some_and(Deadline::has_passed) {
                return Err(if self.room_for(need) { PutError::Busy } else { PutError::Full });
            }
            if spin.spin() {
                continue;
            }
            let seen = self.ring.not_full.register();
            if self.room_for(need) {
                continue;
            }
            if sleeper.sleep(&self.ring.not_full.seq, seen, deadline) == Woke::Deadline {
                return match self.try_put(need, lock_by) {
                    Ok(Some(reserved)) => {
                        self.write(reserved, len, fill);
                        self.ring.not_empty.notify(false);
                        Ok(())
                    }
                    Ok(None) if self.room_for(need) => Err(PutError::Busy),
                    Ok(None) => Err(PutError::Full),
                    Err(e) => Err(e),
                };
            }
        }
    }

    /// Whether `need` bytes are free now (a lock-free look, for waiters).
    fn room_for(&self, need: usize) -> bool {
        let get_word = self.ring.get.0.word.load(Ordering::SeqCst);
        let put_word = self.ring.put.0.word.load(Ordering::SeqCst);
        match self.span(put_word, get_word) {
            Ok((_, _, used)) => self.cap - used >= need,
            Err(_) => true, // let the locked attempt report it
        }
    }

    /// Takes the producers' lock and, if there is room, reserves it: the
    /// lock stays held (released by `write`). `Ok(None)`: no room, or the
    /// lock was not free before the deadline.
    fn try_put(&self, need: usize, lock_by: Option<&Deadline>) -> Result<Option<Reserved>, PutError> {
        let locked = match lock_by {
            None => Some(self.ring.put_lock.0.lock_recovering()),
            Some(d) => self.ring.put_lock.0.lock_recovering_until(d),
        };
        if locked.is_none() {
            return Ok(None);
        }
        match self.reserve(need) {
            Ok(Some(r)) => Ok(Some(r)),
            other => {
                // SAFETY: locked just above on this thread.
                unsafe { self.ring.put_lock.0.unlock() };
                other.map_err(PutError::Corrupt)
            }
        }
    }

    /// Under the producers' lock: where a record of `need` bytes goes.
    fn reserve(&self, need: usize) -> Result<Option<Reserved>, String> {
        // Relaxed: only producers write it, under the lock we hold.
        let put_word = self.ring.put.0.word.load(Ordering::Relaxed);
        // The consumers' word as last seen (under this lock, which orders
        // it after that Acquire load), read afresh only when that says the
        // room is short or does not add up.
        let mut get_word = self.cache.get.load(Ordering::Relaxed);
        // Trusted only if no other producer committed since (see `Cache`).
        let mut fresh = self.cache.put_then.load(Ordering::Relaxed) != put_word;
        if fresh {
            get_word = self.ring.get.0.word.load(Ordering::Acquire);
            self.cache.get.store(get_word, Ordering::Relaxed);
            self.cache.put_then.store(put_word, Ordering::Relaxed);
        }
        let (tail, used) = loop {
            match self.span(put_word, get_word) {
                Ok((tail, _, used)) if fresh || self.cap - used >= need => break (tail, used),
                Err(e) if fresh => return Err(e),
                _ => {
                    // Acquire: what the consumer read before freeing this
                    // room is done.
                    get_word = self.ring.get.0.word.load(Ordering::Acquire);
                    self.cache.get.store(get_word, Ordering::Relaxed);
                    self.cache.put_then.store(put_word, Ordering::Relaxed);
                    fresh = true;
                }
            }
        };
        let (puts, _) = unpack(put_word);
        let free = self.cap - used;
        let at = self.offset(tail);
        let to_end = self.cap - at;
        let place = if need <= to_end && need <= free {
            Place::Whole { at }
        } else if to_end + need <= free {
            Place::AfterPad { pad_at: at }
        } else if need <= free {
            Place::Split { at }
        } else {
            return Ok(None);
        };
        let advance = match place {
            Place::AfterPad { .. } => to_end + need,
            _ => need,
        };
        Ok(Some(Reserved { place, next: pack(puts.wrapping_add(1), self.advance(tail, advance)) }))
    }

    /// Under the producers' lock: writes the record where `reserved` says,
    /// commits it, and releases the lock (also if `fill` panics, then
    /// committing nothing).
    fn write(&self, reserved: Reserved, len: usize, fill: impl FnOnce(&mut [u8], &mut [u8])) {
        struct Unlock<'a>(&'a RawLock);
        impl Drop for Unlock<'_> {
            fn drop(&mut self) {
                // SAFETY: `write` runs with the producers' lock held by this
                // thread (taken in `try_put`), and releases it only here.
                unsafe { self.0.unlock() }
            }
        }
        let _unlock = Unlock(&self.ring.put_lock.0);
        let at = match reserved.place {
            Place::Whole { at } | Place::Split { at } => at,
            Place::AfterPad { pad_at } => {
                // SAFETY: we hold the producers' lock and reserved from
                // `pad_at` to the end; no consumer reads it before the commit.
                unsafe { self.write_header(pad_at, PAD, self.cap - pad_at - HEADER) };
                0
            }
        };
        // SAFETY: as above; the header never wraps (offsets are multiples of
        // 8 and the ring's size is too).
        unsafe { self.write_header(at, MESSAGE, len) };
        let start = at + HEADER;
        let first = len.min(self.cap - start.min(self.cap));
        // SAFETY: the payload's pieces lie in the reserved room: `first`
        // bytes from `start` (within the ring), the rest from the ring's
        // start; no one else touches them before the commit.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts_mut(self.data.add(start.min(self.cap)), first),
                std::slice::from_raw_parts_mut(self.data, len - first),
            )
        };
        fill(a, b);
        crash_point!("queue.put.copied");
        // Release: a consumer that sees the new word sees the bytes.
        self.ring.put.0.word.store(reserved.next, Ordering::SeqCst);
        // Our own commit: the look at the consumers' word stays good.
        self.cache.put_then.store(reserved.next, Ordering::Relaxed);
        crash_point!("queue.put.committed");
    }

    /// # Safety
    /// The caller owns the 8 bytes at `at` (holds the side lock, reserved).
    unsafe fn write_header(&self, at: usize, kind: u32, len: usize) {
        let header = (u64::from(kind) << 32 | len as u64).to_le_bytes();
        // SAFETY: forwarded from the caller; `at + 8 <= cap`.
        unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), self.data.add(at), HEADER) };
    }

    // --- consumers ---

    /// Takes the oldest message, handing its payload's pieces (the second
    /// empty unless the record is split) to `read`, waiting until
    /// `deadline`. `in_place`: `read` looks at the bytes in the ring (a
    /// `get_with` closure), so a death inside it must not deliver the message
    /// again.
    pub fn get<R>(
        &self,
        deadline: Option<&Deadline>,
        lock_by: Option<&Deadline>,
        in_place: bool,
        mut read: impl FnMut(&[u8], &[u8]) -> R,
    ) -> Result<R, GetError> {
        let mut spin = SpinWait::new(Spin::Ring, deadline);
        let mut sleeper = Sleeper::new();
        let mut slept = false;
        let mut busy = false;
        loop {
            if self.has_message() {
                let locked = match lock_by {
                    None => {
                        self.lock_consumers();
                        true
                    }
                    Some(d) => self.lock_consumers_until(d).is_some(),
                };
                busy = !locked;
                if locked {
                    let got = self.take(in_place, &mut read);
                    // SAFETY: locked just above on this thread.
                    unsafe { self.ring.get_lock.0.unlock() };
                    match got {
                        Ok(Some(r)) => {
                            self.ring.not_full.notify(true);
                            if slept && self.has_message() {
                                // A put woke one of us: pass it on.
                                self.ring.not_empty.notify(false);
                            }
                            return Ok(r);
                        }
                        Ok(None) => {}
                        Err(e) => return Err(GetError::Corrupt(e)),
                    }
                }
            }
            if deadline.is_some_and(Deadline::has_passed) {
                return Err(if busy { GetError::Busy } else { GetError::Empty });
            }
            if spin.spin() {
                continue;
            }
            let seen = self.ring.not_empty.register();
            if self.has_message() {
                continue;
            }
            slept = true;
            match sleeper.sleep(&self.ring.not_empty.seq, seen, deadline) {
                Woke::Deadline if !self.has_message() => return Err(GetError::Empty),
                Woke::Signalled => crash_point!("queue.getter.woken"),
                _ => {}
            }
        }
    }

    /// The room a queue must have to count as writable: one small message
    /// (8 encoded bytes).
    pub const WRITABLE_ROOM: usize = HEADER + HEADER;

    /// For waiting on many objects and for async waits: marks a getter
    /// asleep and returns the word and the value to sleep on, or `None` if a
    /// message is there.
    pub fn arm_readable(&self) -> Option<(&'a AtomicU32, u32)> {
        let seen = self.ring.not_empty.register();
        (!self.has_message()).then_some((&self.ring.not_empty.seq, seen))
    }

    /// As [`arm_readable`](Self::arm_readable), for room for one small
    /// message ([`WRITABLE_ROOM`](Self::WRITABLE_ROOM)).
    pub fn arm_writable(&self) -> Option<(&'a AtomicU32, u32)> {
        let seen = self.ring.not_full.register();
        (!self.room_for(Self::WRITABLE_ROOM)).then_some((&self.ring.not_full.seq, seen))
    }

    /// Whether room for one small message is free now (a lock-free look).
    pub fn is_writable(&self) -> bool {
        self.room_for(Self::WRITABLE_ROOM)
    }

    /// After a waiter that may have absorbed a getter's wake went away
    /// without a message: if messages are left, wake the next getter.
    pub fn pass_on_readable(&self) {
        if self.has_message() {
            self.ring.not_empty.notify(false);
        }
    }

    /// Whether a message is committed and not taken (a lock-free look; the
    /// handle's last look at the producers' word first, so a consumer that
    /// is behind reads no shared line the producer writes).
    pub fn has_message(&self) -> bool {
        let (gets, _) = unpack(self.ring.get.0.word.load(Ordering::SeqCst));
        let (seen, _) = unpack(self.cache.put.load(Ordering::Relaxed));
        (seen.wrapping_sub(gets) as i32) > 0 || self.ring.has_message()
    }

    /// For an async put or get whose side's lock was busy: marks a sleeper
    /// on that lock's word and returns the word and the value to sleep on,
    /// or `None` if it is free now.
    pub fn arm_lock(&self, producers: bool) -> Option<(&'a AtomicU32, u32)> {
        let lock = if producers { &self.ring.put_lock.0 } else { &self.ring.get_lock.0 };
        lock.arm()
    }

    /// As [`arm_readable`](Self::arm_readable), for room for a message of
    /// `len` bytes.
    pub fn arm_room(&self, len: usize) -> Option<(&'a AtomicU32, u32)> {
        let seen = self.ring.not_full.register();
        (!self.room_for(record_size(len))).then_some((&self.ring.not_full.seq, seen))
    }

    /// The shared state.
    pub fn ring(&self) -> &'a Ring {
        self.ring
    }

    /// The ring's size this handle uses.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Takes the consumers' lock; if its holder died inside a `get_with`
    /// closure, drops the message it was reading (see the module docs).
    fn lock_consumers(&self) {
        if self.ring.get_lock.0.lock_recovering() {
            self.drop_if_read_by_the_dead();
        }
    }

    fn lock_consumers_until(&self, deadline: &Deadline) -> Option<()> {
        if self.ring.get_lock.0.lock_recovering_until(deadline)? {
            self.drop_if_read_by_the_dead();
        }
        Some(())
    }

    #[cold]
    fn drop_if_read_by_the_dead(&self) {
        let word = self.ring.get.0.word.load(Ordering::Relaxed);
        if self.ring.get.0.reading.load(Ordering::Relaxed) == word {
            // A dead reader saw this message: it must not be delivered again.
            let _ = self.take(false, &mut |_: &[u8], _: &[u8]| ());
        }
        self.ring.get.0.reading.store(NOT_READING, Ordering::Relaxed);
    }

    /// Under the consumers' lock: takes the oldest message, if any.
    fn take<R>(&self, in_place: bool, read: &mut impl FnMut(&[u8], &[u8]) -> R) -> Result<Option<R>, String> {
        let word = self.ring.get.0.word.load(Ordering::Relaxed);
        let Some(taken) = self.locate(word)? else { return Ok(None) };
        let first = taken.len.min(self.cap - taken.at.min(self.cap));
        // SAFETY: we hold the consumers' lock and the record was committed;
        // no producer writes it until our commit below, after these slices
        // are gone. The pieces lie within the ring (checked by `locate`).
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(self.data.add(taken.at.min(self.cap)), first),
                std::slice::from_raw_parts(self.data, taken.len - first),
            )
        };
        if in_place {
            self.ring.get.0.reading.store(word, Ordering::Relaxed);
            crash_point!("queue.get_with.reading");
        }
        let r = read(a, b);
        crash_point!("queue.get.copied");
        // Release: a producer that sees the new word may reuse the bytes.
        self.ring.get.0.word.store(taken.next, Ordering::SeqCst);
        if in_place {
            self.ring.get.0.reading.store(NOT_READING, Ordering::Relaxed);
        }
        crash_point!("queue.get.committed");
        Ok(Some(r))
    }

    /// Under the consumers' lock: where the oldest message is, checked.
    fn locate(&self, word: u64) -> Result<Option<Taken>, String> {
        // The producers' word as last seen (under this lock), read afresh
        // only when that shows no message or does not add up.
        let mut put_word = self.cache.put.load(Ordering::Relaxed);
        let mut fresh = false;
        let (head, mut used) = loop {
            match self.span(put_word, word) {
                Ok((_, head, used)) if fresh || used > 0 => break (head, used),
                Err(e) if fresh => return Err(e),
                _ => {
                    // Acquire: the producer's bytes are visible once its
                    // word is.
                    put_word = self.ring.put.0.word.load(Ordering::Acquire);
                    self.cache.put.store(put_word, Ordering::Relaxed);
                    fresh = true;
                }
            }
        };
        let (gets, _) = unpack(word);
        if used == 0 {
            return Ok(None);
        }
        let mut pos = head;
        let (mut kind, mut len) = self.read_header(self.offset(pos));
        if kind == PAD {
            let at = self.offset(pos);
            let pad = self.cap - at;
            if at == 0 || len != pad - HEADER || pad > used {
                return Err(self.corrupt("padding record", format!("{len} bytes at {at}")));
            }
            pos = self.advance(pos, pad);
            used -= pad;
            (kind, len) = self.read_header(0);
        }
        let need = record_size(len);
        if kind != MESSAGE || len > max_message(self.cap) || need > used {
            return Err(self.corrupt("next record", format!("kind {kind}, {len} bytes, with {used} in use")));
        }
        let at = self.offset(pos) + HEADER;
        Ok(Some(Taken { at, len, next: pack(gets.wrapping_add(1), self.advance(pos, need)) }))
    }

    fn read_header(&self, at: usize) -> (u32, usize) {
        let mut header = [0u8; HEADER];
        // SAFETY: `at + 8 <= cap` (offsets are multiples of 8, and so is the
        // ring's size); the caller holds the consumers' lock over a committed
        // record, which no producer writes now.
        unsafe { std::ptr::copy_nonoverlapping(self.data.add(at), header.as_mut_ptr(), HEADER) };
        let word = u64::from_le_bytes(header);
        ((word >> 32) as u32, (word & 0xffff_ffff) as usize)
    }
}

/// A reservation made under the producers' lock.
struct Reserved {
    place: Place,
    next: u64,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("capacity", &self.capacity()).field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// tests/queue.rs writes garbage at these offsets; keep them in step.
    #[test]
    fn layout_is_as_the_corruption_tests_assume() {
        assert_eq!(offset_of!(Ring, capacity), 0);
        assert_eq!(offset_of!(Ring, put) + offset_of!(Words, word), 128);
        assert_eq!(offset_of!(Ring, get) + offset_of!(Words, word), 256);
        assert_eq!(offset_of!(Ring, get) + offset_of!(Words, reading), 264);
        assert_eq!(offset_of!(Ring, not_empty), 320);
        assert_eq!(size_of::<Ring>(), 576);
    }

    #[test]
    fn records_and_positions() {
        assert_eq!(record_size(0), 8);
        assert_eq!(record_size(1), 16);
        assert_eq!(record_size(8), 16);
        assert_eq!(unpack(pack(7, 4096)), (7, 4096));
        assert_eq!(max_message(64), 48);
    }
}
