//! What `wait_any` and `wait_all` can wait on: the [`Waitable`] objects.
//!
//! Each object says whether it is ready without changing it, and can *arm*
//! itself: mark a sleeper (the same flag its own blocking waits set, so the
//! next `set`, `release`, `put` or generation end calls `FUTEX_WAKE`) and
//! name the futex word and the value to sleep on.

use std::sync::atomic::AtomicU32;

use crate::data::ring::View;
use crate::{Barrier, BoundedSemaphore, Event, Semaphore};

/// An object [`wait_any`](crate::wait_any) and
/// [`wait_all`](crate::wait_all) can wait on: an [`Event`] (ready while set),
/// a [`Semaphore`] or [`BoundedSemaphore`] (while a unit is free), a queue's
/// [`readable`](crate::Queue::readable) (a message is there) or
/// [`writable`](crate::Queue::writable) (room for a small message), a
/// [`Barrier`] (its generation at the start of the wait has ended).
/// Implemented only inside shmsync.
pub trait Waitable: Sealed + Sync {}

/// The machinery behind [`Waitable`]; not nameable outside the crate.
pub trait Sealed {
    /// Taken once when a wait starts (a barrier's generation).
    fn snapshot(&self) -> u64 {
        0
    }

    /// Whether the object is ready (it takes nothing).
    fn is_ready(&self, snapshot: u64) -> bool;

    /// Marks a sleeper and returns the futex word and the value to sleep
    /// on, or `None` if the object is ready now.
    fn arm(&self, snapshot: u64) -> Option<(&AtomicU32, u32)>;

    /// A waiter that slept on the object leaves without taking what it was
    /// woken for: hand the wake on (objects that wake one sleeper at a time).
    fn pass_on(&self) {}
}

impl Sealed for Event {
    fn is_ready(&self, _: u64) -> bool {
        self.is_set()
    }

    fn arm(&self, _: u64) -> Option<(&AtomicU32, u32)> {
        self.raw().arm(None)
    }
}
impl Waitable for Event {}

macro_rules! waitable_semaphore {
    ($ty:ty) => {
        impl Sealed for $ty {
            fn is_ready(&self, _: u64) -> bool {
                self.value() > 0
            }

            fn arm(&self, _: u64) -> Option<(&AtomicU32, u32)> {
                self.raw().arm()
            }

            fn pass_on(&self) {
                self.raw().pass_on();
            }
        }
        impl Waitable for $ty {}
    };
}
waitable_semaphore!(Semaphore);
waitable_semaphore!(BoundedSemaphore);

impl Sealed for Barrier {
    fn snapshot(&self) -> u64 {
        self.raw().generation()
    }

    fn is_ready(&self, gen: u64) -> bool {
        self.raw().generation() != gen
    }

    fn arm(&self, gen: u64) -> Option<(&AtomicU32, u32)> {
        self.raw().arm(gen)
    }
}
impl Waitable for Barrier {}

/// A queue seen as "a message is there", for [`wait_any`](crate::wait_any):
/// from [`Queue::readable`](crate::Queue::readable) or
/// [`JoinableQueue::readable`](crate::JoinableQueue::readable).
pub struct Readable<'a> {
    view: View<'a>,
}

/// A queue seen as "room for a small message (8 encoded bytes) is free",
/// for [`wait_any`](crate::wait_any): from
/// [`Queue::writable`](crate::Queue::writable). A larger message may still
/// have to wait for more room.
pub struct Writable<'a> {
    view: View<'a>,
}

impl<'a> Readable<'a> {
    pub(crate) fn new(view: View<'a>) -> Readable<'a> {
        Readable { view }
    }
}

impl<'a> Writable<'a> {
    pub(crate) fn new(view: View<'a>) -> Writable<'a> {
        Writable { view }
    }
}

// SAFETY: a View is a shared reference to the ring plus the address of its
// bytes, which every method here only reads through atomics.
unsafe impl Sync for Readable<'_> {}
// SAFETY: as above.
unsafe impl Sync for Writable<'_> {}

impl Sealed for Readable<'_> {
    fn is_ready(&self, _: u64) -> bool {
        self.view.has_message()
    }

    fn arm(&self, _: u64) -> Option<(&AtomicU32, u32)> {
        self.view.arm_readable()
    }

    fn pass_on(&self) {
        self.view.pass_on_readable();
    }
}
impl Waitable for Readable<'_> {}

impl Sealed for Writable<'_> {
    fn is_ready(&self, _: u64) -> bool {
        self.view.is_writable()
    }

    fn arm(&self, _: u64) -> Option<(&AtomicU32, u32)> {
        self.view.arm_writable()
    }
}
impl Waitable for Writable<'_> {}

impl std::fmt::Debug for Readable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readable").field("ready", &self.view.has_message()).finish()
    }
}

impl std::fmt::Debug for Writable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writable").field("ready", &self.view.is_writable()).finish()
    }
}
