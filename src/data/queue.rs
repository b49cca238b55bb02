//! `Queue<T>` and `JoinableQueue<T>`: bounded multi-producer, multi-consumer
//! queues of serde messages in a named segment (Python's
//! `multiprocessing.Queue` and `JoinableQueue`).

use std::cell::RefCell;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec;
use super::ring::{self, Bytes, PutError, Ring};
use crate::error::{Error, Result};
use crate::named::FromSegment;
use crate::segment::{self, Kind, Layout, Segment};
use crate::sys::time::Deadline;
use crate::Builder;

thread_local! {
    /// Encode and decode buffers, reused so a put or get allocates nothing
    /// once warm (beyond what decoding `T` itself needs).
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

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
    if params.capacity < 32 || params.capacity > ring::MAX_CAPACITY {
        return Err(Error::InvalidArgument {
            name: name.to_string(),
            detail: format!("a queue's capacity must be 32 to {} bytes, not {}", ring::MAX_CAPACITY, params.capacity),
        });
    }
    Ok(())
}

/// Writes a queue type: lifecycle, Layout, and the put/get API.
macro_rules! named_queue {
    ($(#[$doc:meta])* $ty:ident, $kind:expr) => {
        $(#[$doc])*
        pub struct $ty<T> {
            seg: Segment<Ring>,
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
                if ring.capacity() > trailing || ring.capacity() % 8 != 0 || ring.capacity() < 32 {
                    return Err(format!("its ring claims {} bytes but {trailing} are there", ring.capacity()));
                }
                Ok(())
            }
        }

        impl<T: Serialize + DeserializeOwned> FromSegment for $ty<T> {
            fn from_segment(seg: Segment<Ring>) -> Self {
                $ty { seg, _message: PhantomData }
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

            fn ring(&self) -> (&Ring, Bytes) {
                let ring = self.seg.object();
                let (ptr, _) = self.seg.trailing();
                (ring, Bytes { ptr, len: ring.capacity() })
            }

            fn put_until(&self, message: &T, deadline: Option<&Deadline>) -> Result<()> {
                BUFFER.with_borrow_mut(|buf| {
                    codec::encode_into(message, buf)?;
                    let (ring, bytes) = self.ring();
                    ring.put(bytes, buf, deadline).map_err(|e| match e {
                        PutError::TooLarge { max } => Error::TooLarge { len: buf.len(), max },
                        PutError::Full => Error::Full { name: self.name().to_string() },
                    })
                })
            }

            fn get_until(&self, deadline: Option<&Deadline>) -> Result<Option<T>> {
                BUFFER.with_borrow_mut(|buf| {
                    let (ring, bytes) = self.ring();
                    if ring.get(bytes, buf, deadline) {
                        codec::decode(buf).map(Some)
                    } else {
                        Ok(None)
                    }
                })
            }

            /// Puts a message, blocking while the queue is full.
            /// `TooLarge` at once, with the queue unchanged, for a message
            /// that could never fit.
            pub fn put(&self, message: &T) -> Result<()> {
                self.put_until(message, None)
            }

            /// Puts a message, waiting at most `timeout` for room: `Full` at
            /// the deadline, not before.
            pub fn put_timeout(&self, message: &T, timeout: Duration) -> Result<()> {
                self.put_until(message, Some(&Deadline::after(timeout)))
            }

            /// Puts a message if there is room now; `Full` otherwise.
            pub fn try_put(&self, message: &T) -> Result<()> {
                self.put_until(message, Some(&Deadline::after(Duration::ZERO)))
            }

            /// Takes the oldest message, blocking while the queue is empty.
            pub fn get(&self) -> Result<T> {
                self.get_until(None)?.ok_or(Error::Disconnected)
            }

            /// Takes the oldest message, waiting at most `timeout`;
            /// `Ok(None)` if none came.
            pub fn get_timeout(&self, timeout: Duration) -> Result<Option<T>> {
                self.get_until(Some(&Deadline::after(timeout)))
            }

            /// Takes the oldest message if there is one.
            pub fn try_get(&self) -> Result<Option<T>> {
                self.get_until(Some(&Deadline::after(Duration::ZERO)))
            }

            /// Messages in the queue now (a snapshot).
            pub fn len(&self) -> usize {
                self.seg.object().len()
            }

            /// Whether the queue is empty now (a snapshot).
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// The ring's size in bytes.
            pub fn capacity(&self) -> usize {
                self.seg.object().capacity()
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
