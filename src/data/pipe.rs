//! `pipe()` and `pipe_oneway()`: message channels over a Unix socket pair
//! (Python's `multiprocessing.Pipe`), and the [`Connection`] they give.
//!
//! A frame is an 8-byte little-endian length and that many bytes of payload.
//! Writes send a whole frame under the send lock. Reads keep partial frames
//! in the connection between calls (see `rx.rs`), so a timeout mid-frame
//! loses nothing and a peer killed mid-frame is `Disconnected`, never half a
//! message.
//!
//! Receiving is one reader at a time: the receive state is a baton
//! ([`Gate`]) that a receiver takes, with its deadline, and gives back. A
//! thread blocked in `recv` holds the baton but no lock, so another thread's
//! `recv_timeout` or `poll` still ends at its own deadline. A blocking
//! receive makes one `recv(2)`; a timed one tries a non-blocking `recv(2)`
//! first and polls only when nothing is there.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec;
use super::gate::Gate;
use super::rx::{Filled, Rx, Taken, FD_FLAG};
use crate::error::{Error, Result};
use crate::sys::socket;
use crate::sys::time::Deadline;

/// The default largest frame, in bytes: 64 MiB.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// What a connection runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// A Unix stream socket: `pipe()`, or a Unix-path or abstract address.
    Unix,
    /// A TCP stream.
    #[cfg_attr(not(feature = "connection"), allow(dead_code))]
    Tcp,
}

/// One end of a [`pipe`]: send and receive messages.
///
/// Every call on a connection whose peer closed or died is
/// `Err(Error::Disconnected)`; it never hangs and never raises `SIGPIPE`.
/// The handle is `Send + Sync`; concurrent senders never interleave frames,
/// and every timed call ends at its deadline whatever other threads do.
pub struct Connection {
    pub(super) fd: OwnedFd,
    transport: Transport,
    rx: Gate<Rx>,
    pub(super) tx: Mutex<Vec<u8>>,
    max_frame: AtomicUsize,
}

/// The receiving end of a [`pipe_oneway`].
pub struct Receiver(Connection);

/// The sending end of a [`pipe_oneway`].
pub struct Sender(Connection);

/// A duplex pipe: two connected [`Connection`]s (Python's `Pipe()`).
///
/// A child forked later inherits both ends, as under Python's fork start
/// method; a peer counts as gone only once every process holding its end
/// has closed it. Workers of a [`Pool`](crate::Pool) made after the pipe
/// hold it too, until the pool is joined or terminated.
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
    Ok((Connection::new(a, Transport::Unix), Connection::new(b, Transport::Unix)))
}

/// A one-way pipe: `(receiver, sender)`, as Python's `Pipe(duplex=False)`.
pub fn pipe_oneway() -> Result<(Receiver, Sender)> {
    let (r, s) = pipe()?;
    Ok((Receiver(r), Sender(s)))
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these leaves only buffers behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Connection {
    pub(crate) fn new(fd: OwnedFd, transport: Transport) -> Connection {
        Connection {
            fd,
            transport,
            rx: Gate::new(Rx::default()),
            tx: Mutex::new(Vec::new()),
            max_frame: AtomicUsize::new(DEFAULT_MAX_FRAME),
        }
    }

    /// Sets the largest frame this end sends or accepts (default 64 MiB).
    pub fn set_max_frame(&self, bytes: usize) {
        self.max_frame.store(bytes.min((FD_FLAG - 1) as usize), Ordering::Relaxed);
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
        socket::send_all(self.fd.as_fd(), &header, payload).map_err(send_error)
    }

    /// Receives a message, blocking until one arrives.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.recv_with(None, |rx, taken| decode(rx, taken))?.ok_or(Error::Disconnected)
    }

    /// Receives a message, waiting at most `timeout`; `Ok(None)` if none came.
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<Option<T>> {
        self.recv_with(Some(&Deadline::after(timeout)), |rx, taken| decode(rx, taken))
    }

    /// Receives one message's raw bytes.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.recv_with(None, bytes)?.ok_or(Error::Disconnected)
    }

    /// Receives one message's raw bytes, waiting at most `timeout`.
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        self.recv_with(Some(&Deadline::after(timeout)), bytes)
    }

    /// Whether a message (or the peer's death) is waiting, waiting at most
    /// `timeout` for one. While another thread receives, it waits for that
    /// thread only until its own deadline (and then says `false`).
    pub fn poll(&self, timeout: Duration) -> Result<bool> {
        let deadline = Deadline::after(timeout);
        let Some(mut rx) = self.rx.enter(Some(&deadline)) else { return Ok(false) };
        let max = self.max_frame();
        loop {
            if rx.closed || rx.has_frame(max) {
                return Ok(true);
            }
            match rx.fill(self.fd.as_fd(), false, self.is_unix())? {
                Filled::Data => continue,
                Filled::WouldBlock => {}
            }
            if !socket::wait_readable(self.fd.as_fd(), Some(&deadline))
                .map_err(|e| Error::os("poll", "connection", e))?
            {
                return Ok(false);
            }
        }
    }

    /// Whether a whole frame is already buffered here, so that a receive
    /// needs no syscall (`false` while another thread receives). A poller
    /// must drain these: `poll(2)` on the socket no longer reports them.
    pub(crate) fn has_buffered_frame(&self) -> bool {
        self.rx.enter(Some(&Deadline::after(Duration::ZERO))).is_some_and(|rx| rx.has_frame(self.max_frame()))
    }

    pub(super) fn is_unix(&self) -> bool {
        self.transport == Transport::Unix
    }

    /// The one receive path: takes a whole frame and hands it to `use_frame`,
    /// which decodes it while it is still in the buffer; `Ok(None)` at the
    /// deadline. Without a deadline a read blocks in one `recv(2)`.
    pub(super) fn recv_with<R>(
        &self,
        deadline: Option<&Deadline>,
        use_frame: impl FnOnce(&Rx, Taken) -> Result<R>,
    ) -> Result<Option<R>> {
        let Some(mut rx) = self.rx.enter(deadline) else { return Ok(None) };
        let max = self.max_frame();
        loop {
            if let Some(taken) = rx.take(max)? {
                return use_frame(&rx, taken).map(Some);
            }
            if rx.closed {
                return Err(Error::Disconnected);
            }
            match deadline {
                None => {
                    rx.fill(self.fd.as_fd(), true, self.is_unix())?;
                }
                Some(d) => {
                    if let Filled::WouldBlock = rx.fill(self.fd.as_fd(), false, self.is_unix())? {
                        let ready = socket::wait_readable(self.fd.as_fd(), Some(d))
                            .map_err(|e| Error::os("poll", "connection", e))?;
                        if !ready {
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn send_error(e: Errno) -> Error {
    match e {
        Errno::EPIPE | Errno::ECONNRESET => Error::Disconnected,
        e => Error::os("send", "connection", e),
    }
}

/// A descriptor frame where a message was expected: the descriptor is
/// closed (it drops with the frame), and the caller told.
fn not_a_message() -> Error {
    Error::Decode { detail: "the message is a descriptor; receive it with recv_fd".to_string() }
}

fn decode<T: DeserializeOwned>(rx: &Rx, taken: Taken) -> Result<T> {
    match taken {
        Taken::Range(from, to) => codec::decode(rx.slice(from, to)),
        Taken::Owned(v) => codec::decode(&v),
        Taken::Fd(_) => Err(not_a_message()),
    }
}

fn bytes(rx: &Rx, taken: Taken) -> Result<Vec<u8>> {
    match taken {
        Taken::Range(from, to) => Ok(rx.slice(from, to).to_vec()),
        Taken::Owned(v) => Ok(v),
        Taken::Fd(_) => Err(not_a_message()),
    }
}

impl AsFd for Connection {
    /// The socket, e.g. to wait on several connections with `poll`. Reading
    /// or writing it directly bypasses the framing.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd)
            .field("transport", &self.transport)
            .field("max_frame", &self.max_frame())
            .finish()
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
