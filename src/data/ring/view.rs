//! The handle's side of a ring: the `View` every put, get and wait goes
//! through, and the `Cache` of the sides' words it carries (why a stale
//! look is safe is written at `Cache`).

use std::sync::atomic::AtomicU64;

use super::shared::Ring;

/// What one handle last saw of each side's word, so that a producer reads
/// the consumers' word (and a consumer the producers') only when its last
/// look says the ring is full (or empty). Read and written only under the
/// side's lock, which orders them between the handle's threads.
///
/// Why a stale value is safe (positions are taken modulo 2C, so a value that
/// is too old could alias):
/// - A consumer uses its last look at the producers' word only while it
///   shows a message beyond its own head: that message was committed before
///   the look, so the look's write position is at most C bytes ahead of the
///   head, and the stale view only understates the messages there.
/// - A producer uses its last look at the consumers' word only while no other
///   producer has committed since (the producers' word is still the one its
///   own last commit left): each of its commits stayed within the room that
///   look showed, so its write position is at most C bytes past the stale
///   read position, and the stale view only understates the room.
#[derive(Debug, Default)]
pub struct Cache {
    /// The producers' word, as this handle's consumers last saw it.
    pub(super) put: AtomicU64,
    /// The consumers' word, as this handle's producers last saw it.
    pub(super) get: AtomicU64,
    /// The producers' word when `get` was last trusted: after this handle's
    /// last commit, or when it read `get` afresh.
    pub(super) put_then: AtomicU64,
}

/// A cache for views with no handle (the watcher's checks): never trusted.
pub(super) static NO_CACHE: Cache =
    Cache { put: AtomicU64::new(0), get: AtomicU64::new(0), put_then: AtomicU64::new(u64::MAX) };

/// A ring as one handle sees it: the shared state, its bytes with a length
/// this handle checked once, at open, and what the handle last saw of each
/// side's word.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub(super) ring: &'a Ring,
    pub(super) data: *mut u8,
    pub(super) cap: usize,
    pub(super) cache: &'a Cache,
}

// SAFETY: a View is a shared reference to the ring (Sync) and the address of
// its bytes in a shared mapping, which it only touches under the ring's side
// locks as the ring's module docs describe; any thread may do that.
unsafe impl Send for View<'_> {}
// SAFETY: as above.
unsafe impl Sync for View<'_> {}

impl<'a> View<'a> {
    /// The ring of `ring`, whose `cap` bytes start at `data`: `cap` is the
    /// handle's own copy of the capacity, checked against its mapping, and
    /// `cache` its own record of the sides' words.
    pub fn new(ring: &'a Ring, data: *mut u8, cap: usize, cache: &'a Cache) -> View<'a> {
        View { ring, data, cap, cache }
    }

    /// The shared state.
    pub fn ring(&self) -> &'a Ring {
        self.ring
    }

    /// The ring's size this handle uses.
    pub fn capacity(&self) -> usize {
        self.cap
    }
}
