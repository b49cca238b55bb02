//! The shared ring behind `Queue` and `JoinableQueue`: a byte ring of
//! length-prefixed records under a robust lock.
//!
//! | field       | meaning |
//! |-------------|---------|
//! | `lock`      | robust lock over everything below; a dead holder's lock is recovered silently |
//! | `produced`  | `puts << 32 \| tail`: messages ever committed (wrapping) and the write offset |
//! | `consumed`  | `gets << 32 \| head`: messages ever taken (wrapping) and the read offset |
//! | `done`      | `task_done` calls (wrapping); unfinished = puts − done |
//! | `not_empty`, `not_full`, `all_done` | futex sequence words, bumped to wake getters, putters, joiners |
//! | `*_waiting` | how many wait (spinning or asleep): a commit bumps the sequence only then |
//! | `*_sleeping`| how many sleep in the kernel: a commit calls `FUTEX_WAKE` only then |
//!
//! A record is an 8-byte header (the payload length) and the payload,
//! padded to 8 bytes: a message costs its length plus at most 15 bytes. The
//! payload may wrap around the end of the ring; the header never does.
//!
//! Crash safety: a message's bytes are copied first, then the side's commit
//! word is written in one store. A process killed before that store leaves
//! the queue as it was; after it, the change is whole. Wakeups are issued
//! before the commit, under the lock: a woken waiter then blocks on the
//! robust lock, which the kernel hands over even if the committer dies.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::raw::RawLock;
use crate::sys::futex;
use crate::sys::time::Deadline;

/// Record header size and alignment.
const HEADER: usize = 8;
/// The largest ring (offsets are 32-bit).
pub const MAX_CAPACITY: usize = 1 << 31;

/// Bytes a message of `len` bytes takes in the ring.
fn record_size(len: usize) -> usize {
    HEADER + len.next_multiple_of(HEADER)
}

fn unpack(word: u64) -> (u32, usize) {
    ((word >> 32) as u32, (word & 0xffff_ffff) as usize)
}

fn pack(count: u32, offset: usize) -> u64 {
    (u64::from(count) << 32) | offset as u64
}

/// A waiting side: its sequence word and counters.
#[repr(C)]
struct Waiters {
    seq: AtomicU32,
    waiting: AtomicU32,
    sleeping: AtomicU32,
}

impl Waiters {
    /// Under the lock: wake one or all waiters, if any wait. No syscall
    /// unless one sleeps in the kernel.
    fn notify(&self, all: bool) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) > 0 {
            futex::wake(&self.seq, if all { u32::MAX } else { 1 });
        }
    }
}

/// The ring's shared state. Its bytes follow it in the segment.
#[repr(C)]
pub struct Ring {
    lock: RawLock,
    capacity: u64,
    produced: AtomicU64,
    consumed: AtomicU64,
    done: AtomicU32,
    not_empty: Waiters,
    not_full: Waiters,
    all_done: Waiters,
}

// SAFETY: every field is atomic or read-only after init, and the bytes are
// touched only under the robust lock.
unsafe impl Sync for Ring {}

/// The ring's bytes, as the segment gives them: a pointer with the mapping's
/// provenance, and the length.
#[derive(Clone, Copy)]
pub struct Bytes {
    pub ptr: *mut u8,
    pub len: usize,
}

/// Why a put did not happen.
pub enum PutError {
    /// The message can never fit.
    TooLarge { max: usize },
    /// No room before the deadline.
    Full,
}

impl Ring {
    /// Initialises an empty ring over `capacity` bytes (a multiple of 8).
    ///
    /// # Safety
    /// `this` is valid for writes, aligned and not yet shared.
    pub unsafe fn init(this: *mut Self, capacity: usize) {
        // SAFETY: forwarded from the caller; all fields are in bounds.
        unsafe {
            RawLock::init(&raw mut (*this).lock);
            (&raw mut (*this).capacity).write(capacity as u64);
            for word in [&raw mut (*this).produced, &raw mut (*this).consumed] {
                word.write(AtomicU64::new(0));
            }
            (&raw mut (*this).done).write(AtomicU32::new(0));
            for w in [&raw mut (*this).not_empty, &raw mut (*this).not_full, &raw mut (*this).all_done] {
                w.write(Waiters { seq: AtomicU32::new(0), waiting: AtomicU32::new(0), sleeping: AtomicU32::new(0) });
            }
        }
    }

    /// The ring's size in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The largest message that fits.
    pub fn max_message(&self) -> usize {
        self.capacity().saturating_sub(2 * HEADER)
    }

    /// Messages in the ring now.
    pub fn len(&self) -> usize {
        let (puts, _) = unpack(self.produced.load(Ordering::Acquire));
        let (gets, _) = unpack(self.consumed.load(Ordering::Acquire));
        puts.wrapping_sub(gets) as usize
    }

    /// Messages put and not yet marked done.
    pub fn unfinished(&self) -> u32 {
        let (puts, _) = unpack(self.produced.load(Ordering::SeqCst));
        puts.wrapping_sub(self.done.load(Ordering::SeqCst))
    }

    fn used(&self) -> usize {
        let (puts, tail) = unpack(self.produced.load(Ordering::Relaxed));
        let (gets, head) = unpack(self.consumed.load(Ordering::Relaxed));
        if puts == gets {
            0
        } else {
            match (tail + self.capacity() - head) % self.capacity() {
                0 => self.capacity(),
                n => n,
            }
        }
    }

    /// Bytes the records take now: a snapshot without the lock, for the
    /// inspector. Unlike `used`, it is safe on whatever values a damaged
    /// segment holds (no division by zero, no overflow).
    pub(crate) fn used_bytes(&self) -> usize {
        let capacity = self.capacity();
        let (puts, tail) = unpack(self.produced.load(Ordering::Acquire));
        let (gets, head) = unpack(self.consumed.load(Ordering::Acquire));
        if puts == gets || capacity == 0 || capacity > MAX_CAPACITY {
            return 0;
        }
        match (tail % capacity + capacity - head % capacity) % capacity {
            0 => capacity,
            n => n,
        }
    }

    /// Takes the lock. A holder's death is repaired silently: every change
    /// is committed by one store, so the ring is whole; the waiters are woken
    /// in case the dead holder had not.
    fn lock(&self) {
        if self.lock.lock_recovering() {
            for w in [&self.not_empty, &self.not_full, &self.all_done] {
                w.notify(true);
            }
        }
    }

    fn unlock(&self) {
        // SAFETY: every caller took the lock with `self.lock()` on this thread.
        unsafe { self.lock.unlock() }
    }

    /// Waits on `w` for a change, with the lock held on entry and on return.
    /// Returns `false` if the deadline passed.
    fn wait(&self, w: &Waiters, deadline: Option<&Deadline>) -> bool {
        if deadline.is_some_and(Deadline::has_passed) {
            return false;
        }
        w.waiting.fetch_add(1, Ordering::SeqCst);
        let seq = w.seq.load(Ordering::SeqCst);
        self.unlock();
        let mut spin = crate::raw::SpinWait::new(crate::raw::Spin::Ring, deadline);
        let mut in_time = true;
        while w.seq.load(Ordering::Acquire) == seq {
            if spin.spin() {
                continue;
            }
            w.sleeping.fetch_add(1, Ordering::SeqCst);
            in_time = futex::wait(&w.seq, seq, deadline);
            w.sleeping.fetch_sub(1, Ordering::SeqCst);
            if !in_time {
                break;
            }
        }
        self.lock();
        w.waiting.fetch_sub(1, Ordering::SeqCst);
        in_time
    }

    /// Copies `message` in as one record, waiting for room until `deadline`
    /// (`Some(now)` for a try).
    pub fn put(&self, bytes: Bytes, message: &[u8], deadline: Option<&Deadline>) -> Result<(), PutError> {
        if message.len() > self.max_message() {
            return Err(PutError::TooLarge { max: self.max_message() });
        }
        let need = record_size(message.len());
        self.lock();
        while self.capacity() - self.used() < need {
            if !self.wait(&self.not_full, deadline) && self.capacity() - self.used() < need {
                self.unlock();
                return Err(PutError::Full);
            }
        }
        let (puts, tail) = unpack(self.produced.load(Ordering::Relaxed));
        // SAFETY: we hold the lock, and [tail, tail + need) (mod capacity) is
        // free: no reader looks at it until `produced` moves past it.
        unsafe {
            copy_in(bytes, tail, &(message.len() as u64).to_le_bytes());
            copy_in(bytes, (tail + HEADER) % self.capacity(), message);
        }
        self.not_empty.notify(false);
        // Release: a getter that sees the new `produced` sees the bytes.
        self.produced.store(pack(puts.wrapping_add(1), (tail + need) % self.capacity()), Ordering::Release);
        self.unlock();
        Ok(())
    }

    /// Takes the oldest record into `out` (cleared first), waiting until
    /// `deadline`. Returns `false` if none came.
    pub fn get(&self, bytes: Bytes, out: &mut Vec<u8>, deadline: Option<&Deadline>) -> bool {
        self.lock();
        while self.used() == 0 {
            if !self.wait(&self.not_empty, deadline) && self.used() == 0 {
                self.unlock();
                return false;
            }
        }
        let (gets, head) = unpack(self.consumed.load(Ordering::Relaxed));
        // SAFETY: we hold the lock and the record at `head` was committed;
        // no one writes it until `consumed` moves past it, after these
        // slices are gone. A header never wraps (offsets are multiples of 8).
        let len = unsafe {
            let (header, _) = stretches(bytes, head, HEADER);
            let header: [u8; HEADER] = header.try_into().unwrap_or([0; HEADER]);
            (u64::from_le_bytes(header) as usize).min(self.max_message())
        };
        out.clear();
        // SAFETY: as above; the payload follows its header.
        unsafe {
            let (first, second) = stretches(bytes, (head + HEADER) % self.capacity(), len);
            out.extend_from_slice(first);
            out.extend_from_slice(second);
        }
        self.not_full.notify(true);
        self.consumed.store(pack(gets.wrapping_add(1), (head + record_size(len)) % self.capacity()), Ordering::Release);
        self.unlock();
        true
    }

    /// Marks one task done. `false` if more were done than put.
    pub fn task_done(&self) -> bool {
        let mut done = self.done.load(Ordering::SeqCst);
        loop {
            let (puts, _) = unpack(self.produced.load(Ordering::SeqCst));
            if puts.wrapping_sub(done) == 0 {
                return false;
            }
            match self.done.compare_exchange(done, done.wrapping_add(1), Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => done = now,
            }
        }
        if self.unfinished() == 0 {
            self.lock();
            self.all_done.notify(true);
            self.unlock();
        }
        true
    }

    /// Waits until every message put has been marked done. `false` on timeout.
    pub fn join(&self, deadline: Option<&Deadline>) -> bool {
        self.lock();
        while self.unfinished() != 0 {
            if !self.wait(&self.all_done, deadline) && self.unfinished() != 0 {
                self.unlock();
                return false;
            }
        }
        self.unlock();
        true
    }
}

/// Copies `src` into the ring at `offset`, wrapping at the end.
///
/// # Safety
/// The caller holds the lock and owns that stretch of the ring.
unsafe fn copy_in(bytes: Bytes, offset: usize, src: &[u8]) {
    let first = src.len().min(bytes.len - offset);
    // SAFETY: offset < len and the two stretches lie within the ring; the
    // source is a separate Rust buffer, so they do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), bytes.ptr.add(offset), first);
        std::ptr::copy_nonoverlapping(src.as_ptr().add(first), bytes.ptr, src.len() - first);
    }
}

/// The `len` bytes at `offset` as they lie in the ring: up to its end, and
/// the rest from its start.
///
/// # Safety
/// The caller holds the lock, the stretch holds a committed record, and the
/// slices are dropped before the lock is released.
unsafe fn stretches<'a>(bytes: Bytes, offset: usize, len: usize) -> (&'a [u8], &'a [u8]) {
    let first = len.min(bytes.len - offset);
    // SAFETY: offset < ring length and both stretches lie within the ring;
    // per the caller's contract nobody writes them while the slices live.
    unsafe {
        (std::slice::from_raw_parts(bytes.ptr.add(offset), first), std::slice::from_raw_parts(bytes.ptr, len - first))
    }
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("capacity", &self.capacity()).field("len", &self.len()).finish()
    }
}
