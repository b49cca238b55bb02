//! Waking: each waiting side's futex word (bit 0 SLEEPERS, the rest a
//! sequence), and the calls that arm a wait on the ring for `wait_any` and
//! the async waits (see "Waking" in the ring's module docs).

use std::sync::atomic::{AtomicU32, Ordering};

use super::records::{record_size, HEADER};
use super::view::View;
use crate::raw::{register_sleeper, RawLock};
use crate::sys::futex;

const SLEEPERS: u32 = 1;
const SEQ_STEP: u32 = 2;

/// A waiting side's futex word.
#[repr(C, align(64))]
pub(super) struct Waiters {
    pub(super) seq: AtomicU32,
}

impl Waiters {
    /// Wakes one (or all) sleepers if any may sleep; after a wake that found
    /// nobody, clears SLEEPERS if nothing changed since.
    pub(super) fn notify(&self, all: bool) {
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
    pub(super) fn register(&self) -> u32 {
        register_sleeper(&self.seq, SLEEPERS, SEQ_STEP)
    }
}

impl<'a> View<'a> {
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

    /// The producers' lock (`producers`) or the consumers', for an async
    /// put or get that found it busy (it arms and watches it).
    pub fn side_lock(&self, producers: bool) -> &'a RawLock {
        if producers {
            &self.ring.put_lock.0
        } else {
            &self.ring.get_lock.0
        }
    }

    /// As [`arm_readable`](Self::arm_readable), for room for a message of
    /// `len` bytes.
    pub fn arm_room(&self, len: usize) -> Option<(&'a AtomicU32, u32)> {
        let seen = self.ring.not_full.register();
        (!self.room_for(record_size(len))).then_some((&self.ring.not_full.seq, seen))
    }
}
