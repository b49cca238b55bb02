//! The reader table: finding, claiming, taking over and reclaiming slots,
//! and the writer's scans of it.

use super::*;

impl RawRwLock {
    /// This thread's slot: `mine` if it still is, one it already has, a free
    /// one it claims, an idle one it takes over, or a dead reader's (whose
    /// share it reclaims). `None` if every slot is busy with a live reader.
    pub(super) fn own_slot(&self, me: Me, mine: Option<usize>) -> Option<usize> {
        if let Some(i) = mine {
            if self.is_mine(i, self.slots[i].word.load(Ordering::Relaxed), me) {
                return Some(i);
            }
        }
        let start = home(me.tid);
        let order = || (0..READER_SLOTS).map(move |k| (start + k) % READER_SLOTS);
        if let Some(i) = order().find(|&i| self.is_mine(i, self.slots[i].word.load(Ordering::Relaxed), me)) {
            return Some(i);
        }
        for i in order() {
            let w = self.slots[i].word.load(Ordering::Relaxed);
            if owner(w) == 0 && self.claim(i, w, me, false) {
                return Some(i);
            }
        }
        for i in order() {
            let w = self.slots[i].word.load(Ordering::Relaxed);
            if count(w) == 0 && w & WAITING == 0 && self.claim(i, w, me, true) {
                return Some(i);
            }
        }
        for i in order() {
            let w = self.slots[i].word.load(Ordering::Relaxed);
            if !self.identity(i, w).is_alive() && self.reclaim(i, w) {
                let w = self.slots[i].word.load(Ordering::Relaxed);
                if owner(w) == 0 && self.claim(i, w, me, false) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Takes slot `i`, whose word is `w` (free, or idle if `take_over`),
    /// and stamps it with this thread's start time.
    pub(super) fn claim(&self, i: usize, w: u64, me: Me, take_over: bool) -> bool {
        let slot = &self.slots[i];
        // The mask bit before the word, so an owned slot is always in the
        // mask writers scan.
        self.claimed.fetch_or(1 << i, Ordering::SeqCst);
        let base = if take_over { freed(w) } else { w & TAG };
        let mine = base | u64::from(me.tid) << OWNER_SHIFT;
        if slot.word.compare_exchange(w, mine, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return false;
        }
        // The stamp is replaced only while the word still shows this claim,
        // so a slow claimer that lost the slot cannot overwrite the stamp of
        // the thread that took it over.
        let want = stamp(mine, me.start);
        let mut seen = slot.stamp.load(Ordering::Acquire);
        loop {
            if slot.word.load(Ordering::Acquire) & !(COUNT | WAITING) != mine & !(COUNT | WAITING) {
                return false;
            }
            match slot.stamp.compare_exchange(seen, want, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => seen = now,
            }
        }
    }

    /// Who owns slot `i` (word `w`), as far as its stamp tells.
    pub(super) fn identity(&self, i: usize, w: u64) -> Identity {
        let st = self.slots[i].stamp.load(Ordering::Acquire);
        let start = if st >> STAMP_SHIFT == (w & TAG) >> TAG_SHIFT { st & START } else { 0 };
        Identity { id: owner(w), start }
    }

    /// Frees slot `i` of a dead owner (word `w`): its reads and its place in
    /// the queue go with it.
    pub(super) fn reclaim(&self, i: usize, w: u64) -> bool {
        if self.slots[i].word.compare_exchange(w, freed(w), Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return false;
        }
        if count(w) != 0 {
            log::warn!(
                "shmsync: a reader (thread {}) died holding {} read lock(s) of an RwLock; reclaimed",
                owner(w),
                count(w)
            );
        }
        if w & WAITING != 0 {
            self.waiting.fetch_and(!(1 << i), Ordering::SeqCst);
        }
        true
    }

    /// Whether no slot holds a read (SeqCst: the writer's scan).
    #[inline]
    pub(super) fn no_readers(&self) -> bool {
        bits(self.claimed.load(Ordering::SeqCst)).all(|i| count(self.slots[i].word.load(Ordering::SeqCst)) == 0)
    }

    /// Whether a slot holds reads (SeqCst: the writer's scan);
    /// `Err(Deadlock)` if one of them is the calling thread's.
    pub(super) fn readers_left(&self, me: Me) -> Result<bool, Fail> {
        let mut any = false;
        for i in bits(self.claimed.load(Ordering::SeqCst)) {
            let w = self.slots[i].word.load(Ordering::SeqCst);
            if count(w) != 0 {
                if self.is_mine(i, w, me) {
                    return Err(Fail::Deadlock);
                }
                any = true;
            }
        }
        Ok(any)
    }

    /// Whether a live reader is queued; clears stale queue bits (among
    /// them a mark on the slot of `me`, the writer, which cannot be queued
    /// as a reader), and (if `check_alive`) reclaims the slots of dead
    /// queued readers.
    pub(super) fn queued_readers(&self, me: Me, check_alive: bool) -> bool {
        for i in bits(self.waiting.load(Ordering::SeqCst)) {
            let w = self.slots[i].word.load(Ordering::SeqCst);
            if w & WAITING == 0 || owner(w) == 0 || self.is_mine(i, w, me) {
                self.waiting.fetch_and(!(1 << i), Ordering::SeqCst);
            } else if !(check_alive && !self.identity(i, w).is_alive() && self.reclaim(i, w)) {
                return true;
            }
        }
        false
    }

    /// Stops counting every queued reader as queued (their slots keep
    /// their own marks, which a reader clears when it gets in).
    #[cold]
    pub(super) fn forget_queued_readers(&self) {
        let stale = self.waiting.load(Ordering::SeqCst);
        self.waiting.fetch_and(!stale, Ordering::SeqCst);
    }

    /// After a slice: reclaims the slots of readers that died holding reads.
    #[cold]
    pub(super) fn reclaim_dead_readers(&self) {
        for i in bits(self.claimed.load(Ordering::SeqCst)) {
            let w = self.slots[i].word.load(Ordering::SeqCst);
            if count(w) != 0 && !self.identity(i, w).could_hold(self as *const Self as usize) {
                self.reclaim(i, w);
            }
        }
    }
}
