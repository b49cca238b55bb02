//! Absolute `CLOCK_MONOTONIC` deadlines.
//!
//! Every timed wait in the crate computes one [`Deadline`] before its retry
//! loop and hands the same absolute time to the kernel on each retry, so an
//! early wakeup (a signal, a notify that finds nothing to do) never restarts
//! the clock.

use std::time::Duration;

/// A point in time on `CLOCK_MONOTONIC`, the clock futexes and
/// `pthread_mutex_clocklock` accept, unaffected by changes to the wall clock.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    ts: libc::timespec,
}

const NANOS_PER_SEC: i64 = 1_000_000_000;

fn now() -> libc::timespec {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC is always
    // supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        super::fail("clock_gettime(CLOCK_MONOTONIC)", nix::errno::Errno::last_raw());
    }
    ts
}

impl Deadline {
    /// The deadline `timeout` from now. A timeout too large to represent
    /// saturates at the far future instead of wrapping into the past.
    pub fn after(timeout: Duration) -> Deadline {
        let start = now();
        let secs = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX);
        let mut tv_sec = start.tv_sec.saturating_add(secs);
        // Both parts are below one second, so the sum fits and one carry normalises it.
        let mut tv_nsec = start.tv_nsec + i64::from(timeout.subsec_nanos());
        if tv_nsec >= NANOS_PER_SEC {
            tv_nsec -= NANOS_PER_SEC;
            tv_sec = tv_sec.saturating_add(1);
        }
        Deadline { ts: libc::timespec { tv_sec, tv_nsec } }
    }

    /// The absolute time, for the kernel.
    pub fn as_timespec(&self) -> &libc::timespec {
        &self.ts
    }

    /// The time left until the deadline; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        let now = now();
        let nanos = (i128::from(self.ts.tv_sec) - i128::from(now.tv_sec)) * i128::from(NANOS_PER_SEC)
            + i128::from(self.ts.tv_nsec - now.tv_nsec);
        if nanos <= 0 {
            Duration::ZERO
        } else {
            let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
            Duration::from_nanos(nanos)
        }
    }

    /// Whether the deadline has passed.
    pub fn has_passed(&self) -> bool {
        self.remaining().is_zero()
    }

    /// The later of two deadlines.
    pub fn later<'a>(&'a self, other: &'a Deadline) -> &'a Deadline {
        if std::ptr::eq(self.earlier(other), self) {
            other
        } else {
            self
        }
    }

    /// The earlier of two deadlines.
    pub fn earlier<'a>(&'a self, other: &'a Deadline) -> &'a Deadline {
        if (self.ts.tv_sec, self.ts.tv_nsec) <= (other.ts.tv_sec, other.ts.tv_nsec) {
            self
        } else {
            other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_saturate_instead_of_wrapping() {
        let d = Deadline::after(Duration::MAX);
        assert!(!d.has_passed());
        assert!(d.as_timespec().tv_nsec < NANOS_PER_SEC);
    }

    #[test]
    fn earlier_picks_the_first() {
        let (a, b) = (Deadline::after(Duration::from_secs(1)), Deadline::after(Duration::from_secs(9)));
        assert!(std::ptr::eq(a.earlier(&b), &a));
        assert!(std::ptr::eq(b.earlier(&a), &a));
    }

    #[test]
    fn zero_timeout_has_passed_at_once() {
        assert!(Deadline::after(Duration::ZERO).has_passed());
    }

    #[test]
    fn nanoseconds_stay_normalised() {
        for ms in [0, 1, 999, 1000, 1999] {
            let d = Deadline::after(Duration::from_millis(ms) + Duration::from_nanos(999_999_999));
            assert!((0..NANOS_PER_SEC).contains(&d.as_timespec().tv_nsec));
        }
    }
}
