//! Taking and releasing read locks: the fast path on the reader's own
//! slot, waiting behind a writer, and reads held through the exclusive side
//! when no slot is free.

use super::*;

impl RawRwLock {
    /// Blocks until the calling thread holds a read lock (shared with other
    /// readers, exclusive of writers). [`Locked::Poisoned`] if the lock is
    /// poisoned.
    ///
    /// # Panics
    /// If the calling thread holds the write lock.
    #[inline]
    pub fn read(&self) -> Locked {
        match self.read_fast() {
            Ok(how) => how,
            Err(mine) => blocking("RawRwLock::read", self.read_slow(mine, None)),
        }
    }

    /// Takes a read lock if no writer holds or waits for the lock; `None`
    /// otherwise (also if the calling thread holds the write lock).
    #[inline]
    pub fn try_read(&self) -> Option<Locked> {
        match self.read_fast() {
            Ok(how) => Some(how),
            Err(mine) => self.read_slow(mine, Some(&Deadline::after(Duration::ZERO))).ok(),
        }
    }

    /// Takes a read lock, waiting at most `timeout`; `None` on timeout (or
    /// at once if the calling thread holds the write lock).
    pub fn try_read_for(&self, timeout: Duration) -> Option<Locked> {
        match self.read_fast() {
            Ok(how) => Some(how),
            Err(mine) => self.read_slow(mine, Some(&Deadline::after(timeout))).ok(),
        }
    }

    /// Whether slot `i`, whose word is `w`, is the calling thread's.
    #[inline]
    pub(super) fn is_mine(&self, i: usize, w: u64, me: Me) -> bool {
        owner(w) == me.tid && self.slots[i].stamp.load(Ordering::Relaxed) == stamp(w, me.start)
    }

    /// The uncontended read: this thread's slot is where it looked last.
    /// `Err` carries that slot if it is this thread's, for the slow path.
    #[inline]
    pub(super) fn read_fast(&self) -> Result<Locked, Option<usize>> {
        let me = me();
        let i = hint(me.tid);
        let slot = &self.slots[i];
        let w = slot.word.load(Ordering::Relaxed);
        if !self.is_mine(i, w, me) {
            return Err(None);
        }
        match count(w) {
            0 if w & WAITING == 0 => {}
            COUNT => return Err(Some(i)),
            0 => return Err(Some(i)),
            _ => {
                // Nested: this thread holds a read already, so no writer is
                // in, nor can one get in; no ordering is needed.
                return match slot.word.compare_exchange(w, w + 1, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => Ok(self.flag()),
                    Err(_) => Err(Some(i)),
                };
            }
        }
        // SeqCst, with the SeqCst load of `state` below: the reader's half of
        // the handshake with a writer's SeqCst claim of WRITING and scan.
        if slot.word.compare_exchange(w, w + 1, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return Err(Some(i));
        }
        crash_point!("rwlock.read.counted");
        if self.state.load(Ordering::SeqCst) & WRITING == 0 {
            return Ok(self.flag());
        }
        self.give_back(i, false);
        Err(Some(i))
    }

    /// Takes back the count a reader just added to its slot `i` on finding
    /// a writer, marking it WAITING if `wait`.
    #[cold]
    pub(super) fn give_back(&self, i: usize, wait: bool) {
        let slot = &self.slots[i];
        let mut w = slot.word.load(Ordering::Relaxed);
        loop {
            if count(w) == 0 {
                // A peer zeroed the count under us (garbage): nothing to give back.
                return;
            }
            let next = if wait { (w - 1) | WAITING } else { w - 1 };
            // SeqCst: the writer's scan must see the count gone before this
            // thread looks at DRAINING.
            match slot.word.compare_exchange(w, next, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        if wait {
            self.waiting.fetch_or(1 << i, Ordering::SeqCst);
        }
        if self.state.load(Ordering::SeqCst) & DRAINING != 0 {
            self.wake_drainer();
        }
    }

    /// The one read path that waits: finds the thread's slot, then enters
    /// whenever no writer is in, waiting (WAITING, asleep on `state`)
    /// while one is.
    #[cold]
    pub(super) fn read_slow(&self, mut mine: Option<usize>, deadline: Option<&Deadline>) -> Result<Locked, Fail> {
        let me = me();
        loop {
            let Some(i) = self.own_slot(me, mine) else {
                return self.read_through_exclusive(me, deadline);
            };
            HINT.set(i as u32);
            if let Some(done) = self.read_in_slot(me, i, deadline) {
                return done;
            }
            // The slot was taken over while idle: find another.
            mine = None;
        }
    }

    /// `read_slow` in this thread's slot `i`; `None` if the slot is taken
    /// over (it was idle: this thread had not counted in it yet).
    fn read_in_slot(&self, me: Me, i: usize, deadline: Option<&Deadline>) -> Option<Result<Locked, Fail>> {
        let slot = &self.slots[i];
        let mut spin = SpinWait::new(Spin::RwLock, deadline);
        let mut sleeper = Sleeper::new();
        loop {
            let w = slot.word.load(Ordering::Relaxed);
            if !self.is_mine(i, w, me) {
                return None;
            }
            match count(w) {
                0 => {}
                COUNT => return Some(Err(Fail::TooManyReads)),
                _ => {
                    if slot.word.compare_exchange(w, w + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                        return Some(Ok(self.flag()));
                    }
                    continue;
                }
            }
            let s = self.state.load(Ordering::SeqCst);
            if s & WRITING == 0 {
                let entered = (w & !WAITING) + 1;
                // SeqCst: as in `read_fast`.
                if slot.word.compare_exchange(w, entered, Ordering::SeqCst, Ordering::Relaxed).is_err() {
                    continue;
                }
                crash_point!("rwlock.read.counted");
                if self.state.load(Ordering::SeqCst) & WRITING == 0 {
                    if w & WAITING != 0 {
                        self.stop_waiting(i);
                    }
                    return Some(Ok(self.flag()));
                }
                self.give_back(i, true);
                continue;
            }
            if self.held_by_me(s, me) {
                self.unqueue(i);
                return Some(Err(Fail::Deadlock));
            }
            if deadline.is_some_and(Deadline::has_passed) {
                self.unqueue(i);
                return Some(Err(Fail::Timeout));
            }
            if w & WAITING == 0 {
                // Queue up: the next writer lets waiting readers in first.
                // The slot's bit first, then the mask's (see `check`).
                if slot.word.compare_exchange(w, w | WAITING, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                    self.waiting.fetch_or(1 << i, Ordering::SeqCst);
                    crash_point!("rwlock.read.waiting");
                }
                continue;
            }
            if self.wait_on_state(s, &mut spin, &mut sleeper, deadline) {
                crash_point!("rwlock.read.woken");
            }
        }
    }

    /// A reader that queued has got in: it leaves the queue, and wakes a
    /// holder that waits for the queue to empty.
    pub(super) fn stop_waiting(&self, i: usize) {
        // SeqCst: pairs with the holder's DRAINING and its look at `waiting`.
        self.waiting.fetch_and(!(1 << i), Ordering::SeqCst);
        if self.state.load(Ordering::SeqCst) & DRAINING != 0 {
            self.wake_drainer();
        }
    }

    /// A queued reader gives up (deadline, or it would wait for itself).
    pub(super) fn unqueue(&self, i: usize) {
        let prev = self.slots[i].word.fetch_and(!WAITING, Ordering::SeqCst);
        if prev & WAITING != 0 {
            self.stop_waiting(i);
        }
    }

    /// A read held as the exclusive holder, for a thread that found no slot.
    #[cold]
    pub(super) fn read_through_exclusive(&self, me: Me, deadline: Option<&Deadline>) -> Result<Locked, Fail> {
        let s = self.state.load(Ordering::Relaxed);
        if self.held_by_me(s, me) {
            if s & WRITING != 0 {
                return Err(Fail::Deadlock);
            }
            // Holder-only fields: only this thread writes them now.
            self.held_reads.fetch_add(1, Ordering::Relaxed);
            return Ok(self.flag());
        }
        self.take_exclusive(me, 0, deadline)?;
        self.upgradable.store(0, Ordering::Relaxed);
        self.held_reads.store(1, Ordering::Relaxed);
        Ok(self.flag())
    }

    /// Releases a read lock.
    ///
    /// # Safety
    /// The calling thread must hold a read lock on this lock (from `read`,
    /// a `try_read` that returned `Some`, or a downgrade).
    #[inline]
    pub unsafe fn unlock_read(&self) {
        let me = me();
        let i = hint(me.tid);
        let w = self.slots[i].word.load(Ordering::Relaxed);
        if count(w) != 0 && self.is_mine(i, w, me) && self.release_count(i, w) {
            return;
        }
        self.unlock_read_slow(me);
    }

    /// Gives back one count of slot `i` (word `w`, this thread's), waking a
    /// holder that drains the readers. `false` if the word changed.
    #[inline]
    pub(super) fn release_count(&self, i: usize, w: u64) -> bool {
        // SeqCst: pairs with a draining holder's SeqCst DRAINING and rescan;
        // and it is a release: the reader's reads happen before a writer's
        // writes.
        if self.slots[i].word.compare_exchange(w, w - 1, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return false;
        }
        if count(w) == 1 {
            crash_point!("rwlock.read_unlock.released");
            if self.state.load(Ordering::SeqCst) & DRAINING != 0 {
                self.wake_drainer();
            }
        }
        true
    }

    #[cold]
    pub(super) fn unlock_read_slow(&self, me: Me) {
        loop {
            let found = (0..READER_SLOTS).find_map(|i| {
                let w = self.slots[i].word.load(Ordering::Relaxed);
                (count(w) != 0 && self.is_mine(i, w, me)).then_some((i, w))
            });
            match found {
                Some((i, w)) => {
                    if self.release_count(i, w) {
                        HINT.set(i as u32);
                        return;
                    }
                }
                None => break,
            }
        }
        let s = self.state.load(Ordering::Relaxed);
        if self.held_by_me(s, me) && self.held_reads.load(Ordering::Relaxed) > 0 {
            if self.held_reads.fetch_sub(1, Ordering::Relaxed) == 1 && self.upgradable.load(Ordering::Relaxed) == 0 {
                self.release_exclusive();
            }
            return;
        }
        // A guard inherited across fork and dropped in the child ends here:
        // the read belongs to the parent's thread, and stays.
        log::error!("shmsync: RawRwLock::unlock_read called by a thread that holds no read lock; ignored");
    }

    /// Wakes the exclusive holder asleep on `drain` (a reader left, or a
    /// waiting reader got in). DRAINING is the holder's to clear.
    #[cold]
    pub(super) fn wake_drainer(&self) {
        // SeqCst: the holder loads `drain` before its last look at the slots.
        self.drain.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&self.drain);
    }
}
