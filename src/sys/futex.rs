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
    wait_at(word, expected, deadline)
}

/// As [`wait`], for a word known only by its address: the kernel alone reads
/// it, and an address that is no longer mapped makes the call return `true`
/// (`EFAULT`: look again) rather than fault.
pub fn wait_at(word: *const AtomicU32, expected: u32, deadline: Option<&Deadline>) -> bool {
    let timeout = deadline.map_or(std::ptr::null(), |d| d.as_timespec() as *const libc::timespec);
    loop {
        // SAFETY: the kernel reads the 4-byte word at `word` (an unmapped
        // address is EFAULT, not a fault here); no Rust reference to it is
        // made. `timeout` is null or points to a normalised timespec that
        // outlives the call. FUTEX_WAIT_BITSET takes an absolute
        // CLOCK_MONOTONIC time; uaddr2 is unused and the bitset matches any
        // waker.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word,
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
            Errno::EAGAIN | Errno::EFAULT => return true,
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

/// The most words one [`wait_many`] sleeps on (the kernel's `FUTEX_WAITV_MAX`).
pub const WAIT_MANY_MAX: usize = libc::FUTEX_WAITV_MAX as usize;

/// How a [`wait_many`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Many {
    /// The word at this index was woken.
    Woken(usize),
    /// A word did not hold its expected value (or a spurious return): look
    /// at them all again.
    Changed,
    /// The deadline passed.
    TimedOut,
    /// The kernel has no `futex_waitv` (before Linux 5.16).
    Unsupported,
}

/// Sleeps until one of the `words` is woken, provided each holds its
/// expected value when the call starts, or until `deadline`: one
/// `futex_waitv` syscall over shared 32-bit futexes.
///
/// Each address only has to be readable by the kernel at the time of the
/// call: an address that is not mapped makes it return `Changed` (`EFAULT`),
/// never a fault in this process.
pub fn wait_many(words: &[(*const AtomicU32, u32)], deadline: Option<&Deadline>) -> Many {
    let n = words.len().min(WAIT_MANY_MAX);
    // SAFETY: futex_waitv is plain integers; all-zero bytes are valid.
    let mut entries: [libc::futex_waitv; WAIT_MANY_MAX] = unsafe { std::mem::zeroed() };
    for (e, &(word, expected)) in entries.iter_mut().zip(&words[..n]) {
        e.val = u64::from(expected);
        e.uaddr = word as u64;
        // Shared (no FUTEX2_PRIVATE): waiters and wakers are in different
        // processes.
        e.flags = libc::FUTEX2_SIZE_U32 as u32;
    }
    let timeout = deadline.map_or(std::ptr::null(), |d| d.as_timespec() as *const libc::timespec);
    loop {
        // SAFETY: the first `n` entries are initialised futex_waitv records;
        // the kernel only reads them and the addresses they name (failing
        // with EFAULT for an unmapped one). `timeout` is null or an absolute
        // CLOCK_MONOTONIC time that outlives the call.
        let rc = unsafe {
            libc::syscall(libc::SYS_futex_waitv, entries.as_ptr(), n as libc::c_uint, 0, timeout, libc::CLOCK_MONOTONIC)
        };
        if rc >= 0 {
            return Many::Woken(rc as usize);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::ETIMEDOUT => return Many::TimedOut,
            Errno::EAGAIN | Errno::EFAULT => return Many::Changed,
            Errno::ENOSYS => return Many::Unsupported,
            e => super::fail("futex_waitv", e as i32),
        }
    }
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
    fn wait_many_sees_changes_and_wakes_and_times_out() {
        let words = [AtomicU32::new(0), AtomicU32::new(5)];
        let list = [(&words[0] as *const AtomicU32, 0), (&words[1] as *const AtomicU32, 4)];
        let soon = Deadline::after(Duration::from_secs(5));
        assert_eq!(wait_many(&list, Some(&soon)), Many::Changed);
        let list = [(&words[0] as *const AtomicU32, 0), (&words[1] as *const AtomicU32, 5)];
        assert_eq!(wait_many(&list, Some(&Deadline::after(Duration::from_millis(5)))), Many::TimedOut);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                words[1].store(6, Ordering::Release);
                wake_all(&words[1]);
            });
            let r = wait_many(&list, Some(&Deadline::after(Duration::from_secs(10))));
            assert!(r == Many::Woken(1) || r == Many::Changed, "{r:?}");
        });
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
