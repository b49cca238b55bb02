//! A queue waited on without a thread blocked in a call: as a `Waitable`
//! for `wait_any`, and as the futures of `get_async` and `put_async`.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::handle::{with_buffer, JoinableQueue, Queue};
use crate::data::codec;
use crate::data::ring::{GetError, PutError, Ring, View};
use crate::error::{Error, Result};
use crate::raw::RawLock;
use crate::sys::time::Deadline;
use crate::wait::future::{check, Op, Pending};

/// Writes the waits of a queue type.
macro_rules! waiting_api {
    ($ty:ident) => {
        impl<T: Serialize + DeserializeOwned> $ty<T> {
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
    };
}

waiting_api!(Queue);
waiting_api!(JoinableQueue);

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
            return watch_lock(&self.view, false);
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

/// A watch on one side's lock (`producers`, or the consumers'), found held:
/// its unlock wakes the future, and the re-check slice recovers a holder
/// that is gone without the kernel marking it (or a word no attempt could
/// take), as a blocking call's slice would.
fn watch_lock(view: &View<'_>, producers: bool) -> Option<crate::wait::future::Watch> {
    let lock = view.side_lock(producers);
    let (word, expected) = lock.arm()?;
    let stuck = check(lock, (), |lock: &RawLock, _: &()| lock.recover_if_stuck());
    Some(crate::wait::future::Watch { word, expected, check: Some(stuck) })
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
            return watch_lock(&self.view, true);
        }
        let (word, expected) = self.view.arm_room(self.need)?;
        let room =
            check(self.view.ring(), (self.view.capacity(), self.need), |ring: &Ring, &(cap, need): &(usize, usize)| {
                ring.has_room_for(cap, need)
            });
        Some(crate::wait::future::Watch { word, expected, check: Some(room) })
    }
}
