//! The receiving half of a [`Connection`](super::Connection): the bytes read
//! and not yet returned, and the frames taken off them.
//!
//! ```text
//! buf:  [ consumed | start .. frames and the start of the next .. | spare ]
//!                    ^ start                                      ^ len
//! ```
//! - A frame is taken by moving `start` past it; the backlog behind it is
//!   never moved. Only the unconsumed tail of at most one partial frame is
//!   moved to the front, when the buffer needs room.
//! - A frame of [`BIG`] bytes or more whose payload has not arrived yet is
//!   read straight into a vector of its own (`big`), so it is copied once.
//! - An oversized frame is thrown away as it arrives (`skip`), keeping the
//!   channel in step.
//! - A header with [`FD_FLAG`] and no payload announces a descriptor sent
//!   with `SCM_RIGHTS`. The kernel hands a descriptor to the read that brings
//!   the first byte of its message, so each arrival is recorded with the
//!   stream range that read covered: the descriptor frame claims the arrival
//!   its header starts in; an arrival no descriptor frame claims (one sent
//!   beside an ordinary message) is closed as soon as the frames of its
//!   range are taken.

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, OwnedFd};

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::sys::socket;

/// The frame header: an 8-byte little-endian length.
pub const HEADER: usize = 8;
/// Set in a header for a descriptor frame (no payload).
pub const FD_FLAG: u64 = 1 << 63;
/// How much one read asks for.
const READ_CHUNK: usize = 64 << 10;
/// Frames at least this large are read into their own vector.
const BIG: usize = 64 << 10;

/// A frame taken off the buffer.
pub enum Taken {
    /// A payload at `buf[from..to]`, valid until the next take or fill.
    Range(usize, usize),
    /// A large payload, read into its own vector.
    Owned(Vec<u8>),
    /// A descriptor frame, with the descriptor if one arrived for it.
    Fd(Option<OwnedFd>),
}

/// Descriptors that arrived with the stream bytes `from..to`.
struct Arrival {
    from: u64,
    to: u64,
    fds: Vec<OwnedFd>,
}

/// What a fill read.
pub enum Filled {
    /// Some bytes.
    Data,
    /// Nothing yet (a non-blocking read).
    WouldBlock,
}

/// The receive state; see the module docs.
#[derive(Default)]
pub struct Rx {
    buf: Vec<u8>,
    start: usize,
    /// Stream offset of the next unconsumed byte.
    consumed: u64,
    /// Stream offset just past the last byte received.
    received: u64,
    /// A large frame's payload so far, its full length, and the stream
    /// offset of its header.
    big: Option<(Vec<u8>, usize, u64)>,
    /// Bytes still to throw away of an oversized frame.
    skip: u64,
    arrivals: VecDeque<Arrival>,
    /// The peer closed or died.
    pub closed: bool,
}

impl Rx {
    /// The payload of a [`Taken::Range`].
    pub fn slice(&self, from: usize, to: usize) -> &[u8] {
        &self.buf[from..to]
    }

    fn available(&self) -> usize {
        self.buf.len() - self.start
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.consumed += n as u64;
    }

    /// Whether a take would return a frame or an error without reading.
    pub fn has_frame(&self, max: usize) -> bool {
        if let Some((v, len, _)) = &self.big {
            return v.len() == *len;
        }
        let skip = usize::try_from(self.skip).unwrap_or(usize::MAX);
        if self.available() < skip.saturating_add(HEADER) {
            return false;
        }
        let at = self.start + skip;
        let raw = u64::from_le_bytes(self.buf[at..at + HEADER].try_into().unwrap_or([0; HEADER]));
        let len = raw & !FD_FLAG;
        raw & FD_FLAG != 0 || len > max as u64 || (self.available() - skip - HEADER) as u64 >= len
    }

    /// Takes the next frame if it is complete: `Ok(None)` if more bytes are
    /// needed. A frame over `max` is `TooLarge` and is discarded.
    pub fn take(&mut self, max: usize) -> Result<Option<Taken>> {
        if self.skip > 0 {
            let n = self.skip.min(self.available() as u64) as usize;
            self.consume(n);
            self.skip -= n as u64;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        if let Some((v, len, at)) = &self.big {
            if v.len() < *len {
                return Ok(None);
            }
            let (at, end) = (*at, *at + (HEADER + *len) as u64);
            let (v, _, _) = self.big.take().unwrap_or_default();
            self.release(at, end);
            return Ok(Some(Taken::Owned(v)));
        }
        if self.available() < HEADER {
            return Ok(None);
        }
        let at = self.consumed;
        let raw = u64::from_le_bytes(self.buf[self.start..self.start + HEADER].try_into().unwrap_or([0; HEADER]));
        let len = raw & !FD_FLAG;
        if raw & FD_FLAG != 0 {
            self.consume(HEADER);
            let fd = self.claim(at);
            if len != 0 {
                self.skip = len;
                return Err(Error::Decode { detail: "a descriptor frame with a payload".to_string() });
            }
            return Ok(Some(Taken::Fd(fd)));
        }
        if len > max as u64 {
            self.consume(HEADER);
            self.skip = len;
            self.release(at, at.saturating_add(HEADER as u64).saturating_add(len));
            let n = self.skip.min(self.available() as u64) as usize;
            self.consume(n);
            self.skip -= n as u64;
            return Err(Error::TooLarge { len: usize::try_from(len).unwrap_or(usize::MAX), max });
        }
        let len = len as usize;
        let end = at + (HEADER + len) as u64;
        if self.available() >= HEADER + len {
            let from = self.start + HEADER;
            self.consume(HEADER + len);
            self.release(at, end);
            return Ok(Some(Taken::Range(from, from + len)));
        }
        if len >= BIG {
            // Read the rest straight into the frame's own vector.
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(&self.buf[self.start + HEADER..]);
            let n = self.available();
            self.consume(n);
            self.big = Some((v, len, at));
        }
        Ok(None)
    }

    /// An ordinary frame at stream bytes `at..end` was taken: descriptors
    /// that came with its bytes, and that no later frame of the same read can
    /// claim, are closed.
    fn release(&mut self, at: u64, end: u64) {
        self.expire(at);
        if self.arrivals.front().is_some_and(|a| a.from <= at && end >= a.to) {
            self.arrivals.pop_front();
        }
    }

    /// A descriptor frame starts at `at`: the descriptor that arrived with
    /// it, if any. Extra descriptors sent with it are closed.
    fn claim(&mut self, at: u64) -> Option<OwnedFd> {
        self.expire(at);
        if self.arrivals.front().is_some_and(|a| a.from <= at && at < a.to) {
            return self.arrivals.pop_front().and_then(|a| a.fds.into_iter().next());
        }
        None
    }

    /// Closes arrivals wholly before stream offset `at`: no frame left can
    /// claim them.
    fn expire(&mut self, at: u64) {
        while self.arrivals.front().is_some_and(|a| a.to <= at) {
            self.arrivals.pop_front();
        }
    }

    /// Reads what the socket has. `wait`: block until something comes.
    /// `unix`: catch descriptors (a Unix socket), else none can come. At end
    /// of file `closed` is set and any partial frame is dropped: it was cut
    /// by the peer's close or death.
    pub fn fill(&mut self, fd: BorrowedFd<'_>, wait: bool, unix: bool) -> Result<Filled> {
        let mut fds = Vec::new();
        let catch = if unix { Some(&mut fds) } else { None };
        let read = match &mut self.big {
            Some((v, len, _)) => {
                let want = *len - v.len();
                socket::recv_append(fd, v, want, wait, catch)
            }
            None => {
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                } else if self.start > 0 && self.buf.capacity() - self.buf.len() < READ_CHUNK {
                    // Move the partial frame at the end to the front.
                    self.buf.copy_within(self.start.., 0);
                    self.buf.truncate(self.buf.len() - self.start);
                    self.start = 0;
                }
                socket::recv_append(fd, &mut self.buf, READ_CHUNK, wait, catch)
            }
        };
        let n = match read {
            Ok(n) => n,
            Err(Errno::EAGAIN) => return Ok(Filled::WouldBlock),
            Err(Errno::ECONNRESET) => 0,
            Err(e) => return Err(Error::os("recv", "connection", e)),
        };
        if !fds.is_empty() {
            self.arrivals.push_back(Arrival { from: self.received, to: self.received + n.max(1) as u64, fds });
        }
        self.received += n as u64;
        if n == 0 {
            self.closed = true;
            self.consumed += self.available() as u64;
            self.buf.clear();
            self.start = 0;
            self.big = None;
            self.skip = 0;
            self.arrivals.clear();
        }
        Ok(Filled::Data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn taking_frames_off_a_backlog_never_moves_it() {
        let mut rx = Rx::default();
        for i in 0..1000u32 {
            rx.buf.extend_from_slice(&frame(&i.to_le_bytes()));
        }
        let base = rx.buf.as_ptr();
        for i in 0..1000u32 {
            let Some(Taken::Range(from, to)) = rx.take(1 << 20).unwrap() else { panic!("frame {i} missing") };
            // The frame is read where it arrived: nothing behind it moved.
            assert_eq!(from, i as usize * 12 + HEADER);
            assert_eq!(rx.slice(from, to), i.to_le_bytes());
            assert_eq!(rx.buf.as_ptr(), base);
            assert_eq!(rx.buf.len(), 12_000);
        }
        assert!(rx.take(1 << 20).unwrap().is_none());
    }

    #[test]
    fn an_oversized_frame_is_skipped_and_the_next_one_taken() {
        let mut rx = Rx::default();
        rx.buf.extend_from_slice(&frame(&[1; 100]));
        rx.buf.extend_from_slice(&frame(&[2; 3]));
        assert!(matches!(rx.take(10), Err(Error::TooLarge { len: 100, max: 10 })));
        let Some(Taken::Range(from, to)) = rx.take(10).unwrap() else { panic!() };
        assert_eq!(rx.slice(from, to), [2; 3]);
    }
}
