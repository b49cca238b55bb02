//! Unix stream socket pairs for `Pipe`: creation, whole writes without
//! `SIGPIPE`, reads, and readiness with a deadline.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};

use super::time::Deadline;

/// A connected pair of `AF_UNIX` stream sockets, close-on-exec.
pub fn pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    socket::socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
}

/// Writes `header` then `payload`, wholly. `MSG_NOSIGNAL`: a closed peer is
/// `EPIPE`, never a `SIGPIPE` that would kill the process.
pub fn send_all(fd: &OwnedFd, header: &[u8], payload: &[u8]) -> Result<(), Errno> {
    let mut sent = 0;
    while sent < header.len() + payload.len() {
        let (h, p) =
            if sent < header.len() { (&header[sent..], payload) } else { (&[][..], &payload[sent - header.len()..]) };
        let slices = [IoSlice::new(h), IoSlice::new(p)];
        match socket::sendmsg::<()>(fd.as_raw_fd(), &slices, &[], MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => sent += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends what is available, at most `max` bytes, to `buf` without
/// zero-filling room first; 0 means the peer closed.
pub fn recv_append(fd: &OwnedFd, buf: &mut Vec<u8>, max: usize) -> Result<usize, Errno> {
    buf.reserve(max);
    loop {
        // SAFETY: `reserve` made room for `max` more bytes after `len`; recv
        // writes at most `max` bytes there and returns how many, and only
        // those become part of the vector below.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().add(buf.len()).cast(), max, 0) };
        if n >= 0 {
            // SAFETY: recv initialised exactly `n` <= `max` bytes after `len`.
            unsafe { buf.set_len(buf.len() + n as usize) };
            return Ok(n as usize);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Waits until `fd` is readable or its peer hung up, or `deadline` passes.
/// Returns whether it is ready.
pub fn wait_readable(fd: &OwnedFd, deadline: Option<&Deadline>) -> Result<bool, Errno> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.remaining();
                if left.is_zero() {
                    PollTimeout::ZERO
                } else {
                    // Round up so a sub-millisecond remainder still waits.
                    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                }
            }
        };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) if deadline.is_none_or(|d| !d.has_passed()) => continue,
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
