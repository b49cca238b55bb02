//! Put and get of `T` messages, encoded through the thread's buffer, in
//! their blocking, timed and try forms; and the queue's snapshots.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::handle::{with_buffer, JoinableQueue, Queue};
use crate::data::codec;
use crate::error::{Error, Result};
use crate::sys::time::Deadline;

/// Writes the typed put and get of a queue type.
macro_rules! typed_api {
    ($ty:ident) => {
        impl<T: Serialize + DeserializeOwned> $ty<T> {
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
        }
    };
}

typed_api!(Queue);
typed_api!(JoinableQueue);
