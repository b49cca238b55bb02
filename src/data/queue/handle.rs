//! The queue types: their segment layout and lifecycle, a handle's view of
//! the ring, and the raw put and get that every call goes through (with the
//! thread's encode buffer and the grace for a side's lock).

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::data::ring::{self, GetError, PutError, Ring, View};
use crate::error::{Error, Result};
use crate::named::FromSegment;
use crate::segment::{self, Kind, Layout, Segment};
use crate::sys::time::Deadline;
use crate::Builder;

thread_local! {
    /// This thread's encode/decode buffer, reused so a put or get allocates
    /// nothing once warm (beyond what decoding `T` itself needs). It is taken
    /// out while in use, so a serde impl that itself uses a queue on this
    /// thread gets a fresh one instead of a "borrowed twice" panic.
    static BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's buffer (or a fresh one, when it is in use).
pub(super) fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = BUFFER.take();
    let r = f(&mut buf);
    BUFFER.set(buf);
    r
}

/// How long a `try_` or timed call may wait for a side's lock past its own
/// deadline: long enough that a lock held for a moment by another producer
/// or consumer does not read as full or empty, short enough that a peer
/// stopped inside its critical section cannot hold the caller.
const LOCK_GRACE: Duration = Duration::from_millis(1);

/// The parameter of a queue: its ring size in bytes (default 64 KiB).
#[derive(Clone, Copy, Debug)]
pub struct QueueParams {
    capacity: usize,
}

impl Default for QueueParams {
    fn default() -> Self {
        QueueParams { capacity: 64 << 10 }
    }
}

fn validate(name: &str, params: &QueueParams) -> Result<()> {
    if params.capacity < ring::MIN_CAPACITY || params.capacity > ring::MAX_CAPACITY {
        return Err(Error::InvalidArgument {
            name: name.to_string(),
            detail: format!(
                "a queue's capacity must be {} to {} bytes, not {}",
                ring::MIN_CAPACITY,
                ring::MAX_CAPACITY,
                params.capacity
            ),
        });
    }
    Ok(())
}

/// The deadline for taking a side's lock: the call's own, but never less
/// than [`LOCK_GRACE`] from now.
fn lock_deadline(deadline: Option<&Deadline>) -> Option<Deadline> {
    deadline.map(|d| *d.later(&Deadline::after(LOCK_GRACE)))
}

/// Writes a queue type: lifecycle, Layout, and the raw put and get (the
/// API on them is written by `typed`, `waiting` and `zero_copy`).
macro_rules! named_queue {
    ($(#[$doc:meta])* $ty:ident, $kind:expr) => {
        $(#[$doc])*
        pub struct $ty<T> {
            pub(super) seg: Segment<Ring>,
            /// The ring's size, checked against the mapping once, at open:
            /// never read again from the segment.
            pub(super) cap: usize,
            /// What this handle last saw of the sides' words.
            cache: ring::Cache,
            _message: PhantomData<fn(T) -> T>,
        }

        impl<T: Serialize + DeserializeOwned> Layout for $ty<T> {
            type Object = Ring;
            type Params = QueueParams;
            const KIND: Kind = $kind;

            fn type_hash() -> u64 {
                segment::type_hash::<T>()
            }

            fn validate(name: &str, params: &QueueParams) -> Result<()> {
                validate(name, params)
            }

            fn trailing_bytes(params: &QueueParams) -> usize {
                params.capacity
            }

            unsafe fn init(object: *mut Ring, trailing: usize, _: &QueueParams) -> Result<()> {
                // The ring takes every byte the page rounding gave, down to
                // whole records.
                let capacity = (trailing / 8 * 8).min(ring::MAX_CAPACITY);
                // SAFETY: forwarded from the caller of Layout::init.
                unsafe { Ring::init(object, capacity) };
                Ok(())
            }

            fn check(ring: &Ring, trailing: usize) -> std::result::Result<(), String> {
                ring.check(trailing)
            }
        }

        impl<T: Serialize + DeserializeOwned> FromSegment for $ty<T> {
            fn from_segment(seg: Segment<Ring>) -> Self {
                let (_, trailing) = seg.trailing();
                let cap = seg.object().capacity().min(trailing) / 8 * 8;
                $ty { seg, cap, cache: ring::Cache::default(), _message: PhantomData }
            }
        }

        impl<T: Serialize + DeserializeOwned> Builder<$ty<T>> {
            /// The ring's size in bytes (default 64 KiB), rounded up by at
            /// most a page. Each message costs its encoded length plus at
            /// most 16 bytes.
            pub fn capacity(mut self, bytes: usize) -> Self {
                self.params_mut().capacity = bytes;
                self
            }
        }

        impl<T: Serialize + DeserializeOwned> $ty<T> {
            crate::named::lifecycle_fns!($ty { capacity: usize });

            pub(super) fn view(&self) -> View<'_> {
                let (data, _) = self.seg.trailing();
                View::new(self.seg.object(), data, self.cap, &self.cache)
            }

            fn corrupt(&self, detail: String) -> Error {
                Error::Corrupt { name: self.name().to_string(), detail }
            }

            fn put_error(&self, e: PutError, len: usize) -> Error {
                match e {
                    PutError::TooLarge { max } => Error::TooLarge { len, max },
                    PutError::Full | PutError::Busy => Error::Full { name: self.name().to_string() },
                    PutError::Corrupt(detail) => self.corrupt(detail),
                }
            }

            /// Puts `len` bytes that `fill` writes into the payload's pieces.
            pub(super) fn put_raw(&self, len: usize, deadline: Option<&Deadline>, fill: impl FnOnce(&mut [u8], &mut [u8])) -> Result<()> {
                let lock_by = lock_deadline(deadline);
                self.view().put(len, deadline, lock_by.as_ref(), fill).map_err(|e| self.put_error(e, len))
            }

            /// Takes the oldest message's payload, as `read` sees it.
            pub(super) fn get_raw<R>(&self, deadline: Option<&Deadline>, in_place: bool, read: impl FnMut(&[u8], &[u8]) -> R) -> Result<Option<R>> {
                let lock_by = lock_deadline(deadline);
                match self.view().get(deadline, lock_by.as_ref(), in_place, read) {
                    Ok(r) => Ok(Some(r)),
                    Err(GetError::Empty | GetError::Busy) => Ok(None),
                    Err(GetError::Corrupt(detail)) => Err(self.corrupt(detail)),
                }
            }
        }

        impl<T> std::fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty)).field("name", &self.seg.name()).field("ring", self.seg.object()).finish()
            }
        }
    };
}

named_queue!(
    /// A bounded, multi-producer, multi-consumer queue of `T` messages in a
    /// named segment (Python's `multiprocessing.Queue`).
    ///
    /// Messages are serde values encoded with postcard. Order is FIFO for
    /// each producer. A process killed inside `put` leaves its message wholly
    /// in the queue or not at all; one killed inside `get` may take the one
    /// message it was receiving; no other message is lost, duplicated,
    /// reordered or corrupted.
    ///
    /// ```
    /// let q = shmsync::Queue::<String>::new(4096)?;
    /// q.put(&"hello".to_string())?;
    /// assert_eq!(q.len(), 1);
    /// assert_eq!(q.get()?, "hello");
    /// assert_eq!(q.try_get()?, None);
    /// # Ok::<(), shmsync::Error>(())
    /// ```
    Queue,
    Kind::Queue
);

named_queue!(
    /// A [`Queue`] that also counts unfinished tasks (Python's
    /// `multiprocessing.JoinableQueue`): each `put` adds one, each
    /// [`task_done`](Self::task_done) removes one, and [`join`](Self::join)
    /// waits for zero.
    ///
    /// The tasks of a consumer that died stay unfinished, so a robust caller
    /// uses [`join_timeout`](Self::join_timeout).
    ///
    /// ```
    /// let q = shmsync::JoinableQueue::<u32>::new(4096)?;
    /// q.put(&1)?;
    /// let job = q.get()?;
    /// q.task_done()?;
    /// assert!(q.join_timeout(std::time::Duration::from_secs(1))?);
    /// # Ok::<(), shmsync::Error>(())
    /// ```
    JoinableQueue,
    Kind::JoinableQueue
);

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// Marks one task done. `TooManyTaskDone` if every task is done already.
    pub fn task_done(&self) -> Result<()> {
        if self.seg.object().task_done() {
            Ok(())
        } else {
            Err(Error::TooManyTaskDone { name: self.name().to_string() })
        }
    }

    /// Blocks until every task put has been marked done.
    pub fn join(&self) -> Result<()> {
        self.seg.object().join(None);
        Ok(())
    }

    /// Waits at most `timeout` for every task to be done; `Ok(false)` if
    /// some are still unfinished.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        Ok(self.seg.object().join(Some(&Deadline::after(timeout))))
    }

    /// Tasks put and not yet marked done.
    pub fn unfinished(&self) -> usize {
        self.seg.object().unfinished() as usize
    }
}
