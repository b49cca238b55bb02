//! Lock and RLock across real processes: exclusion, owner death, poisoning,
//! and the open_or_create race.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{PoisonError, TryLockError};
use std::time::Duration;

use common::{await_value, fork, serial, End, Names, Shared, DEADLINE};
use shmsync::{Lock, RLock};

#[repr(C)]
struct Counter {
    value: u64,
    holding: AtomicU32,
}

/// Adds one to a counter that is deliberately not atomic: only the lock
/// keeps concurrent increments from being lost.
fn bump(counter: *mut Counter) {
    // SAFETY: the pointer is into a live shared mapping; the caller holds the
    // lock, so no other process reads or writes `value` at the same time.
    unsafe {
        let v = std::ptr::read_volatile(&raw const (*counter).value);
        std::ptr::write_volatile(&raw mut (*counter).value, v + 1);
    }
}

#[test]
fn four_processes_times_20000_increments_are_exact() {
    let _s = serial();
    let names = Names::new("counter");
    let lock = Lock::builder(&names.get("lock")).unlink_on_drop(true).create().unwrap();
    let counter = Shared::<Counter>::new();
    const PER_CHILD: u64 = 20_000;
    let children: Vec<_> = (0..4)
        .map(|i| {
            let name = names.get("lock");
            let inherited = &lock;
            let counter = counter.as_ptr();
            fork(move || {
                // Two children use the inherited handle, two open by name.
                let opened;
                let lock = if i % 2 == 0 {
                    inherited
                } else {
                    opened = Lock::open(&name).unwrap();
                    &opened
                };
                for _ in 0..PER_CHILD {
                    let _g = lock.try_lock_for(DEADLINE).unwrap();
                    bump(counter);
                }
                0
            })
        })
        .collect();
    for c in children {
        c.expect_success();
    }
    assert_eq!(counter.value, 4 * PER_CHILD);
    assert!(!lock.is_poisoned());
}

#[test]
fn holder_killed_inside_critical_section_poisons_20_times_in_a_row() {
    let _s = serial();
    let names = Names::new("killed");
    let name = names.get("lock");
    let lock = Lock::builder(&name).unlink_on_drop(true).create().unwrap();
    let shared = Shared::<Counter>::new();
    for round in 1..=20u32 {
        let mut child = fork(|| {
            let lock = Lock::open(&name).unwrap();
            let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            shared.holding.store(round, Ordering::Release);
            std::thread::sleep(DEADLINE);
            drop(guard);
            0
        });
        await_value(&shared.holding, round, "the child to take the lock");
        assert!(lock.is_locked());
        assert_eq!(lock.owner_tid(), Some(child.pid()));
        child.kill();

        // The next locker gets the lock, poisoned, within its deadline.
        match lock.try_lock_for(DEADLINE) {
            Err(TryLockError::Poisoned(p)) => drop(p.into_inner()),
            Err(TryLockError::WouldBlock) => {
                panic!("round {round}: lock still held after its owner died")
            }
            Ok(_) => panic!("round {round}: owner death did not poison the lock"),
        }
        // Another process sees the poison too.
        fork(|| i32::from(!Lock::open(&name).unwrap().is_poisoned())).expect_success();

        lock.clear_poison();
        assert!(!lock.is_poisoned());
        assert!(lock.try_lock_for(DEADLINE).is_ok(), "round {round}: clear_poison did not restore service");
        // ... and the other process sees it cleared.
        fork(|| i32::from(Lock::open(&name).unwrap().is_poisoned())).expect_success();
    }
}

#[test]
fn a_thread_that_exits_holding_the_lock_poisons_it() {
    let _s = serial();
    let lock = Lock::new().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(lock.lock().unwrap())).join().unwrap();
    });
    assert!(matches!(lock.try_lock_for(DEADLINE), Err(TryLockError::Poisoned(_))));
    assert!(lock.is_poisoned());
    lock.clear_poison();
    assert!(lock.try_lock().is_ok());
}

#[test]
fn a_panic_while_holding_poisons_for_other_processes() {
    let _s = serial();
    let lock = Lock::new().unwrap();
    let name = lock.name().to_string();
    fork(|| {
        let lock = Lock::open(&name).unwrap();
        let _ = std::panic::catch_unwind(|| {
            let _g = lock.lock().unwrap();
            panic!("deliberate");
        });
        0
    })
    .expect_success();
    assert!(lock.is_poisoned());
    assert!(lock.lock().is_err());
}

#[test]
fn try_lock_and_try_lock_for_report_would_block_across_processes() {
    let _s = serial();
    let lock = Lock::new().unwrap();
    let shared = Shared::<Counter>::new();
    let mut holder = fork(|| {
        let _g = lock.lock().unwrap();
        shared.holding.store(1, Ordering::Release);
        await_value(&shared.holding, 2, "the parent's checks");
        0
    });
    await_value(&shared.holding, 1, "the child to lock");
    assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    assert!(matches!(lock.try_lock_for(Duration::from_millis(50)), Err(TryLockError::WouldBlock)));
    shared.holding.store(2, Ordering::Release);
    assert_eq!(holder.wait(), End::Exited(0));
    assert!(lock.try_lock_for(DEADLINE).is_ok());
}

#[test]
fn twenty_four_processes_race_open_or_create_and_one_initialises() {
    let _s = serial();
    let names = Names::new("race");
    let name = names.get("lock");
    #[repr(C)]
    struct Race {
        go: AtomicU32,
        creators: [AtomicU32; 24],
        counter: Counter,
    }
    let race = Shared::<Race>::new();
    let children: Vec<_> = (0..24)
        .map(|i| {
            let name = name.clone();
            let race = &race;
            // SAFETY: the pointer is to a live mapping; this only computes a field address.
            let counter = unsafe { &raw mut (*race.as_ptr()).counter };
            fork(move || {
                await_value(&race.go, 1, "the start signal");
                let lock = Lock::open_or_create(&name).unwrap();
                race.creators[i].store(lock.creator_pid().unwrap(), Ordering::Relaxed);
                let _g = lock.try_lock_for(DEADLINE).unwrap();
                bump(counter);
                0
            })
        })
        .collect();
    race.go.store(1, Ordering::Release);
    let pids: Vec<u32> = children.iter().map(|c| c.pid()).collect();
    for c in children {
        c.expect_success();
    }
    let creators: Vec<u32> = race.creators.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert!(creators.iter().all(|&c| c == creators[0]), "children disagree on the creator: {creators:?}");
    assert!(pids.contains(&creators[0]), "the creator is not one of the racers");
    assert_eq!(race.counter.value, 24);
    shmsync::unlink(&name).unwrap();
}

#[test]
fn rlock_nests_on_one_thread_and_excludes_other_processes() {
    let _s = serial();
    let rlock = RLock::new().unwrap();
    let outer = rlock.lock().unwrap();
    let inner = rlock.try_lock().unwrap();
    fork(|| match rlock.try_lock() {
        Err(TryLockError::WouldBlock) => 0,
        _ => 1,
    })
    .expect_success();
    drop(inner);
    fork(|| i32::from(rlock.try_lock().is_ok())).expect_success();
    drop(outer);
    fork(|| i32::from(rlock.try_lock_for(DEADLINE).is_err())).expect_success();
}

#[test]
fn rlock_holder_killed_while_nested_poisons_it() {
    let _s = serial();
    let rlock = RLock::new().unwrap();
    let shared = Shared::<Counter>::new();
    let mut child = fork(|| {
        let _a = rlock.lock().unwrap();
        let _b = rlock.lock().unwrap();
        shared.holding.store(1, Ordering::Release);
        std::thread::sleep(DEADLINE);
        0
    });
    await_value(&shared.holding, 1, "the child to lock twice");
    child.kill();
    match rlock.try_lock_for(DEADLINE) {
        Err(TryLockError::Poisoned(p)) => {
            let g = p.into_inner();
            // We hold exactly one level now: one drop frees it for others.
            drop(g);
        }
        _ => panic!("owner death did not poison the RLock"),
    }
    rlock.clear_poison();
    fork(|| i32::from(rlock.try_lock().is_err())).expect_success();
}

#[test]
#[should_panic(expected = "already holds this lock")]
fn relocking_a_lock_on_its_own_thread_panics_instead_of_deadlocking() {
    let _s = serial();
    let lock = Lock::new().unwrap();
    let _a = lock.lock().unwrap();
    let _b = lock.lock();
}

#[test]
fn try_lock_on_its_own_thread_would_block() {
    let _s = serial();
    let lock = Lock::new().unwrap();
    let _a = lock.lock().unwrap();
    assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    assert!(matches!(lock.try_lock_for(Duration::from_millis(1)), Err(TryLockError::WouldBlock)));
}

#[test]
fn threads_share_a_handle() {
    let _s = serial();
    let lock = Lock::new().unwrap();
    let counter = Shared::<Counter>::new();
    let counter = &counter;
    let lock = &lock;
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(move || {
                for _ in 0..5_000 {
                    let _g = lock.try_lock_for(DEADLINE).unwrap();
                    bump(counter.as_ptr());
                }
            });
        }
    });
    assert_eq!(counter.value, 20_000);
}

/// The robust list glibc keeps for each thread links held mutexes by
/// address: two handles mapping one RLock at two addresses left it pointing
/// into an unmapped page once one handle was dropped.
#[test]
fn regression_nested_rlock_through_two_handles_survives_dropping_one() {
    let _s = serial();
    let names = Names::new("rlock_two_handles");
    let name = names.get("r");
    let other = Lock::builder(&names.get("other")).unlink_on_drop(true).create().unwrap();
    let holding = Shared::<AtomicU32>::new();
    let mut child = fork(|| {
        let a = RLock::create(&name).unwrap();
        let b = RLock::open(&name).unwrap();
        assert_eq!(a.name(), b.name());
        let ga = a.lock().unwrap();
        let gb = b.lock().unwrap();
        drop(ga);
        drop(a);
        // Any later lock walks the robust list: it faulted here before.
        drop(other.lock().unwrap());
        holding.store(1, Ordering::Release);
        std::thread::sleep(DEADLINE); // killed while still holding through `b`
        drop(gb);
        0
    });
    await_value(&holding, 1, "the child to hold the rlock through its second handle");
    child.kill();
    // The kernel's walk of the dead thread's robust list reached the RLock.
    let r = RLock::open(&name).unwrap();
    assert!(matches!(r.try_lock_for(Duration::from_secs(2)), Err(TryLockError::Poisoned(_))));
    shmsync::unlink(&name).unwrap();
}

/// A guard forgotten with `mem::forget` keeps its lock held; dropping the
/// last handle must not unmap the memory glibc's robust list points into.
#[test]
fn regression_a_forgotten_guard_keeps_its_mapping_and_its_death_poisons() {
    let _s = serial();
    let names = Names::new("forgotten");
    let lock = Lock::builder(&names.get("l")).unlink_on_drop(true).create().unwrap();
    let other = Lock::builder(&names.get("other")).unlink_on_drop(true).create().unwrap();
    let name = lock.name().to_string();
    let holding = Shared::<AtomicU32>::new();
    let mut child = fork(|| {
        let mine = Lock::open(&name).unwrap();
        std::mem::forget(mine.lock().unwrap());
        drop(mine);
        drop(other.lock().unwrap());
        // Opening it again finds the kept mapping, held by this thread.
        let again = Lock::open(&name).unwrap();
        assert!(again.is_locked());
        holding.store(1, Ordering::Release);
        std::thread::sleep(DEADLINE);
        0
    });
    await_value(&holding, 1, "the child to forget its guard");
    child.kill();
    assert!(matches!(lock.try_lock_for(Duration::from_secs(2)), Err(TryLockError::Poisoned(_))));
}

/// A lock word that names a thread that no longer exists (the kernel missed
/// its death, or a peer forged the word) used to hang every locker.
#[test]
fn regression_a_lock_word_naming_a_dead_thread_is_recovered_poisoned() {
    let _s = serial();
    let names = Names::new("forged_owner");
    let lock = Lock::builder(&names.get("l")).unlink_on_drop(true).create().unwrap();
    let word = common::dead_tid() | 0x8000_0000; // FUTEX_WAITERS
    common::scribble(lock.name(), common::OBJECT_OFFSET, &word.to_ne_bytes());
    assert!(lock.is_locked());
    assert!(matches!(lock.try_lock_for(Duration::from_secs(2)), Err(TryLockError::Poisoned(_))));
    lock.clear_poison();
    assert!(lock.try_lock().is_ok());
}

/// A lock word that names a live task which never mapped the lock (garbage
/// that happens to be a stranger's tid, or a holder's tid recycled for an
/// unrelated process) used to hang every locker for as long as that task
/// lived; nothing that does not map the lock can hold it.
#[test]
fn regression_a_lock_word_naming_a_live_stranger_is_recovered_poisoned() {
    let _s = serial();
    let names = Names::new("stranger_owner");
    let lock = Lock::builder(&names.get("l")).unlink_on_drop(true).create().unwrap();
    // An exec'd process: alive, and it maps nothing of ours.
    let mut stranger = std::process::Command::new("sleep").arg("60").spawn().expect("spawn sleep");
    let word = stranger.id() | 0x8000_0000; // FUTEX_WAITERS
    common::scribble(lock.name(), common::OBJECT_OFFSET, &word.to_ne_bytes());
    assert_eq!(lock.owner_tid(), Some(stranger.id()));
    let outcome = lock.try_lock_for(Duration::from_secs(5));
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert!(matches!(outcome, Err(TryLockError::Poisoned(_))), "the stranger's 'hold' was recovered");
    drop(outcome);
    lock.clear_poison();
    assert!(lock.try_lock().is_ok());
}

/// A lock word holding only the sleepers' bit (no owner, no owner-died
/// mark) is garbage no `trylock` can take; the contended path looped on it
/// forever, past any deadline (found by `tests/fuzz_segments.rs`). It is
/// recovered, poisoned, by a timed and by an untimed lock.
#[test]
fn regression_a_word_with_sleepers_but_no_owner_is_recovered_poisoned() {
    let _s = serial();
    let names = Names::new("ownerless");
    let lock = Lock::builder(&names.get("l")).unlink_on_drop(true).create().unwrap();
    let ownerless = 0x8000_0000u32; // FUTEX_WAITERS alone
    common::scribble(lock.name(), common::OBJECT_OFFSET, &ownerless.to_ne_bytes());
    let outcome = lock.try_lock_for(Duration::from_secs(5));
    assert!(matches!(outcome, Err(TryLockError::Poisoned(_))), "the ownerless word was recovered");
    drop(outcome);
    lock.clear_poison();
    common::scribble(lock.name(), common::OBJECT_OFFSET, &ownerless.to_ne_bytes());
    let name = lock.name().to_string();
    let mut child = fork(|| {
        let lock = Lock::open(&name).unwrap();
        let poisoned = lock.lock().is_err();
        i32::from(!poisoned)
    });
    assert_eq!(child.wait_for(Duration::from_secs(5)), End::Exited(0));
    lock.clear_poison();
    assert!(lock.try_lock().is_ok());
}

/// glibc's unlock clears the word and wakes one sleeper; when that wake is
/// lost (the woken waiter was killed, and a spinner took the lock without
/// re-marking the word), the other sleepers slept forever on a free lock.
/// Here the word is freed behind a sleeper's back, wake and all.
#[test]
fn regression_a_sleeper_whose_wake_was_lost_takes_the_free_lock() {
    let _s = serial();
    let names = Names::new("lost_wake");
    let lock = Lock::builder(&names.get("l")).unlink_on_drop(true).create().unwrap();
    let name = lock.name().to_string();
    let holding = Shared::<AtomicU32>::new();
    let mut holder = fork(|| {
        let lock = Lock::open(&name).unwrap();
        std::mem::forget(lock.lock().unwrap());
        holding.store(1, Ordering::Release);
        std::thread::sleep(DEADLINE);
        0
    });
    await_value(&holding, 1, "the holder");
    let waiter = fork(|| {
        let lock = Lock::open(&name).unwrap();
        let ok = lock.try_lock_for(DEADLINE).is_ok();
        i32::from(!ok)
    });
    common::await_futex_sleep(&[waiter.pid()]);
    // Free the word as an unlock whose wake went to a dead process would.
    common::scribble(&name, common::OBJECT_OFFSET, &0u32.to_ne_bytes());
    holder.kill(); // the kernel finds a word that is no longer its own
    let mut waiter = waiter;
    assert_eq!(waiter.wait_for(Duration::from_secs(2)), End::Exited(0));
}

/// A mutex a foreign process left `ENOTRECOVERABLE` (owner died, unlocked
/// without being made consistent) used to reach an internal panic.
#[test]
fn regression_an_unrecoverable_mutex_is_recovered_poisoned() {
    let _s = serial();
    let names = Names::new("notrecoverable");
    let lock = Lock::builder(&names.get("l")).unlink_on_drop(true).create().unwrap();
    // __owner = PTHREAD_MUTEX_NOTRECOVERABLE, lock word free.
    common::scribble(lock.name(), common::OBJECT_OFFSET + 8, &0x7fff_fffeu32.to_ne_bytes());
    assert!(matches!(lock.try_lock_for(Duration::from_secs(2)), Err(TryLockError::Poisoned(_))));
    lock.clear_poison();
    drop(lock.lock().unwrap());
}

/// Corrupt mutex bytes gave glibc EINVAL ("unexpected code 22" panics) or
/// assertion aborts: a mutex of the wrong kind is refused at open, and one
/// changed under an open handle is restored and reported poisoned.
#[test]
fn regression_a_mutex_of_the_wrong_kind_is_corrupt_at_open_and_repaired_in_use() {
    let _s = serial();
    let names = Names::new("badkind");
    let lock = Lock::builder(&names.get("l")).unlink_on_drop(true).create().unwrap();
    common::scribble(lock.name(), common::OBJECT_OFFSET + 16, &12345u32.to_ne_bytes()); // __kind
    assert!(matches!(Lock::open(lock.name()), Err(shmsync::Error::Corrupt { .. })));
    assert!(matches!(lock.try_lock_for(Duration::from_secs(2)), Err(TryLockError::Poisoned(_))));
    assert!(Lock::open(lock.name()).is_ok());
}

/// Regression (found by review): an RLock whose nesting count a peer set
/// to its limit made the next nested lock end in "unexpected code 11" from
/// the C library; it is now the clear message of a lock that cannot be
/// taken again (as std's `ReentrantLock` panics when its count overflows).
#[test]
fn regression_an_rlock_nested_at_its_count_limit_says_so() {
    let _s = serial();
    let names = Names::new("rlock_deep");
    let rlock = RLock::builder(&names.get("r")).unlink_on_drop(true).create().unwrap();
    let count = common::OBJECT_OFFSET + 4; // glibc's __count
    let guard = rlock.lock().unwrap();
    common::scribble(rlock.name(), count, &u32::MAX.to_ne_bytes());
    let nested = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(rlock.lock())));
    let message = nested.expect_err("a nested lock at the limit").downcast::<String>().unwrap();
    assert!(message.contains("cannot take it again"), "{message}");
    assert!(rlock.try_lock().is_err(), "try_lock at the limit fails without a panic");
    common::scribble(rlock.name(), count, &1u32.to_ne_bytes());
    drop(guard);
    assert!(rlock.try_lock().is_ok());
}
