//! The shared storage behind `Dict` and `Namespace`: a whole map, encoded,
//! in one of two halves, switched by one store.
//!
//! | field       | meaning |
//! |-------------|---------|
//! | `lock`      | robust lock over everything below; a dead holder's lock is recovered silently |
//! | `half_size` | bytes in each half; written once by `init`, read-only after |
//! | `active`    | 0 or 1: the half that holds the map. Written only under the lock, by one Release store |
//! | `state[h]`  | `count << 32 \| len` for half `h`: its entries and its encoded length in bytes |
//!
//! The trailing bytes are two halves of `half_size` bytes. The active half
//! holds the map as postcard's encoding of a `Vec<(key, value)>`, where keys
//! and values are themselves postcard bytes and the entries are sorted by
//! key bytes (so equal keys are equal bytes, and a lookup is a binary
//! search). All-zero bytes are not a valid table: `init` must run first.
//!
//! Count and length share one word per half so that any single load of it,
//! even outside the lock, gives a pair that describes the same encoding.
//!
//! A mutation, under the lock: decode the active half `a`, change the map in
//! memory, encode it into half `1 - a` (if it does not fit: `Full`, nothing
//! written), store `state[1 - a]`, then store `active = 1 - a` (Release).
//!
//! Crash safety. Nothing ever writes the active half or its state word:
//! writers write only the other half, and only under the lock. So at every
//! instruction of a mutation, `active` names a half whose bytes and state
//! word were written whole before `active` was last stored:
//! - killed before the store to `active`: it still names the old half,
//!   untouched, so the old map stands. The half it was writing is read by
//!   nobody, and the next writer overwrites it (bytes, then state) before it
//!   could become active;
//! - killed after that store: the new half and its state were written before
//!   it in program order, and the store is Release, so whoever reads
//!   `active` (Acquire, under the lock the kernel handed over) sees them: the
//!   new map stands;
//! - the store itself is one aligned 4-byte store: it happens or it does not.
//!
//! So the next locker, told by the robust mutex that the holder died, clears
//! the poison and goes on: there is nothing to repair.

mod entries;
mod layout;
mod view;

pub use entries::{find, insert, remove};
pub use layout::{Table, TableParams};
pub use view::View;

/// This module's crash points (see [`crate::crash`]).
pub(crate) const CRASH_POINTS: &[&str] = &["dict.commit.written", "dict.commit.flipped"];

#[cfg(test)]
mod tests;
