//! Child processes: fork, `_exit`, the parent-death signal, `atexit`, and
//! waiting on a pid with a deadline (pidfd + poll).

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::time::Deadline;

/// Which side of a fork we are on.
pub enum Forked {
    /// In the parent; the child's pid.
    Parent(u32),
    /// In the child.
    Child,
}

/// Forks the process.
///
/// # Safety
/// In the child, until it execs or exits, only what is safe after `fork` in
/// a possibly multi-threaded parent may run: no lock another parent thread
/// may have held, no allocator state such a thread was changing. glibc's
/// `fork` keeps `malloc` usable in the child. See nix's `fork`.
pub unsafe fn fork() -> Result<Forked, Errno> {
    // SAFETY: forwarded from the caller.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child.as_raw() as u32)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// Ends the process at once with `code`: no exit handlers, no destructors.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// Asks the kernel to send `signal` to this process when the thread that
/// forked it dies. Returns `false` if the parent already died before the
/// request took effect (the caller should exit).
pub fn die_with_parent(signal: Signal, parent: u32) -> bool {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; the remaining arguments
    // are ignored.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) };
    rc == 0 && std::os::unix::process::parent_id() == parent
}

/// Registers `hook` to run at normal process exit (`exit(3)`).
pub fn at_exit(hook: extern "C" fn()) -> bool {
    // SAFETY: `hook` is a plain function with no arguments, valid for the
    // life of the program.
    unsafe { libc::atexit(hook) == 0 }
}

/// Closes a descriptor this forked child inherited and does not own as a
/// Rust value (it belongs to a copy of a parent-side handle).
pub fn close_inherited(fd: std::os::fd::RawFd) {
    // SAFETY: closing an fd number has no memory-safety preconditions; the
    // handle that owns it in this child is never used here (it is the
    // parent's, copied by fork), so no double use follows.
    unsafe { libc::close(fd) };
}

/// How many threads this process has (from /proc), or 1 if unknown.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1)
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: Signal) -> Result<(), Errno> {
    nix::sys::signal::kill(Pid::from_raw(pid as i32), signal)
}

/// The exit code Python reports for a wait status: the code, or minus the
/// signal number. `None` while the child runs.
fn code_of(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(-(sig as i32)),
        _ => None,
    }
}

/// Reaps `pid` if it has ended; `Ok(None)` if it still runs.
pub fn try_reap(pid: u32) -> Result<Option<i32>, Errno> {
    loop {
        match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => return Ok(code_of(status)),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A pidfd for `pid`: readable (`POLLIN`) once the process has ended.
pub fn pidfd(pid: u32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor
    // that we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the descriptor was just returned to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// An eventfd (close-on-exec): readable once written, which nothing here
/// does unless the caller writes it.
pub fn eventfd() -> Result<OwnedFd, Errno> {
    // SAFETY: eventfd takes an initial value and flags; it returns a new
    // descriptor that we own, or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the descriptor was just returned to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter, making it readable.
pub fn eventfd_signal(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live buffer to a descriptor we own.
    let _ = unsafe { libc::write(std::os::fd::AsRawFd::as_raw_fd(fd), one.as_ptr().cast(), one.len()) };
}

/// Empties an eventfd's counter (it is non-blocking).
pub fn eventfd_drain(fd: &OwnedFd) {
    let mut buf = [0u8; 8];
    // SAFETY: reads at most 8 bytes into a live buffer from a descriptor we own.
    let _ = unsafe { libc::read(std::os::fd::AsRawFd::as_raw_fd(fd), buf.as_mut_ptr().cast(), buf.len()) };
}

/// Sleeps until `pid` has ended (without reaping it), or `deadline` passes.
/// Returns whether it ended. Uses a pidfd so the wait is a real sleep.
pub fn await_exit(pid: u32, deadline: Option<&Deadline>) -> Result<bool, Errno> {
    let fd = pidfd(pid)?;
    loop {
        let timeout = match deadline {
            None => nix::poll::PollTimeout::NONE,
            Some(d) => {
                let ms = d.remaining().as_millis().min(i32::MAX as u128) as i32;
                // Round up so a sub-millisecond remainder still sleeps.
                let ms = if ms == 0 && !d.remaining().is_zero() { 1 } else { ms };
                nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX)
            }
        };
        let mut fds = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) if deadline.is_some_and(|d| d.has_passed()) => return Ok(false),
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A pause for the rare fallback loops (kernels without pidfd).
pub const FALLBACK_PAUSE: Duration = Duration::from_millis(5);
