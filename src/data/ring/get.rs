//! The consumers' side: under the consumers' lock, find the oldest record
//! (checked), hand its payload out, commit the consumers' word, then wake
//! the putters; and, on recovering the lock, drop the one message a reader
//! killed inside a `get_with` closure had seen.

use std::sync::atomic::Ordering;

use super::records::{max_message, pack, record_size, unpack, HEADER, MESSAGE, PAD};
use super::shared::NOT_READING;
use super::view::View;
use crate::raw::{Sleeper, Spin, SpinWait, Woke};
use crate::sys::time::Deadline;

/// Why a get found nothing.
pub enum GetError {
    /// No message before the deadline.
    Empty,
    /// The consumers' lock was not to be had before the deadline.
    Busy,
    /// The ring's shared words make no sense.
    Corrupt(String),
}

/// What a get holds while it reads a record: where it is, and the word to
/// commit once it is taken.
struct Taken {
    /// Where the payload starts.
    at: usize,
    len: usize,
    next: u64,
}

/// Releases the consumers' lock when a get is done with it, also when a
/// `get_with` closure panics: that message is then dropped, as if its reader
/// had been killed there (it saw the message, and a message is delivered at
/// most once), and putters waiting for room are told.
struct UnlockConsumers<'v, 'a>(&'v View<'a>);

impl Drop for UnlockConsumers<'_, '_> {
    fn drop(&mut self) {
        let view = self.0;
        let unwinding = std::thread::panicking();
        if unwinding {
            view.drop_if_read_by_the_dead();
        }
        // SAFETY: a `UnlockConsumers` is made only right after this thread
        // took the consumers' lock in `get`, and dropped once.
        unsafe { view.ring.get_lock.0.unlock() };
        if unwinding {
            view.ring.not_full.notify(true);
            view.ring.not_empty.notify(false);
        }
    }
}

impl View<'_> {
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
                    let got = {
                        let _unlock = UnlockConsumers(self);
                        self.take(in_place, &mut read)
                    };
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

    /// Whether a message is committed and not taken (a lock-free look; the
    /// handle's last look at the producers' word first, so a consumer that
    /// is behind reads no shared line the producer writes).
    pub fn has_message(&self) -> bool {
        let (gets, _) = unpack(self.ring.get.0.word.load(Ordering::SeqCst));
        let (seen, _) = unpack(self.cache.put.load(Ordering::Relaxed));
        (seen.wrapping_sub(gets) as i32) > 0 || self.ring.has_message()
    }

    /// Takes the consumers' lock; if its holder died inside a `get_with`
    /// closure, drops the message it was reading (see the ring's module docs).
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

    /// Also for a reader of this thread whose closure panicked.
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
        // SAFETY: `locate` runs under the consumers' lock, and `span` said a
        // committed record starts at `pos`.
        let (mut kind, mut len) = unsafe { self.read_header(self.offset(pos)) };
        if kind == PAD {
            let at = self.offset(pos);
            let pad = self.cap - at;
            if at == 0 || len != pad - HEADER || pad >= used {
                return Err(self.corrupt("padding record", format!("{len} bytes at {at}")));
            }
            pos = self.advance(pos, pad);
            used -= pad;
            // SAFETY: as above: a pad is committed together with the record
            // after it, at 0 (`pad < used`, checked just above).
            (kind, len) = unsafe { self.read_header(0) };
        }
        let need = record_size(len);
        if kind != MESSAGE || len > max_message(self.cap) || need > used {
            return Err(self.corrupt("next record", format!("kind {kind}, {len} bytes, with {used} in use")));
        }
        let at = self.offset(pos) + HEADER;
        Ok(Some(Taken { at, len, next: pack(gets.wrapping_add(1), self.advance(pos, need)) }))
    }
}
