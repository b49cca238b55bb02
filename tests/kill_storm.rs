//! Kill storms: processes using one object are SIGKILLed at random instants,
//! over and over, and replaced; the survivors must never be stranded.
//!
//! For each kind, `WORKERS` forked workers loop over the kind's operations,
//! counting each finished round in a shared slot of their own. A killer
//! SIGKILLs a random worker every few milliseconds (wherever it is: inside a
//! critical section, between a publish and its wake, just woken) and forks a
//! replacement in its slot. Then the storm stops, and every worker still
//! alive must go on finishing rounds within a bound: a worker left asleep
//! by a dead peer fails the test, as does a process that crashes (only the
//! killer's signals may end a worker). The bound allows one re-check slice
//! (`raw::RECHECK`, 1 s) and then some, since some deaths (a waiter woken
//! and killed before it took its unit) are found only by the next slice.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{fork, serial, Child, Names, Shared};

const WORKERS: usize = 4;
/// How long the killing goes on, per kind.
const STORM: Duration = Duration::from_millis(1500);
/// How long every survivor has, after the storm, to finish another round.
const SETTLE: Duration = Duration::from_secs(4);
/// Every wait inside a round is bounded by this, so that a bug shows as a
/// worker that stops counting rather than as a hang of the test.
const T: Duration = Duration::from_millis(200);

/// Rounds finished, per worker slot.
type Progress = [AtomicU64; WORKERS];

/// A tiny xorshift for the killer's choices.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs the storm: `round(slot)` is one round of a worker's loop; it
/// returns whether the round did its work (a timed-out wait does not count).
fn storm(kind: &str, object: &str, round: impl Fn(usize) -> bool + Copy) {
    let progress = Shared::<Progress>::new();
    let progress = &progress;
    let start = |slot: usize| -> Child {
        progress[slot].store(0, Ordering::SeqCst);
        fork(move || loop {
            if round(slot) {
                progress[slot].fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let mut workers: Vec<Child> = (0..WORKERS).map(start).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ kind.len() as u64);
    let mut kills = 0;
    let until = Instant::now() + STORM;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1 + rng.below(8)));
        let victim = rng.below(WORKERS as u64) as usize;
        workers[victim].kill();
        workers[victim] = start(victim);
        kills += 1;
    }
    // The storm is over: every survivor must go on.
    let seen: Vec<u64> = (0..WORKERS).map(|i| progress[i].load(Ordering::SeqCst)).collect();
    let deadline = Instant::now() + SETTLE;
    let mut stuck: Vec<usize> = (0..WORKERS).collect();
    while !stuck.is_empty() && Instant::now() < deadline {
        stuck.retain(|&i| progress[i].load(Ordering::SeqCst) <= seen[i] + 1);
        std::thread::sleep(Duration::from_millis(10));
    }
    for (i, w) in workers.iter_mut().enumerate() {
        if let Some(end) = w.try_end() {
            panic!("{kind}: worker {i} ended by itself ({end:?}): a crash, or a failed check");
        }
        w.kill();
    }
    assert!(
        stuck.is_empty(),
        "{kind}: after {kills} kills, workers {stuck:?} made no progress within {SETTLE:?}; the object: {:?}",
        shmsync::inspect(object).map(|i| (i.state, i.detail))
    );
}

#[test]
fn lock_and_mutex_survivors_always_go_on() {
    let _s = serial();
    let names = Names::new("storm-lock");
    let lock = shmsync::Lock::builder(&names.get("l")).unlink_on_drop(true).create().unwrap();
    let rlock = shmsync::RLock::builder(&names.get("r")).unlink_on_drop(true).create().unwrap();
    let counter = shmsync::Mutex::<[u64; 2]>::builder(&names.get("m")).unlink_on_drop(true).create().unwrap();
    let (lock, rlock, counter) = (&lock, &rlock, &counter);
    storm("Lock", lock.name(), move |_| lock.try_lock_for(T).map(drop).is_ok() || lock.is_poisoned());
    storm("RLock", rlock.name(), move |_| {
        let Ok(outer) = rlock.try_lock_for(T).or_else(|e| match e {
            std::sync::TryLockError::Poisoned(p) => Ok(p.into_inner()),
            std::sync::TryLockError::WouldBlock => Err(()),
        }) else {
            return false;
        };
        let inner = rlock.try_lock();
        drop(inner);
        drop(outer);
        true
    });
    storm("Mutex", counter.name(), move |_| match counter.try_lock_for(T) {
        Ok(mut g) => {
            // Two writes: a death between them leaves them apart, and the
            // next holder (poisoned) repairs it.
            g[0] += 1;
            g[1] = g[0];
            true
        }
        Err(std::sync::TryLockError::Poisoned(p)) => {
            let mut g = p.into_inner();
            g[1] = g[0];
            counter.clear_poison();
            true
        }
        Err(std::sync::TryLockError::WouldBlock) => false,
    });
}

#[test]
fn semaphore_survivors_always_go_on() {
    let _s = serial();
    let names = Names::new("storm-sem");
    let sem = shmsync::Semaphore::builder(&names.get("s")).value(2).unlink_on_drop(true).create().unwrap();
    let bounded = shmsync::BoundedSemaphore::builder(&names.get("b")).value(2).unlink_on_drop(true).create().unwrap();
    let (sem, bounded) = (&sem, &bounded);
    // A unit taken by a worker that is then killed is gone, as in Python:
    // the killer's replacement puts one back, so the count stays about 2.
    storm("Semaphore", sem.name(), move |slot| {
        if slot == 0 && sem.value() == 0 {
            let _ = sem.release();
        }
        sem.try_acquire_for(T).map(drop).is_some()
    });
    storm("BoundedSemaphore", bounded.name(), move |slot| {
        if slot == 0 && bounded.value() == 0 {
            let _ = bounded.release();
        }
        bounded.try_acquire_for(T).map(drop).is_some()
    });
}

#[test]
fn condition_and_event_survivors_always_go_on() {
    let _s = serial();
    let names = Names::new("storm-cond");
    let cond = shmsync::Condition::builder(&names.get("c")).unlink_on_drop(true).create().unwrap();
    let event = shmsync::Event::builder(&names.get("e")).unlink_on_drop(true).create().unwrap();
    let tokens = Shared::<AtomicU64>::new();
    let (cond, event, tokens) = (&cond, &event, &tokens);
    // Slots 0 and 1 produce tokens and notify; 2 and 3 wait for them.
    storm("Condition", cond.name(), move |slot| {
        let Ok(g) = cond.try_lock_for(T).or_else(|e| match e {
            std::sync::TryLockError::Poisoned(p) => Ok(p.into_inner()),
            std::sync::TryLockError::WouldBlock => Err(()),
        }) else {
            return false;
        };
        if slot < 2 {
            tokens.fetch_add(1, Ordering::SeqCst);
            cond.notify_one();
            drop(g);
            return true;
        }
        let g = match cond.wait_timeout_while(g, T, || tokens.load(Ordering::SeqCst) == 0) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
        let took = tokens.load(Ordering::SeqCst) > 0;
        if took {
            tokens.fetch_sub(1, Ordering::SeqCst);
        }
        drop(g);
        took
    });
    // Slot 0 sets and clears; the others wait for it to be set.
    storm("Event", event.name(), move |slot| {
        if slot == 0 {
            event.set();
            std::thread::sleep(Duration::from_micros(200));
            event.clear();
            true
        } else {
            event.wait_timeout(T)
        }
    });
}

#[test]
fn rwlock_survivors_always_go_on() {
    let _s = serial();
    let names = Names::new("storm-rwlock");
    let table = shmsync::RwLock::<[u64; 2]>::builder(&names.get("t")).unlink_on_drop(true).create().unwrap();
    let table = &table;
    storm("RwLock", table.name(), move |slot| {
        if slot == 0 || slot == 1 {
            match table.try_write_for(T) {
                Ok(mut g) => {
                    g[0] += 1;
                    g[1] = g[0];
                    true
                }
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    let mut g = p.into_inner();
                    g[1] = g[0];
                    drop(g);
                    table.clear_poison();
                    true
                }
                Err(std::sync::TryLockError::WouldBlock) => false,
            }
        } else {
            match table.try_read_for(T) {
                Ok(g) => {
                    assert_eq!(g[0], g[1], "a reader saw half a write on a lock that was not poisoned");
                    true
                }
                Err(std::sync::TryLockError::Poisoned(_)) => true,
                Err(std::sync::TryLockError::WouldBlock) => false,
            }
        }
    });
}

#[test]
fn queue_and_dict_survivors_always_go_on() {
    let _s = serial();
    let names = Names::new("storm-queue");
    let queue =
        shmsync::Queue::<Vec<u8>>::builder(&names.get("q")).capacity(4096).unlink_on_drop(true).create().unwrap();
    let dict =
        shmsync::Dict::<u32, Vec<u8>>::builder(&names.get("d")).capacity(16384).unlink_on_drop(true).create().unwrap();
    let (queue, dict) = (&queue, &dict);
    // Slots 0 and 1 put (a full queue drops its oldest, so producers never
    // wait long), 2 and 3 get, some in place.
    storm("Queue", queue.name(), move |slot| match slot {
        0 => queue.put_timeout(&vec![7; 100], T).is_ok() || queue.try_get().is_ok(),
        1 => queue.put_with_timeout(50, T, |b| b.fill(1)).is_ok() || queue.try_get().is_ok(),
        2 => matches!(queue.get_timeout(T), Ok(Some(_))),
        _ => matches!(queue.get_with_timeout(T, |b| b.len()), Ok(Some(_))),
    });
    storm("Dict", dict.name(), move |slot| {
        let key = (std::process::id() % 16) + slot as u32;
        dict.insert(&key, &vec![slot as u8; 64]).is_ok() && dict.get(&key).is_ok() && dict.remove(&key).is_ok()
    });
    // Whatever the kills left, both still work for a newcomer.
    queue.put(&vec![1]).unwrap();
    assert!(queue.get_timeout(Duration::from_secs(5)).unwrap().is_some());
    assert!(dict.len() <= 32);
}
