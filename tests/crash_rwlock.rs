//! The RwLock's crash points: a process is SIGKILLed at each named step of
//! read, write, upgrade, downgrade, unlock and recovery, in the actor and in
//! the waiter it woke, and every survivor must go on within 2 s (the
//! documented `raw::RECHECK` bound plus room), with the lock still working
//! and poisoned exactly when a writer's update may be half done.
//!
//! Run with `cargo test --features failpoints --test crash_rwlock`.

#![cfg(feature = "failpoints")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::TryLockError;
use std::time::Duration;

use common::{await_futex_sleep, await_true, await_value, die_at, fork, serial, Child, End, Shared};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shmsync::{RwLock, RwLockUpgradableReadGuard, RwLockWriteGuard};

/// What a survivor is given to go on: the crash rules' bound.
const SURVIVOR_BOUND: Duration = Duration::from_secs(2);

/// Long enough that a waiter that proceeds only at its own timeout fails.
const LONG: Duration = Duration::from_secs(30);

/// The child must have been SIGKILLed (at its crash point).
fn killed(mut child: Child) {
    assert_eq!(child.wait(), End::Signaled(Signal::SIGKILL), "the actor did not die at its crash point");
}

/// The child must finish, successfully, within the survivor bound.
fn survives(mut child: Child) {
    assert_eq!(child.wait_for(SURVIVOR_BOUND), End::Exited(0), "a survivor did not go on");
}

/// Forks a waiter running `wait` (true: it got what it waited for) and
/// returns once it sleeps in the kernel.
fn sleeper(wait: impl FnOnce() -> bool) -> Child {
    let child = fork(|| i32::from(!wait()));
    await_futex_sleep(&[child.pid()]);
    child
}

/// As `sleeper`, but its slices are so long that only a wake ends its sleep
/// in time: it shows recoveries that do not rest on the re-check slices.
fn sleeper_without_slices(wait: impl FnOnce() -> bool) -> Child {
    sleeper(move || {
        shmsync::__private::set_recheck_for_tests(LONG * 10);
        wait()
    })
}

/// As `sleeper`, but the waiter dies at crash point `point` once woken.
fn doomed_sleeper(point: &'static str, wait: impl FnOnce() -> bool) -> Child {
    sleeper(move || {
        die_at(point);
        wait()
    })
}

/// An actor that dies at `point` while running `act`.
fn actor(point: &'static str, act: impl FnOnce()) -> Child {
    fork(move || {
        die_at(point);
        act();
        1
    })
}

/// Takes a read within LONG; true if it came poisoned exactly as `poisoned`.
fn reads(lock: &RwLock<u64>, poisoned: bool) -> bool {
    match lock.try_read_for(LONG) {
        Ok(_) => !poisoned,
        Err(TryLockError::Poisoned(_)) => poisoned,
        Err(TryLockError::WouldBlock) => false,
    }
}

/// As `reads`, for the write lock.
fn writes(lock: &RwLock<u64>, poisoned: bool) -> bool {
    match lock.try_write_for(LONG) {
        Ok(_) => !poisoned,
        Err(TryLockError::Poisoned(_)) => poisoned,
        Err(TryLockError::WouldBlock) => false,
    }
}

/// The lock still works: the parent writes and reads, clean, in time.
fn still_works(lock: &RwLock<u64>) {
    lock.clear_poison();
    *lock.try_write_for(SURVIVOR_BOUND).unwrap() += 1;
    drop(lock.try_read_for(SURVIVOR_BOUND).unwrap());
    assert_eq!(lock.readers(), 0);
    assert!(!lock.is_write_locked());
}

// ---- readers -------------------------------------------------------------

#[test]
fn a_reader_killed_after_counting_its_read_blocks_no_writer() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    killed(actor("rwlock.read.counted", || drop(lock.read())));
    assert_eq!(lock.readers(), 1);
    survives(fork(|| i32::from(!writes(&lock, false))));
    assert!(!lock.is_poisoned());
    still_works(&lock);
}

#[test]
fn a_reader_killed_after_queueing_strands_no_writer_and_no_reader() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let first = lock.write().unwrap();
    killed(actor("rwlock.read.waiting", || drop(lock.read())));
    let reader = sleeper(|| reads(&lock, false));
    drop(first);
    survives(reader);
    // The next writer's turn for queued readers finds the dead one at its
    // first look, before it sleeps.
    survives(fork(|| i32::from(!writes(&lock, false))));
    still_works(&lock);
}

#[test]
fn a_reader_woken_and_killed_before_entering_strands_nobody() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let first = lock.write().unwrap();
    let doomed = doomed_sleeper("rwlock.read.woken", || reads(&lock, false));
    let other = sleeper(|| reads(&lock, false));
    drop(first); // wakes both; one dies
    killed(doomed);
    survives(other);
    survives(fork(|| i32::from(!writes(&lock, false))));
    still_works(&lock);
}

fn reader_killed_after_releasing(slices: bool) {
    let lock = RwLock::<u64>::new(0).unwrap();
    let holding = Shared::<AtomicU32>::new();
    let go = Shared::<AtomicU32>::new();
    let reader = actor("rwlock.read_unlock.released", || {
        let g = lock.read().unwrap();
        holding.store(1, Ordering::Release);
        await_value(&go, 1, "the writer to wait");
        drop(g);
    });
    await_value(&holding, 1, "the reader to hold");
    // Without slices, a second, live reader is what wakes the writer later.
    let mine = (!slices).then(|| lock.read().unwrap());
    let writer =
        if slices { sleeper(|| writes(&lock, false)) } else { sleeper_without_slices(|| writes(&lock, false)) };
    await_true(|| lock.is_write_locked(), "the writer to drain");
    go.store(1, Ordering::Release);
    killed(reader);
    // The next reader to leave wakes the writer the dead one did not.
    drop(mine);
    survives(writer);
    still_works(&lock);
}

#[test]
fn a_reader_killed_between_its_release_and_the_writers_wake_strands_no_writer() {
    let _s = serial();
    reader_killed_after_releasing(true);
}

#[test]
fn the_next_reader_wakes_the_writer_a_dead_reader_left_asleep() {
    let _s = serial();
    reader_killed_after_releasing(false);
}

// ---- writers -------------------------------------------------------------

#[test]
fn a_writer_killed_after_announcing_itself_poisons_and_frees_the_lock() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let first = lock.read().unwrap();
    let writer = actor("rwlock.write.announced", || drop(lock.write()));
    killed(writer);
    assert!(lock.is_write_locked());
    let reader = sleeper(|| reads(&lock, true));
    let other_writer = sleeper(|| writes(&lock, true));
    drop(first);
    survives(reader);
    survives(other_writer);
    still_works(&lock);
}

#[test]
fn a_writer_killed_while_letting_queued_readers_in_strands_no_one() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let first = lock.write().unwrap();
    let reader = sleeper(|| reads(&lock, false));
    // The reader is stopped while queued, so the writer below must let it in
    // first, and dies having cleared WRITING for it.
    let pid = Pid::from_raw(reader.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    await_true(|| common::is_stopped(reader.pid()), "the reader to stop");
    let writer = actor("rwlock.write.yielded", || drop(lock.write()));
    await_futex_sleep(&[writer.pid()]);
    drop(first);
    killed(writer);
    kill(pid, Signal::SIGCONT).unwrap();
    survives(reader);
    // It died before writing anything: freed, not poisoned.
    survives(fork(|| i32::from(!writes(&lock, false))));
    still_works(&lock);
}

#[test]
fn a_writer_killed_holding_poisons_it_for_the_readers_waiting_behind_it() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let first = lock.read().unwrap();
    let writer = actor("rwlock.write.drained", || drop(lock.write()));
    await_true(|| lock.is_write_locked(), "the writer to announce itself");
    let readers: Vec<Child> = (0..2).map(|_| sleeper(|| reads(&lock, true))).collect();
    drop(first); // the writer drains, holds, and dies
    killed(writer);
    readers.into_iter().for_each(survives);
    survives(fork(|| i32::from(!writes(&lock, true))));
    still_works(&lock);
}

#[test]
fn a_writer_woken_and_killed_before_taking_the_lock_strands_nobody() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let first = lock.write().unwrap();
    let doomed = doomed_sleeper("rwlock.exclusive.woken", || writes(&lock, false));
    let other = sleeper(|| writes(&lock, false));
    drop(first);
    killed(doomed);
    survives(other);
    still_works(&lock);
}

fn releaser_killed_at(point: &'static str) {
    let lock = RwLock::<u64>::new(0).unwrap();
    let holding = Shared::<AtomicU32>::new();
    let go = Shared::<AtomicU32>::new();
    let writer = actor(point, || {
        let g = lock.write().unwrap();
        holding.store(1, Ordering::Release);
        await_value(&go, 1, "the sleepers");
        drop(g);
    });
    await_value(&holding, 1, "the writer to hold");
    let reader = sleeper(|| reads(&lock, false));
    let other_writer = sleeper(|| writes(&lock, false));
    go.store(1, Ordering::Release);
    killed(writer);
    survives(reader);
    survives(other_writer);
    // The sleepers bit the dead writer left costs later operations at most
    // one wake.
    let wakes = common::futex_wakes_in_child(|| (0..10).for_each(|_| drop(lock.write())));
    assert!(wakes <= 1, "{wakes} wakes after a dead waker");
    still_works(&lock);
}

#[test]
fn a_writer_killed_between_releasing_and_waking_strands_nobody() {
    let _s = serial();
    releaser_killed_at("rwlock.unlock.published");
}

#[test]
fn a_writer_killed_after_waking_strands_nobody_and_costs_one_wake() {
    let _s = serial();
    releaser_killed_at("rwlock.unlock.woken");
}

#[test]
fn the_next_release_wakes_the_sleepers_a_dead_releaser_left() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let holding = Shared::<AtomicU32>::new();
    let go = Shared::<AtomicU32>::new();
    let writer = actor("rwlock.unlock.published", || {
        let g = lock.write().unwrap();
        holding.store(1, Ordering::Release);
        await_value(&go, 1, "the sleeper");
        drop(g);
    });
    await_value(&holding, 1, "the writer to hold");
    let reader = sleeper_without_slices(|| reads(&lock, false));
    go.store(1, Ordering::Release);
    killed(writer);
    drop(lock.try_write_for(SURVIVOR_BOUND).unwrap()); // its release wakes the sleeper
    survives(reader);
}

// ---- upgradable reads ----------------------------------------------------

#[test]
fn an_upgradable_reader_killed_on_taking_it_counts_as_a_reader() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    killed(actor("rwlock.upgradable.acquired", || drop(lock.upgradable_read())));
    assert!(lock.try_read().is_ok());
    survives(fork(|| i32::from(!writes(&lock, false))));
    survives(fork(|| i32::from(lock.try_upgradable_read_for(LONG).is_err())));
    still_works(&lock);
}

#[test]
fn an_upgrader_killed_after_announcing_counts_as_a_writer() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let first = lock.read().unwrap();
    let upgrader = actor("rwlock.upgrade.announced", || {
        if let Ok(up) = lock.upgradable_read() {
            drop(RwLockUpgradableReadGuard::upgrade(up));
        }
    });
    killed(upgrader);
    let reader = sleeper(|| reads(&lock, true));
    drop(first);
    survives(reader);
    survives(fork(|| i32::from(!writes(&lock, true))));
    still_works(&lock);
}

#[test]
fn an_upgraded_reader_killed_holding_counts_as_a_writer() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let upgrader = actor("rwlock.upgrade.drained", || {
        if let Ok(up) = lock.upgradable_read() {
            let mut w = RwLockUpgradableReadGuard::upgrade(up);
            *w = 9;
        }
    });
    killed(upgrader);
    survives(fork(|| i32::from(!reads(&lock, true))));
    survives(fork(|| i32::from(!writes(&lock, true))));
    still_works(&lock);
}

#[test]
fn a_writer_killed_mid_downgrade_poisons_and_its_read_is_reclaimed() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    killed(actor("rwlock.downgrade.counted", || {
        if let Ok(w) = lock.write() {
            drop(RwLockWriteGuard::downgrade(w));
        }
    }));
    assert_eq!(lock.readers(), 1);
    survives(fork(|| i32::from(!reads(&lock, true))));
    survives(fork(|| i32::from(!writes(&lock, true))));
    assert_eq!(lock.readers(), 0);
    still_works(&lock);
}

// ---- recovery --------------------------------------------------------------

#[test]
fn a_recoverer_killed_after_freeing_a_dead_writers_lock_strands_nobody() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let holding = Shared::<AtomicU32>::new();
    let mut writer = fork(|| {
        let _g = lock.write().unwrap();
        holding.store(1, Ordering::Release);
        std::thread::sleep(LONG);
        0
    });
    await_value(&holding, 1, "the writer to hold");
    // This reader cannot recover the lock itself (no slices): only the
    // doomed one can, which dies between freeing the lock and waking.
    let reader = sleeper_without_slices(|| reads(&lock, true));
    writer.kill();
    let recoverer = doomed_sleeper("rwlock.recover.released", || reads(&lock, true));
    killed(recoverer);
    assert!(!lock.is_write_locked());
    assert!(lock.is_poisoned());
    // The next release by a live process wakes the stranded reader.
    drop(lock.try_write_for(SURVIVOR_BOUND));
    survives(reader);
    still_works(&lock);
}
