//! Shared futex wait and wake.
//!
//! The words live in shared memory that several processes map at different
//! addresses, so every call here is a *shared* futex: the kernel keys it on the
//! backing page, not the virtual address. `FUTEX_PRIVATE_FLAG` is never set;
//! with it, a waiter in one process could never be woken by another.
//!
//! Waits take an absolute `CLOCK_MONOTONIC` deadline (`FUTEX_WAIT_BITSET` with
//! `FUTEX_CLOCK_REALTIME` unset), computed once by the caller.

use std::sync::atomic::AtomicU32;

use nix::errno::Errno;

use super::time::Deadline;

/// Sleeps while `*word == expected`, until woken or `deadline` passes.
///
/// Returns `false` only when the deadline passed. A wake, a changed word
/// (`EAGAIN`) or a spurious return all give `true`: the caller re-checks its
/// own condition either way. `EINTR` is retried with the same absolute
/// deadline, so a signal never extends the wait.
pub fn wait(word: &AtomicU32, expected: u32, deadline: Option<&Deadline>) -> bool {
    let timeout = deadline.map_or(std::ptr::null(), |d| d.as_timespec() as *const libc::timespec);
    loop {
        // SAFETY: `word` is a live reference to a 4-byte aligned AtomicU32, so
        // the kernel reads a valid futex word; it lives in a mapping the caller
        // keeps alive for the whole call. `timeout` is null or points to a
        // normalised timespec that outlives the call. FUTEX_WAIT_BITSET takes an
        // absolute CLOCK_MONOTONIC time; uaddr2 is unused and the bitset
        // matches any waker.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET,
                expected,
                timeout,
                std::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        if rc == 0 {
            return true;
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::ETIMEDOUT => return false,
            Errno::EAGAIN => return true,
            e => super::fail("futex(FUTEX_WAIT_BITSET)", e as i32),
        }
    }
}

thread_local! {
    /// How many `FUTEX_WAKE` calls this thread has made: tests use it to
    /// check that an operation with nobody waiting makes no syscall.
    static WAKE_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The number of `FUTEX_WAKE` calls the calling thread has made so far.
pub fn wake_calls() -> u64 {
    WAKE_CALLS.get()
}

/// Wakes at most `count` threads sleeping on `word`, in any process. Returns how
/// many were woken.
pub fn wake(word: &AtomicU32, count: u32) -> u32 {
    WAKE_CALLS.set(WAKE_CALLS.get() + 1);
    let count = i32::try_from(count).unwrap_or(i32::MAX);
    // SAFETY: `word` is a live reference to an aligned AtomicU32 inside a mapping
    // the caller keeps alive. FUTEX_WAKE only reads the address to find the
    // queue; it never dereferences a pointer we do not own.
    let rc = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, count) };
    if rc < 0 {
        super::fail("futex(FUTEX_WAKE)", Errno::last_raw());
    }
    u32::try_from(rc).unwrap_or(u32::MAX)
}

/// Wakes every thread sleeping on `word`.
pub fn wake_all(word: &AtomicU32) -> u32 {
    wake(word, u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn wait_on_changed_word_returns_at_once() {
        let w = AtomicU32::new(1);
        assert!(wait(&w, 0, Some(&Deadline::after(Duration::from_secs(5)))));
    }

    #[test]
    fn wait_times_out() {
        let w = AtomicU32::new(0);
        assert!(!wait(&w, 0, Some(&Deadline::after(Duration::from_millis(10)))));
    }

    #[test]
    fn wake_reaches_a_sleeper() {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = Arc::clone(&w);
        let t = std::thread::spawn(move || {
            let d = Deadline::after(Duration::from_secs(10));
            while w2.load(Ordering::Acquire) == 0 {
                assert!(wait(&w2, 0, Some(&d)), "sleeper never woken");
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        w.store(1, Ordering::Release);
        wake_all(&w);
        t.join().unwrap();
    }
}
