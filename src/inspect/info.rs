//! What the inspector reports about one file: [`Info`] and its parts.
//!
//! These types are the `--json` schema of the `shmsync` command (version
//! [`SCHEMA`]); the module docs of [`inspect`](super) list every field. They
//! only grow: a field is never renamed or removed within one schema version.

use serde::Serialize;

/// The version of the JSON documents built from these types.
pub const SCHEMA: u32 = 1;

/// How far a file could be read, and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// A whole shmsync object; its state is decoded in [`Info::detail`].
    Ok,
    /// A shmsync object that its creator, still alive, is building (a
    /// temporary `.shmsync-init.*` file, or a header not yet ready).
    Initialising,
    /// The same, but the creator is dead: it was killed mid-create, and the
    /// file is debris.
    Abandoned,
    /// Starts with the shmsync magic but is shorter than its header says.
    Truncated,
    /// Starts with the shmsync magic, but a field is impossible.
    Corrupt,
    /// Made by a shmsync build with another layout (version, libc, pointer
    /// width or object sizes); its state is not decoded.
    Incompatible,
    /// Could not be opened (permission): whether it is ours is unknown.
    Unreadable,
    /// Not a shmsync object.
    Foreign,
}

impl Status {
    /// The status as one lowercase word, as in the JSON.
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Initialising => "initialising",
            Status::Abandoned => "abandoned",
            Status::Truncated => "truncated",
            Status::Corrupt => "corrupt",
            Status::Incompatible => "incompatible",
            Status::Unreadable => "unreadable",
            Status::Foreign => "foreign",
        }
    }

    /// Whether the file is known to be a shmsync object (whole or not).
    pub fn is_ours(self) -> bool {
        !matches!(self, Status::Unreadable | Status::Foreign)
    }
}

/// A process as a segment records it: pid and start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Creator {
    /// Its pid (in the creator's pid namespace).
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field
    /// 22); 0 if unknown. With the pid it names one process for the life of
    /// the machine.
    pub start: u64,
    /// Whether that process (that pid with that start time) runs now.
    pub alive: bool,
}

/// The segment header's fields, as the file has them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HeaderInfo {
    /// The layout version.
    pub layout_version: u32,
    /// The kind number.
    pub kind: u32,
    /// The size the creator made it, in bytes.
    pub total_size: u64,
    /// The creator's pointer width in bytes.
    pub ptr_width: u32,
    /// The creator's `pthread_mutex_t` size.
    pub mutex_size: u32,
    /// The raw object's size.
    pub object_size: u32,
    /// The raw object's alignment.
    pub object_align: u32,
    /// The fingerprint of the user types inside (0 for none), as hex.
    pub type_hash: String,
    /// The init-state word: 0 uninitialised, 1 initialising, 2 ready.
    pub state: u32,
    /// The creator's pid, 0 if not recorded.
    pub creator_pid: u32,
    /// The creator's start time in clock ticks since boot.
    pub creator_start: u64,
    /// The creator's C library, e.g. "gnu".
    pub libc: String,
    /// The flag bits (1: made by `K::new()`).
    pub flags: u32,
}

/// A robust lock's state, read without taking it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LockDetail {
    /// The kernel thread id of the holder, if held.
    pub owner_tid: Option<u32>,
    /// The holder's process (its thread group), if held and still running.
    pub owner_pid: Option<u32>,
    /// Whether the holder thread runs (its tid exists and is no zombie; a
    /// mutex word records no start time, so a recycled tid reads as alive).
    pub owner_alive: Option<bool>,
    /// How many times the holder has locked it (1 for a Lock; nesting for an
    /// RLock); 0 while free.
    pub depth: u32,
    /// The poison flag: a holder died or panicked, and nobody cleared it.
    pub poisoned: bool,
    /// The lock word says its last owner died holding it; nobody has locked
    /// it since.
    pub owner_died: bool,
    /// Whether the next `lock()` reports poison: poisoned, or its owner is
    /// dead (`owner_died`, or a held lock whose holder is gone).
    pub poisoned_on_next_lock: bool,
}

/// What one kind's raw object says. Serialised without a tag: the fields
/// present depend on [`Info::kind`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Detail {
    /// Lock and RLock.
    Lock(LockDetail),
    /// `Mutex<T>`.
    Mutex {
        /// Its lock.
        lock: LockDetail,
        /// Bytes after the lock: T's size, rounded up to the alignment below.
        value_size: u32,
        /// The cell's alignment: T's, or 8 if T's is smaller.
        value_align: u32,
    },
    /// `RwLock<T>`.
    RwLock {
        /// Read locks held now (counting those of dead readers not yet
        /// reclaimed).
        readers: u32,
        /// The thread holding the exclusive side (a writer, or an
        /// upgradable reader), if any.
        holder_tid: Option<u32>,
        /// Its process, when it is alive.
        holder_pid: Option<u32>,
        /// Whether that thread is alive (null when nobody holds it).
        holder_alive: Option<bool>,
        /// A writer holds the lock or waits for its readers to leave.
        writing: bool,
        /// Whether the lock is poisoned.
        poisoned: bool,
        /// Bytes after the lock: T's size, rounded up to the alignment below.
        value_size: u32,
        /// The cell's alignment: T's, or the lock's (64) if T's is smaller.
        value_align: u32,
    },
    /// Condition.
    Condition {
        /// Its lock.
        lock: LockDetail,
        /// Threads waiting on it.
        waiters: u32,
    },
    /// Event.
    Event {
        /// Whether the flag is set.
        set: bool,
    },
    /// Semaphore and BoundedSemaphore.
    Semaphore {
        /// Units available now.
        value: u32,
        /// The largest value `release` may reach (i32::MAX if unbounded).
        max: u32,
        /// Whether it is a BoundedSemaphore.
        bounded: bool,
    },
    /// Barrier.
    Barrier {
        /// Parties that meet.
        parties: u32,
        /// Parties waiting in this generation.
        waiting: u32,
        /// Generations ended so far.
        generation: u64,
        /// Whether it is broken (until `reset`).
        broken: bool,
    },
    /// Queue and JoinableQueue.
    Queue {
        /// Messages in the ring.
        messages: u64,
        /// Bytes they take, record headers and padding included.
        bytes_used: u64,
        /// The ring's size in bytes.
        capacity: u64,
        /// Messages put and not yet marked done (JoinableQueue only).
        unfinished: Option<u32>,
    },
    /// Dict and Namespace.
    Table {
        /// Entries.
        entries: u64,
        /// Bytes of their encoding.
        bytes: u64,
        /// The most bytes the encoding may take (one half of the table).
        capacity: u64,
    },
}

/// Everything the inspector learned about one file in `/dev/shm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Info {
    /// The file's name in `/dev/shm`.
    pub name: String,
    /// How far it could be read.
    pub status: Status,
    /// Why the status is not `ok`, in words; `None` when it is.
    pub problem: Option<String>,
    /// The kind ("Lock", "Queue", ...), when the header says.
    pub kind: Option<&'static str>,
    /// The file's size in bytes.
    pub size: u64,
    /// Permission bits, in octal, e.g. "0600".
    #[serde(serialize_with = "octal")]
    pub mode: u32,
    /// The owner's uid.
    pub uid: u32,
    /// The owner's user name, if the system knows it.
    pub user: Option<String>,
    /// Made by `K::new()`: its creator removes it, so once the creator is
    /// dead and nobody maps it, it is debris.
    pub ephemeral: bool,
    /// A temporary file of a create in progress (`.shmsync-init.*`).
    pub temporary: bool,
    /// The creating process, when recorded.
    pub creator: Option<Creator>,
    /// The processes that map it now, from `/proc/*/maps`.
    pub mapped_by: Vec<u32>,
    /// One word for its state: the status when not `ok`, else per kind
    /// (see the module docs).
    pub state: &'static str,
    /// Its creator is dead and no process maps it: `gc` removes it.
    pub orphan: bool,
    /// The header's fields, when the file has a header.
    pub header: Option<HeaderInfo>,
    /// The object's own state, when decoded.
    pub detail: Option<Detail>,
    /// Device and inode, to tell this object from a later one of the name.
    #[serde(skip)]
    pub(crate) id: (u64, u64),
}

fn octal<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// A process whose `/proc/<pid>/maps` could not be read: it may map
/// objects that then show as unmapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Unreadable {
    /// Its pid.
    pub pid: u32,
    /// Its effective uid, if `/proc/<pid>/status` says.
    pub uid: Option<u32>,
}

/// Every file in `/dev/shm`, as [`list`](super::list) found them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Listing {
    /// Our objects, whole or damaged, and files that could not be read,
    /// sorted by name.
    pub objects: Vec<Info>,
    /// Files that are not shmsync objects (and entries that are not regular
    /// files), sorted.
    pub other_files: Vec<String>,
    /// Processes whose mappings could not be read.
    pub unreadable_processes: Vec<Unreadable>,
}
