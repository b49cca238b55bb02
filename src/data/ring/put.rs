//! The producers' side: under the producers' lock, reserve room (behind a
//! PAD when the record would run past the end), write the record, commit
//! the producers' word, then wake a getter.

use std::sync::atomic::Ordering;

use super::records::{max_message, pack, record_size, unpack, HEADER, MESSAGE, PAD};
use super::view::View;
use crate::raw::{RawLock, Sleeper, Spin, SpinWait, Woke};
use crate::sys::time::Deadline;

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

/// A reservation made under the producers' lock.
struct Reserved {
    place: Place,
    next: u64,
}

impl View<'_> {
    /// Puts one message of `len` bytes, written by `fill` into the payload's
    /// pieces (one unless the record is split).
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
    pub(super) fn room_for(&self, need: usize) -> bool {
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
}
