//! `Queue<T>` and `JoinableQueue<T>`: bounded multi-producer, multi-consumer
//! queues of serde messages in a named segment (Python's
//! `multiprocessing.Queue` and `JoinableQueue`).

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec;
use super::ring::{self, GetError, PutError, Ring, View};
use crate::error::{Error, Result};
use crate::named::FromSegment;
use crate::segment::{self, Kind, Layout, Segment};
use crate::sys::time::Deadline;
use crate::wait::future::{check, Op, Pending};
use crate::Builder;

thread_local! {
    /// This thread's encode/decode buffer, reused so a put or get allocates
    /// nothing once warm (beyond what decoding `T` itself needs). It is taken
    /// out while in use, so a serde impl that itself uses a queue on this
    /// thread gets a fresh one instead of a "borrowed twice" panic.
    static BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's buffer (or a fresh one, when it is in use).
fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
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

/// Writes a queue type: lifecycle, Layout, and the put/get API.
macro_rules! named_queue {
    ($(#[$doc:meta])* $ty:ident, $kind:expr) => {
        $(#[$doc])*
        pub struct $ty<T> {
            seg: Segment<Ring>,
            /// The ring's size, checked against the mapping once, at open:
            /// never read again from the segment.
            cap: usize,
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

            fn view(&self) -> View<'_> {
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
            fn put_raw(&self, len: usize, deadline: Option<&Deadline>, fill: impl FnOnce(&mut [u8], &mut [u8])) -> Result<()> {
                let lock_by = lock_deadline(deadline);
                self.view().put(len, deadline, lock_by.as_ref(), fill).map_err(|e| self.put_error(e, len))
            }

            /// Takes the oldest message's payload, as `read` sees it.
            fn get_raw<R>(&self, deadline: Option<&Deadline>, in_place: bool, read: impl FnMut(&[u8], &[u8]) -> R) -> Result<Option<R>> {
                let lock_by = lock_deadline(deadline);
                match self.view().get(deadline, lock_by.as_ref(), in_place, read) {
                    Ok(r) => Ok(Some(r)),
                    Err(GetError::Empty | GetError::Busy) => Ok(None),
                    Err(GetError::Corrupt(detail)) => Err(self.corrupt(detail)),
                }
            }

            fn put_until(&self, message: &T, deadline: Option<&Deadline>) -> Result<()> {
                with_buffer(|buf| {
                    codec::encode_into(message, buf)?;
                    self.put_raw(buf.len(), deadline, |a, b| {
                        a.copy_from_slice(&buf[..a.len()]);
                        b.copy_from_slice(&buf[a.len()..]);
                    })
                })
            }

            fn get_until(&self, deadline: Option<&Deadline>) -> Result<Option<T>> {
                with_buffer(|buf| {
                    // Copied out, then decoded after the commit and outside
                    // the lock: a decode error consumes the message, and a
                    // panicking Deserialize cannot wedge the queue.
                    let got = self.get_raw(deadline, false, |a, b| {
                        buf.clear();
                        buf.extend_from_slice(a);
                        buf.extend_from_slice(b);
                    })?;
                    got.map(|()| codec::decode(buf)).transpose()
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
                self.cap
            }

            /// The queue as a [`Waitable`](crate::Waitable) that is ready
            /// while a message is there, for [`wait_any`](crate::wait_any).
            /// It takes nothing: get the message with `try_get`.
            pub fn readable(&self) -> crate::wait::Readable<'_> {
                crate::wait::Readable::new(self.view())
            }

            /// The queue as a [`Waitable`](crate::Waitable) that is ready
            /// while room for a small message (8 encoded bytes) is free.
            pub fn writable(&self) -> crate::wait::Writable<'_> {
                crate::wait::Writable::new(self.view())
            }

            /// Takes the oldest message, asynchronously: the future completes
            /// with it once one is there. Dropping the future before that
            /// takes nothing. Works with any runtime (see [`wait`](crate::wait)).
            pub fn get_async(&self) -> impl std::future::Future<Output = Result<T>> + Send + '_
            where
                T: Send,
            {
                Pending::new(GetOp::<T> { view: self.view(), name: self.name(), busy: false, _message: PhantomData })
            }

            /// Puts a message, asynchronously: the future completes once it
            /// is in the queue. Dropping the future before that puts
            /// nothing. `TooLarge` at once for a message that could never fit.
            pub fn put_async<'a>(&'a self, message: &'a T) -> impl std::future::Future<Output = Result<()>> + Send + 'a
            where
                T: Sync,
            {
                Pending::new(PutOp { view: self.view(), name: self.name(), message, need: 0, busy: false })
            }
        }

        impl $ty<Vec<u8>> {
            /// Puts a message of `len` bytes that `write` writes straight
            /// into the ring (zero-copy; the same message a `put(&vec)` of
            /// those bytes would be). Blocks while the queue is full.
            ///
            /// A process killed inside `write` commits nothing; a panic in it
            /// commits nothing and is passed on. The one message in a lap of
            /// the ring that is too large to sit in one piece at its end is
            /// written into a buffer first and copied.
            pub fn put_with(&self, len: usize, write: impl FnOnce(&mut [u8])) -> Result<()> {
                self.put_with_until(len, None, write)
            }

            /// As [`put_with`](Self::put_with), waiting at most `timeout`
            /// for room (`Full` at the deadline, and `write` is not called).
            pub fn put_with_timeout(&self, len: usize, timeout: Duration, write: impl FnOnce(&mut [u8])) -> Result<()> {
                self.put_with_until(len, Some(&Deadline::after(timeout)), write)
            }

            fn put_with_until(&self, len: usize, deadline: Option<&Deadline>, write: impl FnOnce(&mut [u8])) -> Result<()> {
                // The frame is postcard's encoding of a Vec<u8>: its length
                // as a varint, then the bytes.
                let mut prefix = [0u8; 10];
                let prefix = postcard::to_slice(&len, &mut prefix).map_err(|e| Error::Encode { detail: e.to_string() })?;
                let total = prefix.len() + len;
                self.put_raw(total, deadline, |a, b| {
                    if b.is_empty() {
                        a[..prefix.len()].copy_from_slice(prefix);
                        write(&mut a[prefix.len()..]);
                    } else {
                        let mut frame = vec![0u8; total];
                        frame[..prefix.len()].copy_from_slice(prefix);
                        write(&mut frame[prefix.len()..]);
                        a.copy_from_slice(&frame[..a.len()]);
                        b.copy_from_slice(&frame[a.len()..]);
                    }
                })
            }

            /// Takes the oldest message and hands its bytes to `read` where
            /// they lie in the ring (zero-copy), blocking while the queue is
            /// empty. Returns what `read` returns.
            ///
            /// A process killed inside `read` loses that message, which is
            /// never delivered again; no other message is affected. A message
            /// that is not a byte string (put by a build with another type)
            /// is consumed and reported as `Decode`.
            pub fn get_with<R>(&self, read: impl FnOnce(&[u8]) -> R) -> Result<R> {
                self.get_with_until(None, read)?.ok_or(Error::Disconnected)
            }

            /// As [`get_with`](Self::get_with), waiting at most `timeout`;
            /// `Ok(None)` (and `read` is not called) if none came.
            pub fn get_with_timeout<R>(&self, timeout: Duration, read: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
                self.get_with_until(Some(&Deadline::after(timeout)), read)
            }

            fn get_with_until<R>(&self, deadline: Option<&Deadline>, read: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
                let mut read = Some(read);
                let got = self.get_raw(deadline, true, |a, b| {
                    let read = read.take().expect("a record is read once");
                    if b.is_empty() {
                        frame_bytes(a).map(read)
                    } else {
                        let joined = [a, b].concat();
                        frame_bytes(&joined).map(read)
                    }
                })?;
                got.transpose()
            }
        }

        impl<T> std::fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty)).field("name", &self.seg.name()).field("ring", self.seg.object()).finish()
            }
        }
    };
}

/// A deadline that has passed: an async attempt never waits.
fn now() -> Deadline {
    Deadline::after(Duration::ZERO)
}

/// The op of `get_async`.
struct GetOp<'a, T> {
    view: View<'a>,
    name: &'a str,
    /// The last attempt found the consumers' lock held.
    busy: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Op for GetOp<'_, T> {
    type Output = Result<T>;

    fn attempt(&mut self) -> std::task::Poll<Result<T>> {
        use std::task::Poll;
        let now = now();
        with_buffer(|buf| {
            let got = self.view.get(Some(&now), Some(&now), false, |a, b| {
                buf.clear();
                buf.extend_from_slice(a);
                buf.extend_from_slice(b);
            });
            self.busy = matches!(got, Err(GetError::Busy));
            match got {
                Ok(()) => Poll::Ready(codec::decode(buf)),
                Err(GetError::Empty | GetError::Busy) => Poll::Pending,
                Err(GetError::Corrupt(detail)) => {
                    Poll::Ready(Err(Error::Corrupt { name: self.name.to_string(), detail }))
                }
            }
        })
    }

    fn arm(&mut self) -> Option<crate::wait::future::Watch> {
        if self.busy {
            let (word, expected) = self.view.arm_lock(false)?;
            return Some(crate::wait::future::Watch { word, expected, check: None });
        }
        let (word, expected) = self.view.arm_readable()?;
        // A producer killed between its commit and its wake: the re-check
        // slice finds the message.
        let there = check(self.view.ring(), (), |ring: &Ring, _: &()| ring.has_message());
        Some(crate::wait::future::Watch { word, expected, check: Some(there) })
    }

    fn cancel(&mut self) {
        self.view.pass_on_readable();
    }
}

/// The op of `put_async`.
struct PutOp<'a, T> {
    view: View<'a>,
    name: &'a str,
    message: &'a T,
    /// The encoded length the last attempt found no room for.
    need: usize,
    /// The last attempt found the producers' lock held.
    busy: bool,
}

impl<T: Serialize> Op for PutOp<'_, T> {
    type Output = Result<()>;

    fn attempt(&mut self) -> std::task::Poll<Result<()>> {
        use std::task::Poll;
        let now = now();
        with_buffer(|buf| {
            if let Err(e) = codec::encode_into(self.message, buf) {
                return Poll::Ready(Err(e));
            }
            let put = self.view.put(buf.len(), Some(&now), Some(&now), |a, b| {
                a.copy_from_slice(&buf[..a.len()]);
                b.copy_from_slice(&buf[a.len()..]);
            });
            self.need = buf.len();
            self.busy = matches!(put, Err(PutError::Busy));
            match put {
                Ok(()) => Poll::Ready(Ok(())),
                Err(PutError::Full | PutError::Busy) => Poll::Pending,
                Err(PutError::TooLarge { max }) => Poll::Ready(Err(Error::TooLarge { len: buf.len(), max })),
                Err(PutError::Corrupt(detail)) => {
                    Poll::Ready(Err(Error::Corrupt { name: self.name.to_string(), detail }))
                }
            }
        })
    }

    fn arm(&mut self) -> Option<crate::wait::future::Watch> {
        if self.busy {
            let (word, expected) = self.view.arm_lock(true)?;
            return Some(crate::wait::future::Watch { word, expected, check: None });
        }
        let (word, expected) = self.view.arm_room(self.need)?;
        let room =
            check(self.view.ring(), (self.view.capacity(), self.need), |ring: &Ring, &(cap, need): &(usize, usize)| {
                ring.has_room_for(cap, need)
            });
        Some(crate::wait::future::Watch { word, expected, check: Some(room) })
    }
}

/// The bytes of a `Vec<u8>` message's frame (its varint length checked).
fn frame_bytes(frame: &[u8]) -> Result<&[u8]> {
    let (len, rest): (usize, &[u8]) =
        postcard::take_from_bytes(frame).map_err(|e| Error::Decode { detail: e.to_string() })?;
    if len != rest.len() {
        return Err(Error::Decode { detail: format!("a {}-byte frame announces {len} bytes", rest.len()) });
    }
    Ok(rest)
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
