//! `Condition`: a named condition variable with its own robust lock
//! (Python's `Condition`).

use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};
use std::time::Duration;

use super::guard::LockGuard;
use super::named_lifecycle;
use crate::raw::{Locked, RawCondition};
use crate::segment::{Kind, Layout, Segment};
use crate::sys::time::Deadline;

/// Whether a timed wait ended because its time ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// `true` if the wait timed out (for the `_while` forms: with the
    /// condition still true).
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

/// Holds a [`Condition`]'s lock; pass it to the condition's waits. Dropping it
/// unlocks. `!Send`, like every guard.
#[must_use = "if unused the lock is released at once"]
#[derive(Debug)]
pub struct ConditionGuard<'a> {
    guard: LockGuard<'a>,
    cond: &'a RawCondition,
}

/// A named, cross-process condition variable (Python's
/// `multiprocessing.Condition`). It owns its lock: take it with
/// [`lock`](Self::lock), wait with the guard, notify from anywhere.
///
/// - `notify(n)` wakes at most `n` of the waiters asleep when it is called;
///   `notify_one` exactly one when there is one. A notify with nobody waiting
///   is not remembered, and costs one atomic load.
/// - As with std's `Condvar`, a wait may return spuriously; the `_while`
///   forms re-check their predicate and absorb that.
/// - A waiter that is killed costs the others nothing. A *holder* that is
///   killed poisons the lock, which the next `lock` or `wait` reports.
///
/// The state the condition is about lives elsewhere in shared memory (another
/// segment, a `raw` struct of your own, an atomic); change it while holding
/// the lock.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::time::Duration;
///
/// let cond = shmsync::Condition::new()?;
/// let ready = AtomicBool::new(false); // shared memory in real use
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         let _g = cond.lock().unwrap();
///         ready.store(true, Ordering::Relaxed);
///         cond.notify_all();
///     });
///     let g = cond.lock().unwrap();
///     let (_g, res) = cond
///         .wait_timeout_while(g, Duration::from_secs(10), || !ready.load(Ordering::Relaxed))
///         .unwrap();
///     assert!(!res.timed_out());
/// });
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct Condition {
    seg: Segment<RawCondition>,
}

impl Layout for Condition {
    type Object = RawCondition;
    type Params = ();
    const KIND: Kind = Kind::Condition;

    fn check(cond: &RawCondition, _trailing: usize) -> std::result::Result<(), String> {
        cond.check()
    }

    unsafe fn init(object: *mut RawCondition, _trailing: usize, _: &()) -> crate::Result<()> {
        // SAFETY: forwarded from the caller of Layout::init.
        unsafe { RawCondition::init(object) };
        Ok(())
    }
}

named_lifecycle!(Condition {});

impl std::panic::UnwindSafe for Condition {}
impl std::panic::RefUnwindSafe for Condition {}

type WaitResult<'a> = LockResult<(ConditionGuard<'a>, WaitTimeoutResult)>;

impl Condition {
    fn raw(&self) -> &RawCondition {
        self.seg.object()
    }

    fn guard<'a>(cond: &'a RawCondition, how: Locked) -> LockResult<ConditionGuard<'a>> {
        match LockGuard::wrap(cond.lock().robust(), how) {
            Ok(guard) => Ok(ConditionGuard { guard, cond }),
            Err(p) => Err(PoisonError::new(ConditionGuard { guard: p.into_inner(), cond })),
        }
    }

    /// Takes the condition's lock. `Err(PoisonError)` (still holding it) if a
    /// holder died or panicked.
    pub fn lock(&self) -> LockResult<ConditionGuard<'_>> {
        Condition::guard(self.raw(), self.raw().lock().lock())
    }

    /// Takes the condition's lock if it is free.
    /// `Err(TryLockError::WouldBlock)` if another thread holds it.
    pub fn try_lock(&self) -> TryLockResult<ConditionGuard<'_>> {
        Condition::guard_try(self.raw(), self.raw().lock().try_lock())
    }

    /// Takes the condition's lock, waiting at most `timeout`.
    pub fn try_lock_for(&self, timeout: Duration) -> TryLockResult<ConditionGuard<'_>> {
        Condition::guard_try(self.raw(), self.raw().lock().try_lock_for(timeout))
    }

    fn guard_try(cond: &RawCondition, how: Option<Locked>) -> TryLockResult<ConditionGuard<'_>> {
        match how {
            None => Err(TryLockError::WouldBlock),
            Some(how) => Condition::guard(cond, how).map_err(TryLockError::from),
        }
    }

    /// Whether the condition's lock is poisoned.
    pub fn is_poisoned(&self) -> bool {
        self.raw().lock().is_poisoned()
    }

    /// Clears the lock's poison flag, for every process.
    pub fn clear_poison(&self) {
        self.raw().lock().clear_poison()
    }

    /// The one wait path: unlock, wait for a notify or the deadline, relock.
    fn wait_until<'a>(&self, g: ConditionGuard<'a>, deadline: Option<&Deadline>) -> WaitResult<'a> {
        assert!(std::ptr::eq(g.cond, self.raw()), "Condition::wait: the guard belongs to another Condition");
        let cond = g.cond;
        // The raw wait unlocks and relocks; the old guard must not unlock again.
        std::mem::forget(g.guard);
        // SAFETY: the guard proved this thread holds the condition's lock.
        let (how, timed_out) = unsafe { cond.wait_until(deadline) };
        match Condition::guard(cond, how) {
            Ok(g) => Ok((g, WaitTimeoutResult(timed_out))),
            Err(p) => Err(PoisonError::new((p.into_inner(), WaitTimeoutResult(timed_out)))),
        }
    }

    /// Releases the lock, waits for a notify, and takes the lock again.
    ///
    /// # Panics
    /// If `guard` belongs to another `Condition`.
    pub fn wait<'a>(&self, guard: ConditionGuard<'a>) -> LockResult<ConditionGuard<'a>> {
        match self.wait_until(guard, None) {
            Ok((g, _)) => Ok(g),
            Err(p) => Err(PoisonError::new(p.into_inner().0)),
        }
    }

    /// As [`wait`](Self::wait), for at most `timeout`. The wait ends at its
    /// deadline: an early wakeup that finds nothing to do does not restart
    /// the clock.
    pub fn wait_timeout<'a>(&self, guard: ConditionGuard<'a>, timeout: Duration) -> WaitResult<'a> {
        self.wait_until(guard, Some(&Deadline::after(timeout)))
    }

    /// Waits while `condition()` returns `true`, checking it under the lock
    /// before each wait.
    pub fn wait_while<'a>(
        &self,
        mut guard: ConditionGuard<'a>,
        mut condition: impl FnMut() -> bool,
    ) -> LockResult<ConditionGuard<'a>> {
        while condition() {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// Waits while `condition()` returns `true`, for at most `timeout` in all.
    /// `timed_out()` is `true` if the time ran out with the condition still
    /// true.
    pub fn wait_timeout_while<'a>(
        &self,
        mut guard: ConditionGuard<'a>,
        timeout: Duration,
        mut condition: impl FnMut() -> bool,
    ) -> WaitResult<'a> {
        let deadline = Deadline::after(timeout);
        loop {
            if !condition() {
                return Ok((guard, WaitTimeoutResult(false)));
            }
            if deadline.has_passed() {
                return Ok((guard, WaitTimeoutResult(true)));
            }
            guard = self.wait_until(guard, Some(&deadline))?.0;
        }
    }

    /// Wakes one waiter, if one is asleep.
    #[inline]
    pub fn notify_one(&self) {
        self.raw().notify_one()
    }

    /// Wakes every waiter asleep now.
    #[inline]
    pub fn notify_all(&self) {
        self.raw().notify_all()
    }

    /// Wakes at most `n` of the waiters asleep now.
    #[inline]
    pub fn notify(&self, n: usize) {
        self.raw().notify(n)
    }
}
