//! The header at the start of every segment.
//!
//! ```text
//! offset size field
//!  0      8   magic           b"SHMSYNC\0"
//!  8      4   layout_version  LAYOUT_VERSION
//! 12      4   kind            Kind as u32
//! 16      8   total_size      bytes, as created (checked against fstat)
//! 24      4   ptr_width       size_of::<usize>()
//! 28      4   mutex_size      size_of::<pthread_mutex_t>()
//! 32      4   object_size     size_of the raw object
//! 36      4   object_align    align_of the raw object
//! 40      8   type_hash       fingerprint of user types (Mutex<T>, Queue<T>), else 0
//! 48      4   state           0 uninitialised, 1 initialising, 2 ready
//! 52      4   creator_pid     the creating process
//! 56      4   libc            the C library the creator was built for (LIBC)
//! 60      4   flags           EPHEMERAL: made by K::new(), removed by its creator
//! 64      8   creator_start   the creator's start time (ticks since boot), so a
//!                             recycled pid cannot pass for the creator
//! 72     56   reserved        zero
//! 128     -   the raw object (at OBJECT_OFFSET)
//! ```
//!
//! The creator writes everything under a temporary name, stores
//! `state = READY` (Release) and only then renames the segment into place,
//! so a segment under its real name is whole. An opener still reads `state`
//! with Acquire before it trusts any other field, and then trusts only what
//! `fstat` confirms.

use std::sync::atomic::{AtomicU32, Ordering};

/// Identifies a shmsync segment.
pub const MAGIC: [u8; 8] = *b"SHMSYNC\0";
/// Bumped whenever any header or raw object layout changes.
pub const LAYOUT_VERSION: u32 = 2;
/// Where the object starts; also the largest alignment an object may need.
pub const OBJECT_OFFSET: usize = 128;
/// The C library this build talks to, as four bytes: a musl and a glibc
/// build place the mutex fields differently and must not share objects.
pub const LIBC: u32 = u32::from_le_bytes(*b"gnu\0");
/// `flags`: the object was made by `K::new()` and its creator removes it;
/// once the creator is dead and nobody maps it, it is debris.
pub const EPHEMERAL: u32 = 1;

/// `state` values.
pub const UNINIT: u32 = 0;
/// The creator has claimed the segment and is writing it.
pub const INITIALISING: u32 = 1;
/// The segment is ready for use.
pub const READY: u32 = 2;

/// What a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// `Lock`.
    Lock = 1,
    /// `RLock`.
    RLock = 2,
    /// `Event`.
    Event = 3,
    /// `Condition`.
    Condition = 4,
    /// `Semaphore`.
    Semaphore = 5,
    /// `BoundedSemaphore`.
    BoundedSemaphore = 6,
    /// `Barrier`.
    Barrier = 7,
    /// `Mutex<T>`.
    Mutex = 8,
    /// `Queue<T>`.
    Queue = 9,
    /// `JoinableQueue<T>`.
    JoinableQueue = 10,
    /// `Dict<K, V>`.
    Dict = 11,
    /// `Namespace`.
    Namespace = 12,
    /// `RwLock<T>`.
    RwLock = 13,
}

impl Kind {
    const ALL: [Kind; 13] = [
        Kind::Lock,
        Kind::RLock,
        Kind::Event,
        Kind::Condition,
        Kind::Semaphore,
        Kind::BoundedSemaphore,
        Kind::Barrier,
        Kind::Mutex,
        Kind::Queue,
        Kind::JoinableQueue,
        Kind::Dict,
        Kind::Namespace,
        Kind::RwLock,
    ];

    /// The kind with this number, if any.
    pub fn from_u32(n: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u32 == n)
    }

    /// The type's name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lock => "Lock",
            Kind::RLock => "RLock",
            Kind::Event => "Event",
            Kind::Condition => "Condition",
            Kind::Semaphore => "Semaphore",
            Kind::BoundedSemaphore => "BoundedSemaphore",
            Kind::Barrier => "Barrier",
            Kind::Mutex => "Mutex",
            Kind::Queue => "Queue",
            Kind::JoinableQueue => "JoinableQueue",
            Kind::Dict => "Dict",
            Kind::Namespace => "Namespace",
            Kind::RwLock => "RwLock",
        }
    }

    /// Whether the kind's raw object starts with a robust lock (a
    /// `pthread_mutex_t` at the object's first byte). An `RwLock` has no
    /// pthread mutex at all: nothing of it is on glibc's robust list, so a
    /// forgotten guard needs no pinned mapping.
    pub fn starts_with_lock(self) -> bool {
        !matches!(self, Kind::Event | Kind::Semaphore | Kind::BoundedSemaphore | Kind::RwLock)
    }

    /// The name with an article, for messages.
    pub fn described(self) -> String {
        let name = self.name();
        // By sound: "an Event", "an RLock" ("ar-lock"), "a Lock".
        let article = if name.starts_with(['A', 'E', 'I', 'O', 'U', 'R']) { "an" } else { "a" };
        format!("{article} {name}")
    }
}

/// A fingerprint of type `T` for the header: FNV-1a over its name, size and
/// alignment. The name comes from `std::any::type_name`, which is stable for
/// one compiler version only: processes sharing a typed segment must be
/// built by the same compiler.
pub fn type_hash<T: ?Sized>() -> u64 {
    let name = std::any::type_name::<T>();
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The memory layout facts two processes must agree on to share an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// `size_of::<usize>()`.
    pub ptr_width: u32,
    /// `size_of::<pthread_mutex_t>()`.
    pub mutex_size: u32,
    /// Size of the raw object.
    pub object_size: u32,
    /// Alignment of the raw object.
    pub object_align: u32,
    /// Fingerprint of a user type, or 0.
    pub type_hash: u64,
    /// The C library.
    pub libc: u32,
}

/// The segment header, as laid out in shared memory.
#[repr(C)]
pub struct Header {
    pub magic: [u8; 8],
    pub layout_version: u32,
    pub kind: u32,
    pub total_size: u64,
    pub ptr_width: u32,
    pub mutex_size: u32,
    pub object_size: u32,
    pub object_align: u32,
    pub type_hash: u64,
    /// The init-state futex word.
    pub state: AtomicU32,
    /// Written by the creator before it begins.
    pub creator_pid: AtomicU32,
    pub libc: u32,
    pub flags: u32,
    /// The creator's start time, with `creator_pid` its identity.
    pub creator_start: u64,
    pub reserved: [u64; 7],
}

const _: () = assert!(std::mem::size_of::<Header>() == OBJECT_OFFSET);

impl Header {
    /// This header's layout facts.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            ptr_width: self.ptr_width,
            mutex_size: self.mutex_size,
            object_size: self.object_size,
            object_align: self.object_align,
            type_hash: self.type_hash,
            libc: self.libc,
        }
    }

    /// The creator's pid, if it has written it.
    pub fn creator(&self) -> Option<u32> {
        Some(self.creator_pid.load(Ordering::Relaxed)).filter(|&p| p != 0)
    }

    /// The creator's identity (pid and start time), if it has written it.
    pub fn creator_identity(&self) -> Option<crate::sys::proc::Identity> {
        self.creator().map(|id| crate::sys::proc::Identity { id, start: self.creator_start })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_read_well() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_u32(k as u32), Some(k));
        }
        assert_eq!(Kind::from_u32(0), None);
        assert_eq!(Kind::Event.described(), "an Event");
        assert_eq!(Kind::Lock.described(), "a Lock");
        assert_eq!(Kind::RLock.described(), "an RLock");
        assert_eq!(Kind::RwLock.described(), "an RwLock");
        assert!(!Kind::RwLock.starts_with_lock());
    }

    #[test]
    fn type_hashes_tell_types_apart() {
        assert_ne!(type_hash::<[i64; 4]>(), type_hash::<[u64; 4]>());
        assert_eq!(type_hash::<u32>(), type_hash::<u32>());
    }

    #[test]
    fn header_fields_sit_where_the_table_says() {
        assert_eq!(std::mem::offset_of!(Header, state), 48);
        assert_eq!(std::mem::offset_of!(Header, creator_pid), 52);
        assert_eq!(std::mem::offset_of!(Header, type_hash), 40);
        assert_eq!(std::mem::offset_of!(Header, libc), 56);
        assert_eq!(std::mem::offset_of!(Header, flags), 60);
        assert_eq!(std::mem::offset_of!(Header, creator_start), 64);
    }
}
