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
//!
//! The code, one job a file: `shared` (the shared state's layout, its
//! set-up, the checks at open, and the looks that need no handle), `view` (a
//! handle's view of the ring and its cache of the sides' words), `records`
//! (the record header, the side words, and the checks every value read from
//! the segment passes), `put` and `get` (the two sides), and `wake` (the
//! waiting sides' futex words, and arming a wait on the ring).

mod get;
mod put;
mod records;
mod shared;
mod view;
mod wake;

pub use get::GetError;
pub use put::PutError;
pub use records::{MAX_CAPACITY, MIN_CAPACITY};
pub use shared::Ring;
pub use view::{Cache, View};

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
