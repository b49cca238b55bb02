//! The ring's shared state: its layout in the segment (each side's lock and
//! commit word on cache lines of their own), its set-up, the checks made at
//! open, and the looks and the task count that need no handle.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::records::{record_size, unpack, HEADER, MAX_CAPACITY, MIN_CAPACITY};
use super::view::{View, NO_CACHE};
use super::wake::Waiters;
use crate::raw::{RawLock, Sleeper, Woke};
use crate::sys::time::Deadline;

/// `get.reading` when no `get_with` closure runs.
pub(super) const NOT_READING: u64 = u64::MAX;

/// A field alone on its cache line: a side's lock is touched only by that
/// side, its commit word by both, and the two must not share a line (the
/// other side's reads of the word would take the lock's line away from its
/// holder on every message).
#[repr(C, align(64))]
pub(super) struct Line<T>(pub(super) T);

/// One side's commit word.
#[repr(C)]
pub(super) struct Words {
    pub(super) word: AtomicU64,
    /// Consumers only: see `get.reading` in the ring's module docs.
    pub(super) reading: AtomicU64,
}

/// The ring's shared state. Its bytes follow it in the segment.
#[repr(C)]
pub struct Ring {
    pub(super) capacity: Line<u64>,
    pub(super) put_lock: Line<RawLock>,
    pub(super) put: Line<Words>,
    pub(super) get_lock: Line<RawLock>,
    pub(super) get: Line<Words>,
    pub(super) not_empty: Waiters,
    pub(super) not_full: Waiters,
    pub(super) all_done: Waiters,
    pub(super) done: Line<AtomicU32>,
}

// SAFETY: every field is atomic, a process-shared lock, or read-only after
// init; the bytes are touched only under the side locks, as the ring's
// module docs describe.
unsafe impl Sync for Ring {}

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
        // The shared capacity may be garbage (this is read by the
        // inspector, which trusts nothing): no arithmetic here may overflow.
        let Some(span) = self.capacity().checked_mul(2) else { return 0 };
        if span == 0 {
            return 0;
        }
        let (_, head) = unpack(self.get.0.word.load(Ordering::Acquire));
        let (_, tail) = unpack(self.put.0.word.load(Ordering::Acquire));
        let (head, tail) = (head % span, tail % span);
        let used = if tail >= head { tail - head } else { span - (head - tail) };
        used.min(self.capacity())
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
}
