//! The calling thread's identity (tid and start time) for hot paths: one
//! thread-local load and one global load, no syscall.
//!
//! `getpid()` would do to tell a forked child's cache from its parent's, but
//! glibc no longer caches it: a syscall on every call (about 200 ns on the VM
//! this crate is measured on), too much for an uncontended read lock. A fork
//! is detected instead by
//! a counter that a `pthread_atfork` child handler bumps: a forked child's
//! only thread inherits its parent thread's cached identity, tagged with the
//! parent's count, which no longer matches. (A child made by a raw `clone`
//! that bypasses glibc's `fork` would keep a stale cache; nothing in this
//! crate, std or nix does that without an `exec` straight after.)

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use super::proc::{self, Identity};

/// Bumped in the child after every `fork` of this process.
static FORKS: AtomicU64 = AtomicU64::new(0);
static REGISTER: Once = Once::new();

extern "C" fn after_fork_in_child() {
    // Relaxed: the child has one thread when this runs; later loads in that
    // thread see it by program order, and threads it starts by their spawn.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

fn register_fork_handler() {
    REGISTER.call_once(|| {
        // SAFETY: pthread_atfork only records the three handler pointers; the
        // child handler is a plain `extern "C" fn` that touches one atomic and
        // is async-signal-safe, as a handler run after fork must be.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        if rc != 0 {
            super::fail("pthread_atfork", rc);
        }
    });
}

thread_local! {
    /// This thread's identity, tagged with `FORKS + 1` as of when it was read
    /// (0: never read).
    static CACHED: Cell<(u64, Identity)> = const { Cell::new((0, Identity { id: 0, start: 0 })) };
}

/// The calling thread: its kernel tid and start time (cached per thread,
/// read again after a fork).
#[inline]
pub fn this_thread() -> Identity {
    let tag = FORKS.load(Ordering::Relaxed).wrapping_add(1);
    let (cached, me) = CACHED.get();
    if cached == tag {
        return me;
    }
    refresh()
}

#[cold]
fn refresh() -> Identity {
    // Registered before the identity is read, so any fork after this point
    // bumps the count in the child.
    register_fork_handler();
    let tag = FORKS.load(Ordering::Relaxed).wrapping_add(1);
    let id = u32::try_from(nix::unistd::gettid().as_raw()).unwrap_or(0);
    let me = Identity { id, start: proc::start_time(id).unwrap_or(0) };
    CACHED.set((tag, me));
    me
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_agrees_with_proc_and_threads_differ() {
        let me = this_thread();
        assert_eq!(me.id, u32::try_from(nix::unistd::gettid().as_raw()).unwrap());
        assert_eq!(me.start, proc::start_time(me.id).unwrap());
        assert_eq!(this_thread(), me);
        let other = std::thread::spawn(this_thread).join().unwrap();
        assert_ne!(other.id, me.id);
    }
}
