//! `Event`: a named flag that processes wait on (Python's `Event`).

use std::time::Duration;

use super::named_lifecycle;
use crate::raw::RawEvent;
use crate::segment::{Kind, Layout, Segment};

/// A named, cross-process event flag (Python's `multiprocessing.Event`).
///
/// [`set`](Self::set) wakes every waiter; [`clear`](Self::clear) makes later
/// waiters block again. Built on a shared futex word, so a waiter that is
/// killed costs the others nothing — unlike a process-shared
/// `pthread_cond_t`, which stops waking anyone after that.
///
/// ```
/// use std::time::Duration;
/// let ev = shmsync::Event::new()?;
/// assert!(!ev.wait_timeout(Duration::from_millis(10))); // not set: times out
/// ev.set();
/// ev.wait(); // returns at once
/// assert!(ev.is_set());
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct Event {
    seg: Segment<RawEvent>,
}

impl Layout for Event {
    type Object = RawEvent;
    type Params = ();
    const KIND: Kind = Kind::Event;

    unsafe fn init(object: *mut RawEvent, _trailing: usize, _: &()) -> crate::Result<()> {
        // SAFETY: forwarded from the caller of Layout::init.
        unsafe { RawEvent::init(object) };
        Ok(())
    }
}

named_lifecycle!(Event {});

impl Event {
    pub(crate) fn raw(&self) -> &RawEvent {
        self.seg.object()
    }

    /// Sets the flag and wakes every waiting thread, in every process. No
    /// syscall when nobody waits.
    #[inline]
    pub fn set(&self) {
        self.raw().set()
    }

    /// Clears the flag.
    #[inline]
    pub fn clear(&self) {
        self.raw().clear()
    }

    /// Whether the flag is set. One atomic load.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.raw().is_set()
    }

    /// Blocks until the flag is set. Returns at once if it is.
    pub fn wait(&self) {
        self.raw().wait()
    }

    /// Blocks until the flag is set or `timeout` passes; returns whether it
    /// was set (as Python's `wait(timeout)` does). A `set` that was followed
    /// by a `clear` before this waiter ran still counts.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.raw().wait_timeout(timeout)
    }
}
