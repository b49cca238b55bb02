//! The exclusive side: one futex word naming its holder (a writer or an
//! upgradable reader), its release, and the recovery of a dead holder.

use super::*;

impl RawRwLock {
    /// Whether `state` word `s` names the calling thread as the exclusive
    /// holder. A holder with this tid and an unknown start is this thread:
    /// the only other candidate, a dead thread whose tid was recycled to
    /// this one in the instant between its claim and its stamp, is not
    /// worth a false recovery.
    pub(super) fn held_by_me(&self, s: u32, me: Me) -> bool {
        s & HOLDER == me.tid && {
            let start = self.owner_start.load(Ordering::Relaxed);
            start == me.start || start == 0
        }
    }

    /// Takes the exclusive side, with `bits` (WRITING or nothing) set in the
    /// same step; waits while another thread holds it.
    pub(super) fn take_exclusive(&self, me: Me, bits: u32, deadline: Option<&Deadline>) -> Result<(), Fail> {
        let mut spin = SpinWait::new(Spin::RwLock, deadline);
        let mut sleeper = Sleeper::new();
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & HOLDER == 0 {
                // WRITING with no holder is never written by this crate (a
                // scribbled word): taken as a writer's death.
                let stray = s & WRITING != 0;
                let next = (s & !WRITING) | me.tid | bits;
                // SeqCst: a writer's half of the handshake with readers.
                if self.state.compare_exchange(s, next, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                    self.owner_start.store(me.start, Ordering::Relaxed);
                    if stray {
                        log::warn!("shmsync: an RwLock's state marked a writer without a holder; poisoned");
                        self.poison();
                    }
                    return Ok(());
                }
                continue;
            }
            if self.held_by_me(s, me) {
                return Err(Fail::Deadlock);
            }
            if deadline.is_some_and(Deadline::has_passed) {
                return Err(Fail::Timeout);
            }
            if self.wait_on_state(s, &mut spin, &mut sleeper, deadline) {
                crash_point!("rwlock.exclusive.woken");
            }
        }
    }

    /// One round of waiting for `state`, last seen as `s`, to change, for
    /// a thread that must not go on while it is `s`: a spin while the
    /// budget lasts; else SLEEPERS set in `s` (unless the word changed
    /// meanwhile: look again) and a sleep on `state`, after whose slice a
    /// dead holder is recovered. `true` if a wake ended the sleep (the
    /// caller marks its own crash point there).
    pub(super) fn wait_on_state(
        &self,
        s: u32,
        spin: &mut SpinWait<'_>,
        sleeper: &mut Sleeper,
        deadline: Option<&Deadline>,
    ) -> bool {
        if spin.spin() {
            return false;
        }
        if s & SLEEPERS == 0
            && self.state.compare_exchange(s, s | SLEEPERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return false;
        }
        match sleeper.sleep(&self.state, s | SLEEPERS, deadline) {
            Woke::Signalled => true,
            Woke::Recheck => {
                self.recover_dead_holder();
                false
            }
            // The caller looks once more before it gives up.
            Woke::Deadline => {
                if sleeper.slept() {
                    self.recover_dead_holder();
                }
                false
            }
        }
    }

    /// Gives up the exclusive side: clears HOLDER, WRITING and DRAINING in
    /// one step that keeps SLEEPERS, then wakes the sleepers.
    #[inline]
    pub(super) fn release_exclusive(&self) {
        self.owner_start.store(0, Ordering::Relaxed);
        let mut s = self.state.load(Ordering::Relaxed);
        let published = loop {
            let next = (s & (SLEEPERS | PHASE)).wrapping_add(PHASE_ONE);
            // Release: the holder's writes happen before the next holder's
            // or reader's acquire of this word.
            match self.state.compare_exchange_weak(s, next, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(now) => s = now,
            }
        };
        if published & SLEEPERS != 0 {
            crash_point!("rwlock.unlock.published");
            self.wake_sleepers(published);
            crash_point!("rwlock.unlock.woken");
        }
    }

    /// Clears WRITING (and DRAINING), keeping the exclusive side, and wakes
    /// the readers waiting for it.
    pub(super) fn clear_writing(&self) {
        let published = self.publish_clear_writing();
        self.wake_if_sleepers(published);
    }

    /// The first half of `clear_writing`: the word without WRITING, keeping
    /// SLEEPERS. Returns the word published.
    pub(super) fn publish_clear_writing(&self) -> u32 {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let next = (s & !(WRITING | DRAINING)).wrapping_add(PHASE_ONE);
            match self.state.compare_exchange_weak(s, next, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(now) => s = now,
            }
        }
    }

    /// The second half: wakes the sleepers if `published` says any may sleep.
    pub(super) fn wake_if_sleepers(&self, published: u32) {
        if published & SLEEPERS != 0 {
            self.wake_sleepers(published);
        }
    }

    /// Wakes everyone asleep on `state`, then clears SLEEPERS only if the
    /// word is still `published` (a later sleeper has set it again).
    #[cold]
    pub(super) fn wake_sleepers(&self, published: u32) {
        futex::wake_all(&self.state);
        let _ = self.state.compare_exchange(published, published & !SLEEPERS, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// After a slice of sleep on `state`: if the exclusive holder is dead,
    /// poison the lock if it was writing, free the exclusive side, and wake
    /// the other sleepers. WRITING with no holder (never written by this
    /// crate: every taker sets both in one step, every release clears both)
    /// is garbage, recovered the same way: readers alone would otherwise
    /// wait for a writer that does not exist.
    #[cold]
    pub(super) fn recover_dead_holder(&self) {
        let s = self.state.load(Ordering::Acquire);
        let tid = s & HOLDER;
        if tid == 0 {
            if s & WRITING == 0 {
                return; // free
            }
        } else {
            let start = self.owner_start.load(Ordering::Relaxed);
            // A live task that does not map this lock holds nothing in it.
            if (Identity { id: tid, start }).could_hold(self as *const Self as usize) {
                return;
            }
        }
        if s & WRITING != 0 {
            // Before the exclusive side is freed: no one may take it clean.
            self.poisoned.store(POISONED, Ordering::Release);
        }
        // A late recoverer's 0 reads as "unknown" to a new holder: harmless.
        self.owner_start.store(0, Ordering::Relaxed);
        let mut cur = self.state.load(Ordering::Relaxed);
        let published = loop {
            // The same holder in the same phase, or someone recovered first.
            if cur & !SLEEPERS != s & !SLEEPERS {
                return;
            }
            let next = (cur & (SLEEPERS | PHASE)).wrapping_add(PHASE_ONE);
            match self.state.compare_exchange(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(now) => cur = now,
            }
        };
        if tid == 0 {
            log::warn!("shmsync: an RwLock's state marked a writer without a holder; recovered, poisoned");
        } else {
            log::warn!(
                "shmsync: an RwLock's {} (thread {tid}) died holding it; recovered{}",
                if s & WRITING != 0 { "writer" } else { "upgradable reader" },
                if s & WRITING != 0 { ", poisoned" } else { "" }
            );
        }
        crash_point!("rwlock.recover.released");
        if published & SLEEPERS != 0 {
            self.wake_sleepers(published);
        }
    }
}
