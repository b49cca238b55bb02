//! Stream sockets for `Connection`: socket pairs, whole writes without
//! `SIGPIPE`, reads that append to a buffer (optionally catching the
//! descriptors that arrive with the bytes), passing a descriptor with
//! `SCM_RIGHTS`, and readiness with a deadline.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType};

use super::time::Deadline;

/// The most descriptors one read takes in; the kernel closes any beyond
/// this (`MSG_CTRUNC`), so none leaks.
const MAX_FDS: usize = 8;

/// A connected pair of `AF_UNIX` stream sockets, close-on-exec.
pub fn pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    socket::socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
}

/// Writes `header` then `payload`, wholly. `MSG_NOSIGNAL`: a closed peer is
/// `EPIPE`, never a `SIGPIPE` that would kill the process.
pub fn send_all(fd: BorrowedFd<'_>, header: &[u8], payload: &[u8]) -> Result<(), Errno> {
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

/// Writes `bytes` wholly with `passed` attached (`SCM_RIGHTS`) to the first
/// byte, so the receiver gets the descriptor with the read that brings that
/// byte.
pub fn send_with_fd(fd: BorrowedFd<'_>, bytes: &[u8], passed: BorrowedFd<'_>) -> Result<(), Errno> {
    let fds = [passed.as_raw_fd()];
    let rights = [ControlMessage::ScmRights(&fds)];
    let mut sent = 0;
    while sent < bytes.len() {
        // Only the first write carries the descriptor.
        let cmsgs: &[ControlMessage<'_>] = if sent == 0 { &rights } else { &[] };
        let slices = [IoSlice::new(&bytes[sent..])];
        match socket::sendmsg::<()>(fd.as_raw_fd(), &slices, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => sent += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends what is available, at most `max` bytes, to `buf` without
/// zero-filling room first; 0 means the peer closed. With `wait` false it
/// never blocks (`EAGAIN` when nothing is there). With `fds`, it reads with
/// `recvmsg` and pushes every descriptor that arrived with these bytes,
/// close-on-exec; without it, the kernel closes any that arrive.
pub fn recv_append(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    max: usize,
    wait: bool,
    fds: Option<&mut Vec<OwnedFd>>,
) -> Result<usize, Errno> {
    buf.reserve(max);
    let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
    // SAFETY: `reserve` made room for `max` more bytes after `len`.
    let spare = unsafe { buf.as_mut_ptr().add(buf.len()) };
    let n = match fds {
        None => loop {
            // SAFETY: recv writes at most `max` bytes to `spare`, which has
            // room for them, and returns how many.
            let n = unsafe { libc::recv(fd.as_raw_fd(), spare.cast(), max, flags) };
            if n >= 0 {
                break n as usize;
            }
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        },
        Some(out) => recv_with_fds(fd, spare, max, flags, out)?,
    };
    // SAFETY: the kernel initialised exactly `n` <= `max` bytes after `len`.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Room for [`MAX_FDS`] descriptors in a control message, aligned for
/// `cmsghdr`.
#[repr(C, align(8))]
struct ControlBuf([u8; 64]);

/// `recvmsg` into `spare[..max]`, collecting `SCM_RIGHTS` descriptors.
fn recv_with_fds(
    fd: BorrowedFd<'_>,
    spare: *mut u8,
    max: usize,
    flags: i32,
    out: &mut Vec<OwnedFd>,
) -> Result<usize, Errno> {
    let mut control = ControlBuf([0; 64]);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    debug_assert!(space <= control.0.len());
    loop {
        let mut iov = libc::iovec { iov_base: spare.cast(), iov_len: max };
        // SAFETY: an all-zero msghdr is valid (no name, no iovecs) and is
        // filled in below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg` points at one iovec of `max` writable bytes (the
        // caller's spare capacity) and at `space` bytes of aligned control
        // buffer, both live for the call.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
        // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR and CMSG_NXTHDR
        // walk only within `msg_controllen` bytes of our control buffer.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cmsg.is_null() {
            // SAFETY: `cmsg` is non-null and points at a header inside the
            // control buffer, as CMSG_FIRSTHDR/CMSG_NXTHDR guarantee.
            let hdr = unsafe { &*cmsg };
            if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
                // SAFETY: CMSG_LEN(0) only computes a size.
                let data_len = (hdr.cmsg_len as usize).saturating_sub(unsafe { libc::CMSG_LEN(0) } as usize);
                // SAFETY: CMSG_DATA points at the payload of this header.
                let data = unsafe { libc::CMSG_DATA(cmsg) };
                for i in 0..data_len / std::mem::size_of::<RawFd>() {
                    // SAFETY: the payload holds `data_len` bytes of ints,
                    // possibly unaligned, inside the control buffer.
                    let raw = unsafe { data.cast::<RawFd>().add(i).read_unaligned() };
                    // SAFETY: SCM_RIGHTS installed `raw` in this process for
                    // us, and nothing else owns it.
                    out.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
            // SAFETY: as for CMSG_FIRSTHDR above.
            cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
        }
        return Ok(n as usize);
    }
}

/// Waits until `fd` is readable or its peer hung up, or `deadline` passes.
/// Returns whether it is ready.
pub fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<&Deadline>) -> Result<bool, Errno> {
    wait_for(fd, PollFlags::POLLIN, deadline)
}

/// As [`wait_readable`], for any poll events.
pub fn wait_for(fd: BorrowedFd<'_>, events: PollFlags, deadline: Option<&Deadline>) -> Result<bool, Errno> {
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), events)];
        match nix::poll::poll(&mut fds, poll_timeout(deadline)) {
            Ok(0) if deadline.is_none_or(|d| !d.has_passed()) => continue,
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The poll timeout that ends at `deadline`, rounded up to a millisecond so
/// a sub-millisecond remainder still waits.
pub fn poll_timeout(deadline: Option<&Deadline>) -> PollTimeout {
    match deadline {
        None => PollTimeout::NONE,
        Some(d) => {
            let left = d.remaining();
            if left.is_zero() {
                PollTimeout::ZERO
            } else {
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        }
    }
}

/// Shuts down both directions of a socket: its peer reads end of file even
/// while other processes still hold copies of this descriptor.
pub fn shutdown(fd: BorrowedFd<'_>) {
    let _ = socket::shutdown(fd.as_raw_fd(), socket::Shutdown::Both);
}
