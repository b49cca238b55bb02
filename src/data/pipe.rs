//! `pipe()` and `pipe_oneway()`: message channels over a Unix socket pair
//! (Python's `multiprocessing.Pipe`).
//!
//! A frame is an 8-byte little-endian length and that many bytes of payload.
//! Writes send a whole frame under the send lock; reads keep partial frames
//! in the connection between calls, so a timeout mid-frame loses nothing and
//! a peer killed mid-frame is `Disconnected`, never half a message.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec;
use crate::error::{Error, Result};
use crate::sys::socket;
use crate::sys::time::Deadline;

/// The default largest frame, in bytes: 64 MiB.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;
const HEADER: usize = 8;
const READ_CHUNK: usize = 64 << 10;

/// What the receiving side holds between calls.
#[derive(Default)]
struct Rx {
    /// Bytes received and not yet returned: the start of the next frame(s).
    buf: Vec<u8>,
    /// Bytes still to throw away of an oversized frame.
    skip: u64,
    /// The peer closed or died.
    closed: bool,
}

/// One end of a [`pipe`]: send and receive messages.
///
/// Every call on a connection whose peer closed or died is
/// `Err(Error::Disconnected)`; it never hangs and never raises `SIGPIPE`.
/// The handle is `Send + Sync`; concurrent senders never interleave frames.
pub struct Connection {
    fd: OwnedFd,
    rx: Mutex<Rx>,
    tx: Mutex<Vec<u8>>,
    max_frame: AtomicUsize,
}

/// The receiving end of a [`pipe_oneway`].
pub struct Receiver(Connection);

/// The sending end of a [`pipe_oneway`].
pub struct Sender(Connection);

/// A duplex pipe: two connected [`Connection`]s (Python's `Pipe()`).
///
/// ```
/// let (parent, child) = shmsync::pipe()?;
/// child.send(&(42u32, None::<u8>, "hello".to_string()))?;
/// let got: (u32, Option<u8>, String) = parent.recv()?;
/// assert_eq!(got, (42, None, "hello".to_string()));
/// # Ok::<(), shmsync::Error>(())
/// ```
pub fn pipe() -> Result<(Connection, Connection)> {
    let (a, b) = socket::pair().map_err(|e| Error::os("socketpair", "pipe", e))?;
    Ok((Connection::new(a), Connection::new(b)))
}

/// A one-way pipe: `(receiver, sender)`, as Python's `Pipe(duplex=False)`.
pub fn pipe_oneway() -> Result<(Receiver, Sender)> {
    let (r, s) = pipe()?;
    Ok((Receiver(r), Sender(s)))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these leaves only buffers behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Connection {
    fn new(fd: OwnedFd) -> Connection {
        Connection {
            fd,
            rx: Mutex::new(Rx::default()),
            tx: Mutex::new(Vec::new()),
            max_frame: AtomicUsize::new(DEFAULT_MAX_FRAME),
        }
    }

    /// Sets the largest frame this end sends or accepts (default 64 MiB).
    pub fn set_max_frame(&self, bytes: usize) {
        self.max_frame.store(bytes, Ordering::Relaxed);
    }

    /// The largest frame this end sends or accepts.
    pub fn max_frame(&self) -> usize {
        self.max_frame.load(Ordering::Relaxed)
    }

    /// Sends a message. `TooLarge` (nothing sent) over the frame limit.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let mut buf = lock(&self.tx);
        codec::encode_into(value, &mut buf)?;
        self.send_frame(&buf)
    }

    /// Sends raw bytes as one message.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        let _tx = lock(&self.tx);
        self.send_frame(bytes)
    }

    /// Writes one frame; the caller holds the send lock.
    fn send_frame(&self, payload: &[u8]) -> Result<()> {
        let max = self.max_frame();
        if payload.len() > max {
            return Err(Error::TooLarge { len: payload.len(), max });
        }
        let header = (payload.len() as u64).to_le_bytes();
        socket::send_all(&self.fd, &header, payload).map_err(|e| match e {
            Errno::EPIPE | Errno::ECONNRESET => Error::Disconnected,
            e => Error::os("send", "pipe", e),
        })
    }

    /// Receives a message, blocking until one arrives.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        codec::decode(&self.recv_bytes()?)
    }

    /// Receives a message, waiting at most `timeout`; `Ok(None)` if none came.
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<Option<T>> {
        self.recv_bytes_timeout(timeout)?.map(|b| codec::decode(&b)).transpose()
    }

    /// Receives one message's raw bytes.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.recv_frame(None)?.ok_or(Error::Disconnected)
    }

    /// Receives one message's raw bytes, waiting at most `timeout`.
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        self.recv_frame(Some(&Deadline::after(timeout)))
    }

    /// Whether a message (or the peer's death) is waiting, waiting at most
    /// `timeout` for one.
    pub fn poll(&self, timeout: Duration) -> Result<bool> {
        let rx = lock(&self.rx);
        if rx.closed || complete_frame_len(&rx.buf).is_some() {
            return Ok(true);
        }
        socket::wait_readable(&self.fd, Some(&Deadline::after(timeout))).map_err(|e| Error::os("poll", "pipe", e))
    }

    /// The one receive path: returns a whole frame, `None` at the deadline.
    fn recv_frame(&self, deadline: Option<&Deadline>) -> Result<Option<Vec<u8>>> {
        let mut rx = lock(&self.rx);
        loop {
            if let Some(frame) = self.take_frame(&mut rx)? {
                return Ok(Some(frame));
            }
            if rx.closed {
                return Err(Error::Disconnected);
            }
            let ready = socket::wait_readable(&self.fd, deadline).map_err(|e| Error::os("poll", "pipe", e))?;
            if !ready {
                return Ok(None);
            }
            self.fill(&mut rx)?;
        }
    }

    /// Takes a complete frame off the buffer, discarding oversized ones.
    fn take_frame(&self, rx: &mut Rx) -> Result<Option<Vec<u8>>> {
        if rx.skip > 0 {
            let n = rx.skip.min(rx.buf.len() as u64) as usize;
            rx.buf.drain(..n);
            rx.skip -= n as u64;
            if rx.skip > 0 {
                return Ok(None);
            }
        }
        let Some(len) = frame_len(&rx.buf) else { return Ok(None) };
        let max = self.max_frame();
        if len > max as u64 {
            // Throw the whole frame away as it arrives; the channel stays in step.
            rx.buf.drain(..HEADER);
            rx.skip = len;
            let n = rx.skip.min(rx.buf.len() as u64) as usize;
            rx.buf.drain(..n);
            rx.skip -= n as u64;
            return Err(Error::TooLarge { len: usize::try_from(len).unwrap_or(usize::MAX), max });
        }
        let len = len as usize;
        if rx.buf.len() < HEADER + len {
            return Ok(None);
        }
        let frame = rx.buf[HEADER..HEADER + len].to_vec();
        rx.buf.drain(..HEADER + len);
        Ok(Some(frame))
    }

    /// Reads what the socket has into the buffer.
    fn fill(&self, rx: &mut Rx) -> Result<()> {
        let want = match frame_len(&rx.buf) {
            // Read the rest of a large frame in one go where possible.
            Some(len) if rx.skip == 0 && len <= self.max_frame() as u64 => {
                (HEADER + len as usize).saturating_sub(rx.buf.len()).max(READ_CHUNK)
            }
            _ => READ_CHUNK,
        };
        let n = match socket::recv_append(&self.fd, &mut rx.buf, want) {
            Ok(n) => n,
            Err(Errno::ECONNRESET) => 0,
            Err(e) => return Err(Error::os("recv", "pipe", e)),
        };
        if n == 0 {
            // A partial frame at EOF was cut by the peer's death: drop it.
            rx.closed = true;
            rx.buf.clear();
        }
        Ok(())
    }
}

fn frame_len(buf: &[u8]) -> Option<u64> {
    buf.get(..HEADER).map(|h| u64::from_le_bytes(h.try_into().unwrap_or([0; HEADER])))
}

fn complete_frame_len(buf: &[u8]) -> Option<u64> {
    frame_len(buf).filter(|&len| buf.len() as u64 >= HEADER as u64 + len)
}

impl std::os::fd::AsFd for Connection {
    /// The socket, e.g. to wait on several connections with `poll`. Reading
    /// or writing it directly bypasses the framing.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("fd", &self.fd).field("max_frame", &self.max_frame()).finish()
    }
}

impl Receiver {
    /// As [`Connection::recv`].
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.0.recv()
    }
    /// As [`Connection::recv_timeout`].
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<Option<T>> {
        self.0.recv_timeout(timeout)
    }
    /// As [`Connection::recv_bytes`].
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.0.recv_bytes()
    }
    /// As [`Connection::recv_bytes_timeout`].
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        self.0.recv_bytes_timeout(timeout)
    }
    /// As [`Connection::poll`].
    pub fn poll(&self, timeout: Duration) -> Result<bool> {
        self.0.poll(timeout)
    }
    /// As [`Connection::set_max_frame`].
    pub fn set_max_frame(&self, bytes: usize) {
        self.0.set_max_frame(bytes)
    }
}

impl Sender {
    /// As [`Connection::send`].
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.0.send(value)
    }
    /// As [`Connection::send_bytes`].
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.0.send_bytes(bytes)
    }
    /// As [`Connection::set_max_frame`].
    pub fn set_max_frame(&self, bytes: usize) {
        self.0.set_max_frame(bytes)
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Receiver").field(&self.0).finish()
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Sender").field(&self.0).finish()
    }
}
