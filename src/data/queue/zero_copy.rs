//! Zero-copy put and get of byte messages (`Vec<u8>`): the payload is
//! written and read where it lies in the ring, in the frame postcard gives
//! a `Vec<u8>` (so it is the same message a `put` of those bytes makes).

use std::time::Duration;

use super::handle::{JoinableQueue, Queue};
use crate::error::{Error, Result};
use crate::sys::time::Deadline;

/// Writes the zero-copy calls of a queue type.
macro_rules! zero_copy_api {
    ($ty:ident) => {
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

            fn put_with_until(
                &self,
                len: usize,
                deadline: Option<&Deadline>,
                write: impl FnOnce(&mut [u8]),
            ) -> Result<()> {
                // The frame is postcard's encoding of a Vec<u8>: its length
                // as a varint, then the bytes.
                let mut prefix = [0u8; 10];
                let prefix =
                    postcard::to_slice(&len, &mut prefix).map_err(|e| Error::Encode { detail: e.to_string() })?;
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
            /// A process killed inside `read`, or a `read` that panics (the
            /// panic goes on, with the queue's lock released), loses that
            /// message, which is never delivered again; no other message is
            /// affected. A message
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

            fn get_with_until<R>(
                &self,
                deadline: Option<&Deadline>,
                read: impl FnOnce(&[u8]) -> R,
            ) -> Result<Option<R>> {
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
    };
}

zero_copy_api!(Queue);
zero_copy_api!(JoinableQueue);

/// The bytes of a `Vec<u8>` message's frame (its varint length checked).
fn frame_bytes(frame: &[u8]) -> Result<&[u8]> {
    let (len, rest): (usize, &[u8]) =
        postcard::take_from_bytes(frame).map_err(|e| Error::Decode { detail: e.to_string() })?;
    if len != rest.len() {
        return Err(Error::Decode { detail: format!("a {}-byte frame announces {len} bytes", rest.len()) });
    }
    Ok(rest)
}
