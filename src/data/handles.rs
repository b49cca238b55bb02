//! Passing open descriptors between processes over a Unix-socket
//! [`Connection`] (Python's `multiprocessing.reduction.send_handle` and
//! `recv_handle`), with `SCM_RIGHTS`.
//!
//! A descriptor travels as a header-only frame with the descriptor flag
//! set, sent with the descriptor attached to its first byte, so it keeps
//! its place among the other messages. The receiving side's bookkeeping
//! (which descriptor belongs to which frame, and closing any that came
//! beside an ordinary message) is in `rx.rs`.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use super::pipe::{lock, send_error, Connection};
use super::rx::{Rx, Taken, FD_FLAG};
use crate::error::{Error, Result};
use crate::sys::socket;
use crate::sys::time::Deadline;

impl Connection {
    /// Sends `fd` to the peer (`SCM_RIGHTS`), as Python's
    /// `multiprocessing.reduction.send_handle`; the peer takes it with
    /// [`recv_fd`](Self::recv_fd), in order with the other messages. The
    /// descriptor stays open here too. Only over a Unix socket (a `pipe()`,
    /// or a Unix-path or abstract address): over TCP it is
    /// `InvalidArgument`, and nothing is sent.
    pub fn send_fd(&self, fd: &impl AsFd) -> Result<()> {
        if !self.is_unix() {
            return Err(Error::InvalidArgument {
                name: "Connection::send_fd".to_string(),
                detail: "descriptors pass only over Unix sockets, and this connection is TCP; \
                         connect by a Unix path or abstract name to pass one"
                    .to_string(),
            });
        }
        let _tx = lock(&self.tx);
        socket::send_with_fd(self.fd.as_fd(), &FD_FLAG.to_le_bytes(), fd.as_fd()).map_err(send_error)
    }

    /// Receives a descriptor sent with [`send_fd`](Self::send_fd), blocking
    /// until it comes. The next message must be one: anything else is
    /// `Decode` (that message is consumed, and the connection stays usable).
    pub fn recv_fd(&self) -> Result<OwnedFd> {
        self.recv_with(None, descriptor)?.ok_or(Error::Disconnected)
    }

    /// As [`recv_fd`](Self::recv_fd), waiting at most `timeout`.
    pub fn recv_fd_timeout(&self, timeout: Duration) -> Result<Option<OwnedFd>> {
        self.recv_with(Some(&Deadline::after(timeout)), descriptor)
    }
}

fn descriptor(_: &Rx, taken: Taken) -> Result<OwnedFd> {
    match taken {
        Taken::Fd(Some(fd)) => Ok(fd),
        Taken::Fd(None) => {
            Err(Error::Decode { detail: "a descriptor frame arrived without its descriptor".to_string() })
        }
        Taken::Range(..) | Taken::Owned(_) => {
            Err(Error::Decode { detail: "the message is not a descriptor; receive it with recv".to_string() })
        }
    }
}
