//! Named shared memory: one segment per object, a header, the create/open
//! handshake, names, the owner check, one mapping per inode, and lifecycle.
//! Written once, generic over the object [`Layout`]; every named type uses it.
//!
//! Create builds the whole object under a temporary name and then renames it
//! into place, so its real name only ever names a whole object:
//! `shm_open(O_CREAT | O_EXCL)` of a fresh temporary name, `fchmod` (the exact
//! mode, beyond the umask), `ftruncate`, reserve the first page, map, claim
//! the header (`creator_pid`, `creator_start`, `state = INITIALISING`),
//! reserve the rest with `posix_fallocate` (so a full `/dev/shm` fails here,
//! never as `SIGBUS` later), write the header and the object, store
//! `state = READY` (Release), then `renameat2(RENAME_NOREPLACE)` to the real
//! name. A creator killed at any step leaves nothing under the real name
//! (only a temporary file that `gc` removes); a failed init is unlinked; a
//! lost race to the name is `AlreadyExists`; another user never meets the
//! object in the instant before its mode is set.
//!
//! Open: `shm_open(O_RDWR)`, `fstat` (the owner must be the caller, or one
//! the builder allows), map (sharing this process's mapping of the inode if
//! it has one), wait (bounded) for `state == READY` (only a foreign or
//! damaged file can be caught before it), check magic, version, kind,
//! fingerprint and size against what `fstat` says, make sure the file's
//! storage is allocated, and check the object itself.

mod create;
mod handle;
pub(crate) mod header;
mod layout;
mod mapping;
pub(crate) mod name;
mod open;
mod options;
mod unlink;

pub use create::create;
pub use handle::Segment;
pub use header::{type_hash, Kind};
pub use layout::Layout;
pub(crate) use mapping::fork_guard;
pub use open::{open, open_or_create};
pub use options::{Options, Owners};
pub use unlink::unlink;

/// This module's crash points (see [`crate::crash`]).
pub(crate) const CRASH_POINTS: &[&str] = &["segment.create.claimed", "segment.create.ready"];
