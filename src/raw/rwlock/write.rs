//! Write locks, upgradable reads, upgrades and downgrades: the exclusive
//! side plus the drain of the readers, with the fairness step.

use super::*;

impl RawRwLock {
    /// Blocks until the calling thread holds the write lock (exclusive).
    /// [`Locked::Poisoned`] if a previous writer died or panicked holding it.
    ///
    /// # Panics
    /// If the calling thread holds a read, upgradable or write lock on it.
    #[inline]
    pub fn write(&self) -> Locked {
        let me = me();
        match self.write_fast(me) {
            Some(true) => self.flag(),
            Some(false) => blocking("RawRwLock::write", self.finish_write(me, None, true)),
            None => blocking("RawRwLock::write", self.write_slow(me, None)),
        }
    }

    /// Takes the write lock if no one holds the lock; `None` otherwise.
    #[inline]
    pub fn try_write(&self) -> Option<Locked> {
        let me = me();
        match self.write_fast(me) {
            Some(true) => Some(self.flag()),
            Some(false) => self.finish_write(me, Some(&Deadline::after(Duration::ZERO)), false).ok(),
            // WRITING with no holder is garbage that only a taker repairs:
            // let this one (without waiting) rather than fail for ever.
            None if self.state.load(Ordering::Relaxed) & (HOLDER | WRITING) == WRITING => {
                self.write_slow(me, Some(&Deadline::after(Duration::ZERO))).ok()
            }
            None => None,
        }
    }

    /// Takes the write lock, waiting at most `timeout`; `None` on timeout.
    pub fn try_write_for(&self, timeout: Duration) -> Option<Locked> {
        let me = me();
        let deadline = Deadline::after(timeout);
        match self.write_fast(me) {
            Some(true) => Some(self.flag()),
            Some(false) => self.finish_write(me, Some(&deadline), true).ok(),
            None => self.write_slow(me, Some(&deadline)).ok(),
        }
    }

    /// One compare-exchange for the exclusive side with WRITING, then a
    /// look at the readers. `None`: the exclusive side is taken; `Some(true)`:
    /// the write lock is ours; `Some(false)`: ours once readers drain.
    #[inline]
    pub(super) fn write_fast(&self, me: Me) -> Option<bool> {
        let s = self.state.load(Ordering::Relaxed);
        if s & (HOLDER | WRITING) != 0 {
            return None;
        }
        // SeqCst: the writer's half of the handshake with readers.
        if self.state.compare_exchange(s, s | me.tid | WRITING, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return None;
        }
        self.owner_start.store(me.start, Ordering::Relaxed);
        crash_point!("rwlock.write.announced");
        if self.waiting.load(Ordering::SeqCst) == 0 && self.no_readers() {
            crash_point!("rwlock.write.drained");
            return Some(true);
        }
        Some(false)
    }

    #[cold]
    pub(super) fn write_slow(&self, me: Me, deadline: Option<&Deadline>) -> Result<Locked, Fail> {
        self.take_exclusive(me, WRITING, deadline)?;
        crash_point!("rwlock.write.announced");
        self.finish_write(me, deadline, true)
    }

    /// Holding the exclusive side with WRITING: lets waiting readers in
    /// first (if `fair`), then waits for the readers to drain. On failure
    /// the exclusive side is released.
    #[cold]
    pub(super) fn finish_write(&self, me: Me, deadline: Option<&Deadline>, fair: bool) -> Result<Locked, Fail> {
        match self.drain_all(me, deadline, fair) {
            Ok(()) => {
                crash_point!("rwlock.write.drained");
                Ok(self.flag())
            }
            Err(e) => {
                self.release_exclusive();
                Err(e)
            }
        }
    }

    /// Releases the write lock.
    ///
    /// # Safety
    /// The calling thread must hold the write lock (from `write`, a `try_`
    /// form that returned `Some`, or `upgrade`).
    #[inline]
    pub unsafe fn unlock_write(&self) {
        self.release_exclusive();
    }

    /// Blocks until the calling thread holds an upgradable read: shared with
    /// readers, exclusive of writers and of other upgradable readers, and
    /// convertible to the write lock with [`upgrade`](Self::upgrade).
    ///
    /// # Panics
    /// If the calling thread holds the write lock or an upgradable read.
    pub fn upgradable_read(&self) -> Locked {
        blocking("RawRwLock::upgradable_read", self.upgradable_until(None))
    }

    /// Takes an upgradable read if the exclusive side is free.
    pub fn try_upgradable_read(&self) -> Option<Locked> {
        self.upgradable_until(Some(&Deadline::after(Duration::ZERO))).ok()
    }

    /// Takes an upgradable read, waiting at most `timeout`.
    pub fn try_upgradable_read_for(&self, timeout: Duration) -> Option<Locked> {
        self.upgradable_until(Some(&Deadline::after(timeout))).ok()
    }

    pub(super) fn upgradable_until(&self, deadline: Option<&Deadline>) -> Result<Locked, Fail> {
        let me = me();
        let s = self.state.load(Ordering::Relaxed);
        if self.held_by_me(s, me) {
            // This thread reads through the exclusive side already.
            if s & WRITING == 0 && self.upgradable.load(Ordering::Relaxed) == 0 {
                self.upgradable.store(1, Ordering::Relaxed);
                return Ok(self.flag());
            }
            return Err(Fail::Deadlock);
        }
        self.take_exclusive(me, 0, deadline)?;
        self.held_reads.store(0, Ordering::Relaxed);
        self.upgradable.store(1, Ordering::Relaxed);
        crash_point!("rwlock.upgradable.acquired");
        Ok(self.flag())
    }

    /// Turns the calling thread's upgradable read into the write lock,
    /// waiting for the other readers to leave.
    ///
    /// # Safety
    /// The calling thread must hold an upgradable read on this lock.
    ///
    /// # Panics
    /// If the calling thread also holds a read lock (it would wait for
    /// itself); the upgradable read is kept.
    pub unsafe fn upgrade(&self) -> Locked {
        blocking("RawRwLock::upgrade", self.upgrade_until(None, true))
    }

    /// As [`upgrade`](Self::upgrade), if no other reader holds the lock;
    /// `false` (still upgradable) otherwise.
    ///
    /// # Safety
    /// As for `upgrade`.
    pub unsafe fn try_upgrade(&self) -> bool {
        self.upgrade_until(Some(&Deadline::after(Duration::ZERO)), false).is_ok()
    }

    /// As [`upgrade`](Self::upgrade), waiting at most `timeout`; `false`
    /// (still upgradable) on timeout.
    ///
    /// # Safety
    /// As for `upgrade`.
    pub unsafe fn try_upgrade_for(&self, timeout: Duration) -> bool {
        self.upgrade_until(Some(&Deadline::after(timeout)), true).is_ok()
    }

    pub(super) fn upgrade_until(&self, deadline: Option<&Deadline>, fair: bool) -> Result<Locked, Fail> {
        let me = me();
        if self.held_reads.load(Ordering::Relaxed) != 0 {
            return Err(Fail::Deadlock);
        }
        // SeqCst: the writer's half of the handshake with readers.
        self.state.fetch_or(WRITING, Ordering::SeqCst);
        crash_point!("rwlock.upgrade.announced");
        match self.drain_all(me, deadline, fair) {
            Ok(()) => {
                self.upgradable.store(0, Ordering::Relaxed);
                crash_point!("rwlock.upgrade.drained");
                Ok(self.flag())
            }
            Err(e) => {
                self.clear_writing();
                Err(e)
            }
        }
    }

    /// Releases an upgradable read.
    ///
    /// # Safety
    /// The calling thread must hold an upgradable read on this lock.
    pub unsafe fn unlock_upgradable(&self) {
        self.upgradable.store(0, Ordering::Relaxed);
        if self.held_reads.load(Ordering::Relaxed) == 0 {
            self.release_exclusive();
        }
    }

    /// Takes a read count for the calling thread, which holds the exclusive
    /// side: in its slot, or through the exclusive side if no slot is free
    /// (or its slot's count is full). Returns whether it used a slot.
    pub(super) fn count_own_read(&self, me: Me) -> bool {
        if let Some(i) = self.own_slot(me, Some(hint(me.tid))) {
            HINT.set(i as u32);
            let slot = &self.slots[i];
            let mut w = slot.word.load(Ordering::Relaxed);
            while self.is_mine(i, w, me) && count(w) < COUNT {
                // SeqCst, as any reader's count; the release of the exclusive
                // side that follows publishes it before a writer can scan.
                match slot.word.compare_exchange(w, w + 1, Ordering::SeqCst, Ordering::Relaxed) {
                    Ok(_) => return true,
                    Err(now) => w = now,
                }
            }
        }
        self.held_reads.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Turns the calling thread's write lock into a read lock, letting other
    /// readers in and keeping writers out throughout.
    ///
    /// # Safety
    /// The calling thread must hold the write lock.
    pub unsafe fn downgrade(&self) {
        let me = me();
        // A writer holds no reads through the exclusive side; a dead former
        // holder may have left counts here.
        self.held_reads.store(0, Ordering::Relaxed);
        self.upgradable.store(0, Ordering::Relaxed);
        let in_slot = self.count_own_read(me);
        crash_point!("rwlock.downgrade.counted");
        if in_slot {
            self.release_exclusive();
        } else {
            self.clear_writing();
        }
    }

    /// Turns the calling thread's write lock into an upgradable read.
    ///
    /// # Safety
    /// The calling thread must hold the write lock.
    pub unsafe fn downgrade_to_upgradable(&self) {
        self.held_reads.store(0, Ordering::Relaxed);
        self.upgradable.store(1, Ordering::Relaxed);
        self.clear_writing();
    }

    /// Turns the calling thread's upgradable read into a plain read lock.
    ///
    /// # Safety
    /// The calling thread must hold an upgradable read.
    pub unsafe fn downgrade_upgradable(&self) {
        let me = me();
        self.count_own_read(me);
        // SAFETY: forwarded from the caller.
        unsafe { self.unlock_upgradable() };
    }
}
