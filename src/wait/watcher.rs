//! The async watcher: threads that sleep in `futex_waitv` over the words
//! pending futures wait on, and wake those futures when a word changes.
//!
//! A *shard* is one thread and up to [`WORDS_PER_SHARD`] entries, one per
//! (word, expected value); every future pending on the same entry adds its
//! waker to it. The thread sleeps, without a timeout, on all its entries'
//! words plus its own control word (bumped when an entry is added, so it
//! re-arms with the new word, or when the auditor wants it to look). When it
//! wakes it compares each entry's word with the expected value and wakes the
//! wakers of those that differ, removing the entry.
//!
//! One *auditor* thread per process stands in for the re-check slices of
//! blocking waits: every [`AUDIT`] it loads every registered word and asks
//! each entry's readiness check (for changes a killed process published
//! without waking anyone), and pokes only a shard that has one to report.
//! That is a few loads per entry, once per period, for the whole process:
//! re-entering `futex_waitv` over 128 shared futexes costs the kernel far
//! more, so the shards never wake on a timer. With no registrations, the
//! auditor sleeps without a timeout too: an idle process costs no CPU.
//!
//! Entries hold the address of a word in a segment mapping. That mapping
//! stays mapped while any future registered on the entry lives (the future
//! borrows its object's handle), and a future removes its registration when
//! dropped, under the shard's lock, before the borrow ends. The thread reads
//! an entry's word only under that lock; the kernel reading a word that was
//! unmapped in between fails with `EFAULT`, which is just another wake.
//!
//! After a fork, the child has the watcher's state but not its threads: the
//! state is keyed by pid and started afresh in the child.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use crate::raw::Sleeper;
use crate::sys::futex;

/// Words one shard watches; the kernel's limit, less the control word.
pub const WORDS_PER_SHARD: usize = futex::WAIT_MANY_MAX - 1;

/// How often the auditor looks for what a killed process left unannounced:
/// with the shard's own wake, a pending future goes on within this bound
/// (below `raw::RECHECK`).
pub const AUDIT: std::time::Duration = std::time::Duration::from_millis(500);

/// A readiness check for re-check slices: `true` if what the future waits
/// for holds (the future then polls again).
pub(crate) type Check = Box<dyn Fn() -> bool + Send>;

/// What a pending future watches.
pub(crate) struct Watch {
    pub word: *const AtomicU32,
    pub expected: u32,
    pub check: Option<Check>,
}

struct Entry {
    word: usize,
    expected: u32,
    check: Option<Check>,
    waiters: Vec<(u64, Waker)>,
}

impl Entry {
    fn fired(&self, recheck: bool) -> bool {
        // SAFETY: see the module docs: while an entry exists, some future
        // registered on it lives, and so does the mapping holding the word.
        let now = unsafe { &*(self.word as *const AtomicU32) }.load(Ordering::Acquire);
        now != self.expected || (recheck && self.check.as_ref().is_some_and(|c| c()))
    }
}

#[derive(Default)]
struct ShardState {
    entries: Vec<Entry>,
    next_id: u64,
}

struct Shard {
    state: Mutex<ShardState>,
    control: AtomicU32,
    /// The auditor found an entry to fire: look with the readiness checks.
    audit: std::sync::atomic::AtomicBool,
    /// No `futex_waitv` on this kernel: this shard watches one word, with
    /// a plain futex wait.
    single: bool,
}

struct Global {
    pid: u32,
    shards: Vec<Arc<Shard>>,
    auditor: Arc<Auditor>,
    /// Whether the auditor thread is running (a failed start is retried at
    /// the next registration).
    audited: bool,
}

/// How registrations reach a sleeping auditor.
#[derive(Default)]
struct Auditor {
    /// Bumped on every new entry, after it is in its shard.
    signal: AtomicU32,
    /// The auditor found nothing to watch and sleeps (or is about to) on
    /// `signal` without a timeout: only then does a registration pay for a
    /// wake.
    idle: std::sync::atomic::AtomicBool,
}

impl Auditor {
    /// A new entry is in a shard: make sure the auditor will look at it.
    ///
    /// The entry is added before `signal` moves (both `SeqCst` with `idle`),
    /// so an auditor that read `signal` before the bump sleeps on a stale
    /// value and returns at once, one that read it after sees the entry,
    /// and one already asleep is seen `idle` here and woken.
    fn notify(&self) {
        self.signal.fetch_add(1, Ordering::SeqCst);
        if self.idle.load(Ordering::SeqCst) {
            futex::wake_all(&self.signal);
        }
    }
}

static GLOBAL: Mutex<Option<Global>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in these short critical sections leaves the lists whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A future's place in a shard. Dropping it removes the future.
pub(crate) struct Registration {
    /// `None` when no watcher thread could be started: the future was
    /// woken at once, to poll again (a busy wait, never a hang).
    shard: Option<Arc<Shard>>,
    word: usize,
    expected: u32,
    id: u64,
}

// SAFETY: a Registration names a shard (Send + Sync) and holds only integers.
unsafe impl Send for Registration {}
// SAFETY: as above.
unsafe impl Sync for Registration {}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(shard) = &self.shard else { return };
        let mut state = lock(&shard.state);
        if let Some(pos) = state.entries.iter().position(|e| e.word == self.word && e.expected == self.expected) {
            let entry = &mut state.entries[pos];
            entry.waiters.retain(|(id, _)| *id != self.id);
            if entry.waiters.is_empty() {
                state.entries.swap_remove(pos);
            }
        }
    }
}

/// Registers `waker` to be woken when `watch.word` no longer holds
/// `watch.expected` (or its check holds at a re-check slice). `previous`, the
/// future's last registration, is reused when it watches the same thing.
pub(crate) fn register(watch: Watch, waker: &Waker, previous: Option<Registration>) -> Registration {
    let word = watch.word as usize;
    if let Some(mut reg) = previous {
        if let (Some(shard), true) = (reg.shard.clone(), reg.word == word && reg.expected == watch.expected) {
            let mut state = lock(&shard.state);
            if let Some(entry) = state.entries.iter_mut().find(|e| e.word == word && e.expected == watch.expected) {
                if let Some(slot) = entry.waiters.iter_mut().find(|(id, _)| *id == reg.id) {
                    if !slot.1.will_wake(waker) {
                        slot.1 = waker.clone();
                    }
                    drop(state);
                    return reg;
                }
            }
            // The entry fired meanwhile: register afresh below.
            drop(state);
            reg.word = 0; // nothing to remove on drop
        }
    }
    let Some((shard, auditor)) = shard_for(word, watch.expected) else {
        // No thread to watch the word (the process is out of threads): have
        // the runtime poll again rather than leave the future asleep.
        waker.wake_by_ref();
        return Registration { shard: None, word, expected: watch.expected, id: 0 };
    };
    let mut state = lock(&shard.state);
    let id = state.next_id;
    state.next_id += 1;
    let new_entry = match state.entries.iter_mut().find(|e| e.word == word && e.expected == watch.expected) {
        Some(entry) => {
            entry.waiters.push((id, waker.clone()));
            false
        }
        None => {
            state.entries.push(Entry {
                word,
                expected: watch.expected,
                check: watch.check,
                waiters: vec![(id, waker.clone())],
            });
            true
        }
    };
    drop(state);
    if new_entry {
        // Re-arm the thread with the new word, and have it audited.
        poke(&shard);
        auditor.notify();
    }
    Registration { shard: Some(shard), word, expected: watch.expected, id }
}

/// Wakes a shard's thread to look again.
fn poke(shard: &Shard) {
    shard.control.fetch_add(1, Ordering::Release);
    futex::wake_all(&shard.control);
}

/// The shard already watching (word, expected), or one with room, or a new
/// one, with the process's auditor; `None` if a new shard was needed and its
/// thread could not start.
fn shard_for(word: usize, expected: u32) -> Option<(Arc<Shard>, Arc<Auditor>)> {
    let mut global = lock(&GLOBAL);
    let me = std::process::id();
    if global.as_ref().is_none_or(|g| g.pid != me) {
        // First use, or a forked child: the parent's threads are not here.
        *global = Some(Global { pid: me, shards: Vec::new(), auditor: Arc::default(), audited: false });
    }
    let g = global.as_mut().unwrap_or_else(|| unreachable!("just set"));
    if !g.audited {
        let auditor = Arc::clone(&g.auditor);
        match std::thread::Builder::new().name("shmsync-audit".to_string()).spawn(move || audit(&auditor)) {
            Ok(_) => g.audited = true,
            Err(e) => {
                log::error!("shmsync: could not start the async auditor thread: {e} (retried at the next registration)")
            }
        }
    }
    let mut with_room = None;
    for shard in &g.shards {
        let state = lock(&shard.state);
        if state.entries.iter().any(|e| e.word == word && e.expected == expected) {
            return Some((Arc::clone(shard), Arc::clone(&g.auditor)));
        }
        let limit = if shard.single { 1 } else { WORDS_PER_SHARD };
        if with_room.is_none() && state.entries.len() < limit {
            with_room = Some(Arc::clone(shard));
        }
    }
    if let Some(shard) = with_room {
        return Some((shard, Arc::clone(&g.auditor)));
    }
    let shard = Arc::new(Shard {
        state: Mutex::new(ShardState::default()),
        control: AtomicU32::new(0),
        audit: std::sync::atomic::AtomicBool::new(false),
        single: !futex_waitv_works(),
    });
    let runner = Arc::clone(&shard);
    if let Err(e) = std::thread::Builder::new().name("shmsync-watch".to_string()).spawn(move || run(&runner)) {
        log::error!("shmsync: could not start an async watcher thread: {e}; its futures poll until one starts");
        return None;
    }
    g.shards.push(Arc::clone(&shard));
    Some((shard, Arc::clone(&g.auditor)))
}

/// Whether this kernel has `futex_waitv` (asked once).
fn futex_waitv_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        let probe = AtomicU32::new(1);
        // A word that does not hold its expected value: returns at once.
        futex::wait_many(&[(&probe as *const AtomicU32, 0)], None) != futex::Many::Unsupported
    })
}

/// The auditor: every [`AUDIT`], looks at every shard's entries and pokes
/// those with something to fire. Sleeps without a timeout while nothing is
/// registered anywhere.
fn audit(auditor: &Auditor) {
    loop {
        // Idle until this look finds something to watch (see `notify`).
        auditor.idle.store(true, Ordering::SeqCst);
        let seen = auditor.signal.load(Ordering::SeqCst);
        let shards: Vec<Arc<Shard>> = match lock(&GLOBAL).as_ref() {
            Some(g) if g.pid == std::process::id() => g.shards.clone(),
            _ => return, // this process forked and this is a stale copy: gone
        };
        let mut watching = false;
        for shard in &shards {
            let state = lock(&shard.state);
            watching |= !state.entries.is_empty();
            if state.entries.iter().any(|e| e.fired(true)) {
                drop(state);
                shard.audit.store(true, Ordering::Release);
                poke(shard);
            }
        }
        if watching {
            auditor.idle.store(false, Ordering::SeqCst);
            std::thread::sleep(AUDIT);
        } else {
            // Nothing to audit: until the next registration.
            futex::wait(&auditor.signal, seen, None);
        }
    }
}

/// A shard's thread.
fn run(shard: &Shard) {
    let mut words = Vec::with_capacity(WORDS_PER_SHARD + 1);
    loop {
        let control = shard.control.load(Ordering::Acquire);
        words.clear();
        words.push((&shard.control as *const AtomicU32, control));
        {
            let state = lock(&shard.state);
            words.extend(state.entries.iter().map(|e| (e.word as *const AtomicU32, e.expected)));
        }
        if words.len() == 1 {
            // Nothing to watch: sleep until something is registered.
            futex::wait(&shard.control, control, None);
        } else if shard.single {
            // No futex_waitv: the one entry's word, with the control word
            // checked by the auditor's pokes (a slice bounds the delay).
            Sleeper::new().sleep_at(words[1].0, words[1].1, None);
        } else {
            futex::wait_many(&words, None);
        }
        let recheck = shard.audit.swap(false, Ordering::AcqRel);
        let wakers: Vec<Waker> = {
            let mut state = lock(&shard.state);
            let mut fired = Vec::new();
            state.entries.retain_mut(|e| {
                if e.fired(recheck) {
                    fired.extend(e.waiters.drain(..).map(|(_, w)| w));
                    false
                } else {
                    true
                }
            });
            fired
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Condvar;
    use std::time::Duration;

    /// A std waker that records it was woken.
    struct Flag {
        set: Mutex<bool>,
        cv: Condvar,
    }

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            *lock(&self.set) = true;
            self.cv.notify_all();
        }
    }

    #[test]
    fn a_change_wakes_every_future_on_the_word_and_removes_the_entry() {
        let word = AtomicU32::new(7);
        let flag = Arc::new(Flag { set: Mutex::new(false), cv: Condvar::new() });
        let waker = Waker::from(Arc::clone(&flag));
        let reg = register(Watch { word: &word, expected: 7, check: None }, &waker, None);
        let again = register(Watch { word: &word, expected: 7, check: None }, &waker, Some(reg));
        word.store(8, Ordering::Release);
        futex::wake_all(&word);
        let set = flag.cv.wait_timeout_while(lock(&flag.set), Duration::from_secs(10), |s| !*s).unwrap().0;
        assert!(*set);
        drop(set);
        drop(again);
    }
}
