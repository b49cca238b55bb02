//! [`Segment`]: one handle to a mapped segment, and what dropping it does
//! (removes the name if this handle was asked to, and unmaps unless a lock
//! held by this process still lives in the mapping).

use std::marker::PhantomData;
use std::mem::size_of;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::header::{self, Header, Kind};
use super::mapping::{self, Mapping};
use super::unlink::unlink_if_same;
use crate::sys::proc;
use crate::sys::pthread;

/// A mapped segment holding one `T` after the header.
pub struct Segment<T> {
    /// Shared with every other handle to the same inode in this process;
    /// `None` only inside `drop`.
    map: Option<Arc<Mapping>>,
    /// The object's address in that mapping, kept so that every operation
    /// reaches it in one load.
    object: *const u8,
    pub(super) name: String,
    /// The pid that may unlink on drop: a forked child that drops an
    /// inherited handle must not remove its parent's name.
    pub(super) unlinker: Option<u32>,
    /// The file's owner, from `fstat`.
    owner_uid: u32,
    _object: PhantomData<T>,
}

// SAFETY: the mapping is plain shared memory, valid from any thread; the only
// access it gives is `&T`, which needs `T: Sync` to cross threads.
unsafe impl<T: Sync> Send for Segment<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for Segment<T> {}

impl<T> Segment<T> {
    pub(super) fn mapping(&self) -> &Mapping {
        // `map` is Some from construction until drop.
        self.map.as_deref().unwrap_or_else(|| unreachable!("segment used during drop"))
    }

    /// The name, without a leading `/`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn header(&self) -> &Header {
        header_of(self.mapping())
    }

    /// The object after the header.
    #[inline]
    pub fn object(&self) -> &T {
        // SAFETY: a Segment<T> is only returned by `create` (which wrote the
        // object) or by `open` (which checked kind, layout and size), so a
        // valid, initialised T sits at OBJECT_OFFSET, aligned (the offset is a
        // multiple of T's alignment, asserted in `total_size`), and is mapped
        // for as long as `self` lives (`object` points into `map`, which
        // `self` holds). T is designed for shared `&` access.
        unsafe { &*self.object.cast::<T>() }
    }

    /// The pid of the process that created the segment, as the segment says.
    pub fn creator_pid(&self) -> Option<u32> {
        self.header().creator()
    }

    /// The uid that owns the segment's file.
    pub fn owner_uid(&self) -> u32 {
        self.owner_uid
    }

    /// The bytes after the object: a pointer with the whole mapping's
    /// provenance, and their length, bounded by the mapping itself (never by
    /// anything the segment says).
    pub fn trailing(&self) -> (*mut u8, usize) {
        let start = header::OBJECT_OFFSET + size_of::<T>();
        let map = self.mapping();
        // SAFETY: `start` is within the mapping: create sized it to hold the
        // header, the object and the trailing bytes, and open checked that
        // the file (and so the mapping) is at least that long.
        (unsafe { map.ptr().add(start) }, map.len().saturating_sub(start))
    }
}

impl<T> Drop for Segment<T> {
    fn drop(&mut self) {
        let Some(map) = self.map.take() else { return };
        if self.unlinker == Some(proc::pid()) {
            unlink_if_same(&self.name, map.id());
        }
        mapping::release(map, held_by_this_process);
    }
}

/// The header of a mapping (every mapping covers at least the header).
fn header_of(map: &Mapping) -> &Header {
    // SAFETY: every mapping a Segment holds is at least OBJECT_OFFSET long
    // (create sizes it; open checks the size before mapping), page-aligned,
    // and lives as long as `map`. Other processes change only the atomic
    // fields concurrently.
    unsafe { &*map.ptr().cast::<Header>() }
}

/// Whether a thread of this process holds the lock that `map`'s object
/// starts with (a guard forgotten with `mem::forget`): then the mapping must
/// stay, because glibc's robust list points into it.
fn held_by_this_process(map: &Mapping) -> bool {
    let h = header_of(map);
    let has_lock = h.state.load(Ordering::Acquire) == header::READY
        && Kind::from_u32(h.kind).is_some_and(Kind::starts_with_lock)
        && map.len() >= header::OBJECT_OFFSET + size_of::<libc::pthread_mutex_t>();
    if !has_lock {
        return false;
    }
    // SAFETY: the object at OBJECT_OFFSET starts with a pthread mutex (its
    // kind says so) inside the mapping, which is live for this call.
    let owner = unsafe { pthread::owner(map.ptr().add(header::OBJECT_OFFSET).cast()) };
    owner.is_some_and(proc::is_thread_of_this_process)
}

pub(super) fn segment<T>(map: Arc<Mapping>, name: &str, unlinker: Option<u32>, owner_uid: u32) -> Segment<T> {
    // SAFETY: every mapping a Segment holds covers the header, so the object
    // offset is within it (or one past its end for a short foreign file,
    // which `open` refuses before anyone reads the object).
    let object = unsafe { map.ptr().add(header::OBJECT_OFFSET) }.cast_const();
    Segment { map: Some(map), object, name: name.to_string(), unlinker, owner_uid, _object: PhantomData }
}
