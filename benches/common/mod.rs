//! Scaffolding shared by the `lock` and `handoff` benches: a cache-line
//! wrapper, an anonymous `MAP_SHARED` mapping that forked children inherit,
//! and forking children that `_exit` and are reaped with a bounded pidfd wait.

// Each bench compiles this module into its own crate and uses only part of
// it; the rest would warn as dead code there.
#![allow(dead_code)]

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::io::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

/// How long a child, or a wait on or in one, may take before the bench gives
/// up: `lock` bounds its waits with it, `handoff`'s children arm `alarm`
/// with it.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// One cache line, so neighbouring fields of a shared struct do not
/// false-share.
#[repr(C, align(64))]
pub struct Line<T>(pub T);

/// The smallest page size on Linux; every mapping is aligned to at least it.
const MIN_PAGE: usize = 4096;

/// Types a fresh anonymous mapping holds a valid value of.
///
/// # Safety
/// All-zero bytes must be a valid value of the type.
pub unsafe trait ZeroValid {}

/// An anonymous `MAP_SHARED` mapping holding one `T`, inherited across `fork`
/// at the same address and unmapped on drop.
pub struct Mapping<T: ZeroValid>(NonNull<T>);

impl<T: ZeroValid> Mapping<T> {
    pub fn new() -> Mapping<T> {
        assert!(std::mem::align_of::<T>() <= MIN_PAGE, "a page does not align the mapped type");
        let len = std::mem::size_of::<T>();
        // SAFETY: an anonymous mapping with a null hint touches no existing
        // memory; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        Mapping(NonNull::new(ptr.cast()).expect("mmap returned null"))
    }

    pub fn shared(&self) -> &T {
        // SAFETY: the mapping is page-aligned (enough for `T`, checked in
        // `new`), zero-filled (a valid `T`, as `T: ZeroValid` promises) and
        // stays mapped until `self` drops.
        unsafe { self.0.as_ref() }
    }
}

impl<T: ZeroValid> Drop for Mapping<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `Mapping::new` with this length, and
        // every borrow of it (from `shared`) has ended with `self`'s borrow.
        unsafe { libc::munmap(self.0.as_ptr().cast(), std::mem::size_of::<T>()) };
    }
}

/// A forked child, killed and reaped on drop unless already reaped, so no
/// path out of a sample (a panic included) leaves one behind.
pub struct Child {
    /// What the child does, for messages.
    pub role: &'static str,
    pub pid: libc::pid_t,
    pidfd: OwnedFd,
    reaped: bool,
}

impl Child {
    /// Reaps the child, which must have exited, and returns its wait status.
    fn reap(&mut self) -> libc::c_int {
        let mut status = 0;
        // SAFETY: `pid` is our unreaped child; `status` is writable.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(rc, self.pid, "waitpid: {}", std::io::Error::last_os_error());
        self.reaped = true;
        status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: `pid` is our child and not yet reaped, so it still names
            // that process (or its zombie), never a reused pid.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// True if a wait status says the process exited with code 0.
pub fn exited_cleanly(status: libc::c_int) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// The body of a forked child: arm `SIGKILL` on the parent's death, run
/// `body`, and `_exit` with its code, never returning into criterion. Exit
/// code 3 means the parent was gone, 101 that `body` panicked.
fn child_main(parent: libc::pid_t, body: &dyn Fn() -> i32) -> ! {
    let code = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on this process.
        let armed = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == 0;
        // SAFETY: getppid has no preconditions. The check catches a parent
        // that died before the flag was set.
        if !armed || unsafe { libc::getppid() } != parent {
            return 3;
        }
        body()
    }))
    .unwrap_or(101);
    // SAFETY: _exit ends the process at once, without running the parent's
    // destructors or atexit handlers in this copy of it.
    unsafe { libc::_exit(code) }
}

/// Forks a child running [`child_main`] with `body` and opens a pidfd for it.
///
/// # Safety
/// The calling process must have only one thread, so that the child inherits
/// no lock held by another thread; and `body` may touch only what stays
/// usable in a forked copy of it (the inherited mapping, the primitives under
/// test), as `child_main` touches nothing else but `_exit`.
pub unsafe fn spawn(role: &'static str, body: &dyn Fn() -> i32) -> Child {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the caller vouches that this process has one thread and for
    // what `body` touches in the child.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => child_main(parent, body),
        _ => {}
    }
    // SAFETY: pidfd_open takes a pid and flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        // SAFETY: `pid` is our unreaped child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        panic!("pidfd_open (Linux >= 5.3 needed): {err}");
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    Child { role, pid, pidfd, reaped: false }
}

/// Blocks until every child has exited and reaps each, passing it and its
/// wait status to `check` (which panics on a failure; the drops kill the
/// rest). Returns false, with the unreaped children still alive, if
/// `deadline` passes first.
#[must_use]
pub fn reap_all(children: &mut [Child], deadline: Instant, mut check: impl FnMut(&Child, libc::c_int)) -> bool {
    while children.iter().any(|c| !c.reaped) {
        let mut fds: Vec<libc::pollfd> = children
            .iter()
            .filter(|c| !c.reaped)
            .map(|c| libc::pollfd { fd: c.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a live array of `fds.len()` pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "poll: {err}");
            continue;
        }
        if n == 0 {
            return false;
        }
        for fd in fds.iter().filter(|fd| fd.revents != 0) {
            let child = children.iter_mut().find(|c| c.pidfd.as_raw_fd() == fd.fd);
            let child = child.expect("pidfd of a live child");
            let status = child.reap();
            check(child, status);
        }
    }
    true
}
