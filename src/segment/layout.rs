//! What a segment holds: the [`Layout`] each named object implements, and
//! the segment size and layout fingerprint that follow from it.

use std::mem::{align_of, size_of};

use super::header::{self, Fingerprint, Kind};
use crate::error::Result;
use crate::sys::shm;

/// What a segment holds and how to initialise it. Implemented by each named
/// object type; not implementable outside the crate (the trait lives in a
/// private module).
pub trait Layout {
    /// The raw object stored after the header.
    type Object: Sync;
    /// What `create` needs to initialise the object.
    type Params;
    /// The kind recorded in the header.
    const KIND: Kind;

    /// Initialises the object in place. `trailing` is how many bytes follow
    /// it in the segment: at least [`trailing_bytes`](Self::trailing_bytes),
    /// plus whatever rounding up to whole pages added. An error here
    /// (parameters that `validate` let through) removes the new segment.
    ///
    /// # Safety
    /// `object` is valid for writes of `Self::Object` and `trailing` more
    /// bytes, aligned, and not yet visible to any other thread or process.
    unsafe fn init(object: *mut Self::Object, trailing: usize, params: &Self::Params) -> Result<()>;

    /// How many bytes the object needs after itself (a ring, an arena).
    fn trailing_bytes(_params: &Self::Params) -> usize {
        0
    }

    /// On open: checks the object's own fields (counts within bounds, lock
    /// kinds as `init` wrote them, what it records about its trailing bytes
    /// against the `trailing` bytes the file really has). A description of
    /// the first problem found becomes [`Error::Corrupt`](crate::Error::Corrupt).
    fn check(_object: &Self::Object, _trailing: usize) -> std::result::Result<(), String> {
        Ok(())
    }

    /// Rejects parameters the object cannot take, before anything is created.
    fn validate(_name: &str, _params: &Self::Params) -> Result<()> {
        Ok(())
    }

    /// A fingerprint of user-chosen types inside the object, or 0.
    fn type_hash() -> u64 {
        0
    }
}

/// The smallest segment that holds `L`'s header and object.
pub(super) fn min_size<L: Layout>() -> usize {
    const { assert!(align_of::<L::Object>() <= header::OBJECT_OFFSET, "object alignment exceeds the header size") };
    header::OBJECT_OFFSET + size_of::<L::Object>()
}

/// The segment size for `L` with `trailing` bytes after the object, rounded
/// up to whole pages; `None` if it overflows.
pub(super) fn total_size<L: Layout>(trailing: usize) -> Option<usize> {
    min_size::<L>().checked_add(trailing)?.checked_next_multiple_of(shm::page_size())
}

pub(super) fn expected_fingerprint<L: Layout>() -> Fingerprint {
    let u32_of = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Fingerprint {
        ptr_width: u32_of(size_of::<usize>()),
        mutex_size: u32_of(size_of::<libc::pthread_mutex_t>()),
        object_size: u32_of(size_of::<L::Object>()),
        object_align: u32_of(align_of::<L::Object>()),
        type_hash: L::type_hash(),
        libc: header::LIBC,
    }
}
