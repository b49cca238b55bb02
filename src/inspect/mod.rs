//! The inspector: what every object in `/dev/shm` is, who holds it, and
//! which files are debris. The `shmsync` command (feature `cli`) is a thin
//! front end to this module.
//!
//! - [`inspect`](fn@inspect)`(name)`: one object, decoded per kind.
//! - [`list`]: every file in `/dev/shm`, our objects described, the rest
//!   counted.
//! - [`gc`](fn@gc): removes the objects whose creator is dead and that no
//!   live process maps; [`remove`]: one object, only if it is ours.
//!
//! Reading never takes a lock, never writes a byte and never waits: a file
//! is read with `pread` (its header) and a `PROT_READ` mapping (its object),
//! through accessors that only load, and everything in it is checked against
//! the file before it is used. A corrupt, foreign, truncated or unreadable
//! file becomes an [`Info`] whose [`Status`] and `problem` say what is wrong.
//! Who maps an object comes from `/proc/*/maps`, matched by inode; processes
//! whose maps could not be read are reported.
//!
//! ```
//! let lock = shmsync::Lock::new()?;
//! let guard = lock.lock().unwrap();
//! let info = shmsync::inspect(lock.name())?;
//! assert_eq!(info.kind, Some("Lock"));
//! assert_eq!(info.state, "held");
//! assert!(info.mapped_by.contains(&std::process::id()));
//! match info.detail {
//!     Some(shmsync::inspect::Detail::Lock(l)) => assert_eq!(l.owner_pid, Some(std::process::id())),
//!     other => panic!("{other:?}"),
//! }
//! drop(guard);
//! # Ok::<(), shmsync::Error>(())
//! ```
//!
//! # The JSON schema (version 1)
//!
//! `shmsync ls --json` and `shmsync inspect --json NAME...` print one
//! document:
//!
//! ```text
//! {
//!   "schema": 1,
//!   "objects": [Info, ...],            ours (whole or damaged) and unreadable files, by name
//!   "not_found": ["name", ...],        inspect: names that do not exist; ls: []
//!   "other_files": ["name", ...],      ls: files that are not shmsync objects; inspect: []
//!   "unreadable_processes": [{"pid": 1, "uid": 0}, ...]   maps not readable (uid may be null)
//! }
//! ```
//!
//! `shmsync gc --json` prints:
//!
//! ```text
//! {
//!   "schema": 1,
//!   "dry_run": false,
//!   "decisions": [{"action": "removed" | "would-remove" | "kept" | "failed",
//!                  "reason": "text", "object": Info}, ...],
//!   "unreadable_processes": [...]
//! }
//! ```
//!
//! An `Info` ([`Info`]):
//!
//! | field | type | meaning |
//! |-------|------|---------|
//! | `name` | string | the file's name in `/dev/shm` |
//! | `status` | string | `ok`, `initialising`, `abandoned`, `truncated`, `corrupt`, `incompatible`, `unreadable`, `foreign` ([`Status`]) |
//! | `problem` | string or null | why the status is not `ok` |
//! | `kind` | string or null | `Lock`, `RLock`, `Event`, `Condition`, `Semaphore`, `BoundedSemaphore`, `Barrier`, `Mutex`, `Queue`, `JoinableQueue`, `Dict`, `Namespace` |
//! | `size` | number | bytes |
//! | `mode` | string | permission bits in octal, `"0600"` |
//! | `uid`, `user` | number, string or null | the owner |
//! | `ephemeral` | bool | made by `K::new()` |
//! | `temporary` | bool | a `.shmsync-init.*` file of a create in progress |
//! | `creator` | object or null | `{"pid", "start", "alive"}`: pid, start time (clock ticks since boot), whether that process runs |
//! | `mapped_by` | array of numbers | pids that map it now |
//! | `state` | string | one word (below) |
//! | `orphan` | bool | creator dead and nobody maps it: `gc` removes it |
//! | `header` | object or null | `layout_version`, `kind` (number), `total_size`, `ptr_width`, `mutex_size`, `object_size`, `object_align`, `type_hash` (hex string), `state` (0, 1, 2), `creator_pid`, `creator_start`, `libc`, `flags` |
//! | `detail` | object or null | per kind, below; present when `status` is `ok` |
//!
//! `detail` per kind, and the one-word `state`:
//!
//! | kind | `detail` fields | `state` |
//! |------|-----------------|---------|
//! | Lock, RLock | `owner_tid`, `owner_pid`, `owner_alive` (null when free), `depth`, `poisoned`, `owner_died`, `poisoned_on_next_lock` | `free`, `held`, `poisoned`, `owner-dead` |
//! | Mutex | `lock` (as above), `value_size`, `value_align` | as Lock |
//! | RwLock | `readers`, `holder_tid`, `holder_pid`, `holder_alive` (null when nobody holds the exclusive side), `writing`, `poisoned`, `value_size`, `value_align` | `poisoned`, `owner-dead`, `write-locked`, `upgradable`, `read-locked`, `free` |
//! | Condition | `lock`, `waiters` | `owner-dead`, `poisoned`, `waiting`, `held`, `idle` |
//! | Event | `set` | `set`, `clear` |
//! | Semaphore, BoundedSemaphore | `value`, `max`, `bounded` | `available`, `exhausted` |
//! | Barrier | `parties`, `waiting`, `generation`, `broken` | `broken`, `waiting`, `idle` |
//! | Queue, JoinableQueue | `messages`, `bytes_used`, `capacity`, `unfinished` (null for Queue) | `empty`, `nonempty` |
//! | Dict, Namespace | `entries`, `bytes`, `capacity` | `empty`, `nonempty` |
//!
//! When `status` is not `ok`, `state` is the status word. Fields are only
//! ever added within one schema version.
//!
//! # Limits
//! - pids are those of the caller's pid namespace; objects shared with
//!   processes in other namespaces (containers) show those as not mapping.
//! - A Mutex's header records the cell's size and alignment, not `T`'s:
//!   `value_size` is `T`'s size rounded up to `value_align`.
//! - A lock word records the holder's tid but no start time: a holder that
//!   died and whose tid was reused reads as alive.

mod decode;
mod gc;
mod info;
mod procs;
mod read;

pub use gc::{gc, remove, Action, Decision, GcOptions, GcReport};
pub use info::{Creator, Detail, HeaderInfo, Info, Listing, LockDetail, Status, Unreadable, SCHEMA};

use crate::error::{Error, Result};
use crate::segment::name;
use crate::sys::shm;
use read::Reader;

/// Everything about the object `name` in `/dev/shm`, read without taking a
/// lock or changing a byte. A file that is not a whole shmsync object is
/// still described: see [`Info::status`] and [`Info::problem`].
///
/// Errors: [`Error::InvalidName`], [`Error::NotFound`], or [`Error::Os`] when
/// `/dev/shm` itself cannot be read.
pub fn inspect(name: &str) -> Result<Info> {
    let bare = name::validate(name)?;
    let mut reader = reader()?;
    reader.read(bare).ok_or_else(|| Error::NotFound { name: bare.to_string() })
}

/// Every file in `/dev/shm`: shmsync objects (whole or damaged) and files
/// that could not be read, decoded and sorted by name; the names of the
/// others. Never fails on a file; only when `/dev/shm` cannot be read.
pub fn list() -> Result<Listing> {
    read_all(|_| true).map(|(_, listing)| listing)
}

/// The processes whose mappings the caller cannot read (another user's,
/// without privilege): objects only they map show as unmapped in
/// [`Info::mapped_by`].
pub fn unreadable_processes() -> Result<Vec<Unreadable>> {
    Ok(reader()?.mappers.unreadable.clone())
}

fn reader() -> Result<Reader> {
    Reader::new().map_err(|e| Error::os("stat", shm::DIR, e))
}

/// Reads every file of `/dev/shm` whose name `wanted` admits.
pub(crate) fn read_all(wanted: impl Fn(&str) -> bool) -> Result<(Reader, Listing)> {
    let mut reader = reader()?;
    let dir = std::fs::read_dir(shm::DIR).map_err(|e| Error::os("read_dir", shm::DIR, e))?;
    let mut listing = Listing { objects: Vec::new(), other_files: Vec::new(), unreadable_processes: Vec::new() };
    for entry in dir {
        let entry = entry.map_err(|e| Error::os("read_dir", shm::DIR, e))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            listing.other_files.push(file_name.to_string_lossy().into_owned());
            continue;
        };
        if !wanted(name) {
            continue;
        }
        // Our names follow the naming rules, and our objects are regular
        // files; a symlink, FIFO or directory is never opened.
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        if !regular || name::validate(name).ok() != Some(name) {
            listing.other_files.push(name.to_string());
            continue;
        }
        match reader.read(name) {
            None => {} // removed meanwhile
            Some(info) if info.status == Status::Foreign => listing.other_files.push(info.name),
            Some(info) => listing.objects.push(info),
        }
    }
    listing.objects.sort_by(|a, b| a.name.cmp(&b.name));
    listing.other_files.sort();
    listing.unreadable_processes = reader.mappers.unreadable.clone();
    Ok((reader, listing))
}
