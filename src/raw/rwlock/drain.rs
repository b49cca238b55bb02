//! The exclusive holder's waits for readers: the fairness step that lets
//! queued readers in first, and the drain of the reads in progress, asleep
//! on `drain` with DRAINING set.

use super::*;

/// Slices of sleep after which a writer letting queued readers in stops
/// waiting for the ones that have not come.
const STALE_AFTER_SLICES: u32 = 2;

impl RawRwLock {
    /// Holding the exclusive side with WRITING: the fairness step, then the
    /// drain.
    pub(super) fn drain_all(&self, me: Me, deadline: Option<&Deadline>, fair: bool) -> Result<(), Fail> {
        if fair && self.waiting.load(Ordering::SeqCst) != 0 {
            self.let_waiting_readers_in(me, deadline)?;
        }
        self.wait_for(deadline, |lock, look| {
            let left = lock.readers_left(me)?;
            if left && look == Look::AfterSlice {
                lock.reclaim_dead_readers();
            }
            Ok(left)
        })
    }

    /// Clears WRITING so the readers that queued behind an earlier writer
    /// get in, waits until none is queued, and sets WRITING again.
    #[cold]
    pub(super) fn let_waiting_readers_in(&self, me: Me, deadline: Option<&Deadline>) -> Result<(), Fail> {
        let published = self.publish_clear_writing();
        crash_point!("rwlock.write.yielded");
        self.wake_if_sleepers(published);
        // A queued reader that died costs a liveness check, made before each
        // sleep rather than after a slice. Two slices (at least 0.75 s) with
        // WRITING clear are far more than a live queued reader needs to get
        // in (each was woken just above): marks still standing then are
        // stale (garbage, or a reader that cannot run and queues again when
        // it does), and this writer stops waiting for them.
        let mut slices = 0;
        self.wait_for(deadline, |lock, look| {
            if look == Look::AfterSlice {
                slices += 1;
                if slices == STALE_AFTER_SLICES {
                    lock.forget_queued_readers();
                    return Ok(false);
                }
            }
            Ok(lock.queued_readers(me, look != Look::Again))
        })?;
        self.state.fetch_or(WRITING, Ordering::SeqCst);
        Ok(())
    }

    /// The exclusive holder's wait on `drain`: spins, then sleeps with
    /// DRAINING set, until `blocked` says there is nothing left to wait
    /// for; `blocked` is told where the wait is, to choose when to check
    /// for the dead.
    pub(super) fn wait_for(
        &self,
        deadline: Option<&Deadline>,
        mut blocked: impl FnMut(&Self, Look) -> Result<bool, Fail>,
    ) -> Result<(), Fail> {
        let mut spin = SpinWait::new(Spin::RwLock, deadline);
        let mut sleeper = Sleeper::new();
        let mut announced = false;
        let mut look = Look::Again;
        let result = loop {
            match blocked(self, look) {
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
                Ok(true) => {}
            }
            if deadline.is_some_and(Deadline::has_passed) {
                break Err(Fail::Timeout);
            }
            look = Look::Again;
            if spin.spin() {
                continue;
            }
            if !announced {
                // SeqCst: set before the last look below, which the readers'
                // SeqCst changes and loads of `state` pair with.
                self.state.fetch_or(DRAINING, Ordering::SeqCst);
                announced = true;
            }
            let seq = self.drain.load(Ordering::SeqCst);
            match blocked(self, Look::BeforeSleep) {
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
                Ok(true) => {}
            }
            match sleeper.sleep(&self.drain, seq, deadline) {
                Woke::Recheck => look = Look::AfterSlice,
                // One last look, for the dead too, before giving up.
                Woke::Deadline if sleeper.slept() => {
                    if let Ok(false) = blocked(self, Look::AfterSlice) {
                        break Ok(());
                    }
                }
                _ => {}
            }
        };
        if announced {
            self.state.fetch_and(!DRAINING, Ordering::Relaxed);
        }
        result
    }
}
