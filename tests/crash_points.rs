//! The crash-point suite: a process is SIGKILLed at each named step between
//! a shared state change and the wake or commit that follows it, and every
//! survivor must go on within 2 s, with the object still working.
//!
//! Run with `cargo test --features failpoints`. Without the feature only the
//! bookkeeping test runs (every point is declared, marked and tested).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

/// The string literals that follow `marker` in the Rust files under `dir`
/// (`marker` ends with the opening quote).
fn literals_after(dir: &Path, marker: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for text in rust_files(dir) {
        for piece in text.split(marker).skip(1) {
            if let Some(name) = piece.split('"').next() {
                found.insert(name.to_string());
            }
        }
    }
    found
}

/// The text of every Rust file under `dir`.
fn rust_files(dir: &Path) -> Vec<String> {
    let mut texts = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read source dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                texts.push(std::fs::read_to_string(&path).expect("read source"));
            }
        }
    }
    texts
}

/// Every declared point is marked in the source, every mark is declared,
/// and every point is named by a test outside this bookkeeping (tests hand
/// the name to `common::die_at`, directly or through a helper).
#[test]
fn every_crash_point_is_declared_marked_and_tested() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let declared: BTreeSet<String> = common::crash_points().into_iter().map(String::from).collect();
    let marked = literals_after(&root.join("src"), "crash_point!(\"");
    let tests = rust_files(&root.join("tests"));
    assert_eq!(declared.len(), common::crash_points().len(), "a crash point is declared twice");
    let undeclared: Vec<_> = marked.difference(&declared).collect();
    assert!(undeclared.is_empty(), "marked in src but not declared in a CRASH_POINTS list: {undeclared:?}");
    let unmarked: Vec<_> = declared.difference(&marked).collect();
    assert!(unmarked.is_empty(), "declared but never marked in src: {unmarked:?}");
    let untested: Vec<_> = declared.iter().filter(|p| !tests.iter().any(|t| t.contains(&format!("\"{p}\"")))).collect();
    assert!(untested.is_empty(), "no test kills a process at: {untested:?}");
}

/// What a survivor is given to go on: the crash rules' bound.
#[cfg(feature = "failpoints")]
const SURVIVOR_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

/// Long enough that a waiter that proceeds only at its own timeout fails
/// the test (its child exits non-zero, or misses SURVIVOR_BOUND).
#[cfg(feature = "failpoints")]
const LONG: std::time::Duration = std::time::Duration::from_secs(30);

#[cfg(feature = "failpoints")]
mod support {
    use super::*;
    pub use common::{await_futex_sleep, die_at, fork, serial, Child, End, Names};
    use nix::sys::signal::Signal;

    /// The child must have been SIGKILLed (at its crash point).
    pub fn killed(mut child: Child) {
        assert_eq!(child.wait(), End::Signaled(Signal::SIGKILL), "the actor did not die at its crash point");
    }

    /// The child must finish, successfully, within the survivor bound.
    pub fn survives(mut child: Child) {
        assert_eq!(child.wait_for(SURVIVOR_BOUND), End::Exited(0), "a survivor did not go on");
    }

    /// Forks a waiter running `wait` (true: it got what it waited for) and
    /// returns once it sleeps in the kernel.
    pub fn sleeper(wait: impl FnOnce() -> bool) -> Child {
        let child = fork(|| i32::from(!wait()));
        await_futex_sleep(&[child.pid()]);
        child
    }

    /// As `sleeper`, but the waiter sleeps in slices so long that only a
    /// wake can end its sleep in time: it shows recoveries that do not rest
    /// on the re-check slices.
    pub fn sleeper_without_slices(wait: impl FnOnce() -> bool) -> Child {
        sleeper(move || {
            shmsync::__private::set_recheck_for_tests(LONG * 10);
            wait()
        })
    }

    /// As `sleeper`, but the waiter dies at crash point `point` once woken.
    pub fn doomed_sleeper(point: &'static str, wait: impl FnOnce() -> bool) -> Child {
        sleeper(move || {
            die_at(point);
            wait()
        })
    }
}

#[cfg(feature = "failpoints")]
mod segment {
    use super::support::*;
    use super::*;
    use shmsync::{Error, Lock};

    fn creator_killed_at(point: &'static str, test: &str) {
        let _s = serial();
        let names = Names::new(test);
        let name = names.get("lock");
        let child = fork(|| {
            die_at(point);
            let _ = Lock::create(&name);
            1
        });
        let pid = child.pid();
        killed(child);
        // Nothing under the real name: an opener is told at once, and the
        // name is free for the next creator.
        assert!(matches!(Lock::builder(&name).open_timeout(LONG).open(), Err(Error::NotFound { .. })));
        let lock = Lock::open_or_create(&name).unwrap();
        drop(lock.lock().unwrap());
        shmsync::unlink(&name).unwrap();
        // The dead creator's half-made object is debris under a temporary
        // name (which gc removes); the test cleans it up itself.
        assert_eq!(common::remove_init_debris(pid).len(), 1);
    }

    #[test]
    fn a_creator_killed_after_claiming_the_header_leaves_the_name_free() {
        creator_killed_at("segment.create.claimed", "seg_claimed");
    }

    #[test]
    fn a_creator_killed_before_publishing_leaves_the_name_free() {
        creator_killed_at("segment.create.ready", "seg_ready");
    }
}

#[cfg(feature = "failpoints")]
mod lock {
    use super::support::*;
    use super::*;
    use shmsync::Lock;

    /// Takes `name`'s lock within the bound, poisoned or not as `poisoned`.
    fn takes_lock(name: &str, poisoned: bool) -> bool {
        let lock = Lock::open(name).unwrap();
        let got = match lock.try_lock_for(LONG) {
            Ok(_) => !poisoned,
            Err(std::sync::TryLockError::Poisoned(_)) => poisoned,
            Err(std::sync::TryLockError::WouldBlock) => false,
        };
        got
    }

    #[test]
    fn a_waiter_woken_and_killed_before_it_takes_the_lock_strands_nobody() {
        let _s = serial();
        let names = Names::new("lock_woken");
        let lock = Lock::builder(&names.get("l")).unlink_on_drop(true).create().unwrap();
        let name = lock.name().to_string();
        let guard = lock.lock().unwrap();
        let first = doomed_sleeper("lock.contended.woken", || takes_lock(&name, false));
        let second = sleeper(|| takes_lock(&name, false));
        drop(guard); // wakes the first sleeper, which dies before retrying
        killed(first);
        survives(second);
        drop(lock.try_lock_for(SURVIVOR_BOUND).unwrap());
    }

    #[test]
    fn a_waiter_killed_after_winning_the_lock_strands_nobody() {
        let _s = serial();
        let names = Names::new("lock_acquired");
        let lock = Lock::builder(&names.get("l")).unlink_on_drop(true).create().unwrap();
        let name = lock.name().to_string();
        let guard = lock.lock().unwrap();
        let first = doomed_sleeper("lock.contended.acquired", || takes_lock(&name, false));
        let second = sleeper(|| takes_lock(&name, true));
        drop(guard);
        killed(first);
        survives(second);
        assert!(lock.is_poisoned());
        lock.clear_poison();
        drop(lock.try_lock_for(SURVIVOR_BOUND).unwrap());
    }

    #[test]
    fn a_holder_killed_in_unlock_leaves_the_lock_poisoned_not_stuck() {
        let _s = serial();
        let names = Names::new("lock_unlock");
        let lock = Lock::builder(&names.get("l")).unlink_on_drop(true).create().unwrap();
        let name = lock.name().to_string();
        let holder = fork(|| {
            let lock = Lock::open(&name).unwrap();
            let guard = lock.lock().unwrap();
            die_at("lock.unlock.before");
            std::thread::sleep(std::time::Duration::from_millis(300)); // let the waiter sleep
            drop(guard);
            1
        });
        common::await_true(|| lock.is_locked(), "the holder to take the lock");
        let waiter = sleeper(|| takes_lock(&name, true));
        killed(holder);
        survives(waiter);
    }
}

#[cfg(feature = "failpoints")]
mod event {
    use super::support::*;
    use super::*;
    use shmsync::Event;

    fn setter_killed_at(point: &'static str, test: &str) {
        let _s = serial();
        let names = Names::new(test);
        let ev = Event::builder(&names.get("e")).unlink_on_drop(true).create().unwrap();
        let name = ev.name().to_string();
        let waiters: Vec<Child> = (0..2).map(|_| sleeper(|| Event::open(&name).unwrap().wait_timeout(LONG))).collect();
        let setter = fork(|| {
            die_at(point);
            Event::open(&name).unwrap().set();
            1
        });
        killed(setter);
        waiters.into_iter().for_each(survives);
        // Still an event: a later waiter sleeps until a later set.
        ev.clear();
        let late = sleeper(|| Event::open(&name).unwrap().wait_timeout(LONG));
        ev.set();
        survives(late);
    }

    #[test]
    fn a_setter_killed_between_publishing_and_waking_strands_nobody() {
        setter_killed_at("event.set.published", "ev_published");
    }

    #[test]
    fn a_setter_killed_after_waking_strands_nobody() {
        setter_killed_at("event.set.woken", "ev_woken");
    }

    #[test]
    fn the_next_set_wakes_the_sleepers_a_dead_setter_left() {
        let _s = serial();
        let names = Names::new("ev_next_set");
        let ev = Event::builder(&names.get("e")).unlink_on_drop(true).create().unwrap();
        let name = ev.name().to_string();
        let waiter = sleeper_without_slices(|| Event::open(&name).unwrap().wait_timeout(LONG));
        let setter = fork(|| {
            die_at("event.set.published");
            Event::open(&name).unwrap().set();
            1
        });
        killed(setter);
        ev.clear(); // as if the set never happened, except for the stranded sleeper
        ev.set();
        survives(waiter);
    }
}

#[cfg(feature = "failpoints")]
mod semaphore {
    use super::support::*;
    use super::*;
    use shmsync::Semaphore;

    fn acquires(name: &str) -> bool {
        Semaphore::open(name).unwrap().try_acquire_for(LONG).map(|p| p.forget()).is_some()
    }

    #[test]
    fn a_releaser_killed_between_adding_the_unit_and_waking_strands_nobody() {
        let _s = serial();
        let names = Names::new("sem_release");
        let sem = Semaphore::builder(&names.get("s")).value(0).unlink_on_drop(true).create().unwrap();
        let name = sem.name().to_string();
        let waiter = sleeper(|| acquires(&name));
        let releaser = fork(|| {
            die_at("semaphore.release.published");
            let _ = Semaphore::open(&name).unwrap().release();
            1
        });
        killed(releaser);
        survives(waiter);
        assert_eq!(sem.value(), 0);
    }

    #[test]
    fn the_next_release_wakes_the_sleeper_a_dead_releaser_left() {
        let _s = serial();
        let names = Names::new("sem_next_release");
        let sem = Semaphore::builder(&names.get("s")).value(0).unlink_on_drop(true).create().unwrap();
        let name = sem.name().to_string();
        let waiter = sleeper_without_slices(|| acquires(&name));
        let releaser = fork(|| {
            die_at("semaphore.release.published");
            let _ = Semaphore::open(&name).unwrap().release();
            1
        });
        killed(releaser);
        sem.release().unwrap();
        survives(waiter);
        assert_eq!(sem.value(), 1);
    }

    #[test]
    fn a_waiter_woken_and_killed_before_it_takes_the_unit_strands_nobody() {
        let _s = serial();
        let names = Names::new("sem_woken");
        let sem = Semaphore::builder(&names.get("s")).value(0).unlink_on_drop(true).create().unwrap();
        let name = sem.name().to_string();
        let first = doomed_sleeper("semaphore.acquire.woken", || acquires(&name));
        let second = sleeper(|| acquires(&name));
        sem.release().unwrap(); // wakes the first sleeper, which dies
        killed(first);
        survives(second);
        assert_eq!(sem.value(), 0);
    }
}

#[cfg(feature = "failpoints")]
mod condition {
    use super::support::*;
    use super::*;
    use shmsync::Condition;

    /// Waits once; true if it was notified (poisoned or not), not timed out.
    fn notified(name: &str) -> bool {
        let cond = Condition::open(name).unwrap();
        let guard = cond.lock().unwrap_or_else(|p| p.into_inner());
        let woke = match cond.wait_timeout(guard, LONG) {
            Ok((_, res)) => !res.timed_out(),
            Err(p) => !p.into_inner().1.timed_out(),
        };
        woke
    }

    #[test]
    fn a_notifier_killed_between_notifying_and_waking_strands_nobody() {
        let _s = serial();
        let names = Names::new("cond_notify");
        let cond = Condition::builder(&names.get("c")).unlink_on_drop(true).create().unwrap();
        let name = cond.name().to_string();
        let waiter = sleeper(|| notified(&name));
        let notifier = fork(|| {
            die_at("condition.notify.published");
            Condition::open(&name).unwrap().notify_one();
            1
        });
        killed(notifier);
        survives(waiter);
    }

    #[test]
    fn the_next_notify_finishes_the_wake_a_dead_notifier_began() {
        let _s = serial();
        let names = Names::new("cond_next_notify");
        let cond = Condition::builder(&names.get("c")).unlink_on_drop(true).create().unwrap();
        let name = cond.name().to_string();
        let waiter = sleeper_without_slices(|| notified(&name));
        let notifier = fork(|| {
            die_at("condition.notify.published");
            Condition::open(&name).unwrap().notify_one();
            1
        });
        killed(notifier);
        cond.notify_one();
        survives(waiter);
    }

    fn woken_waiter_killed_at(point: &'static str, test: &str) {
        let _s = serial();
        let names = Names::new(test);
        let cond = Condition::builder(&names.get("c")).unlink_on_drop(true).create().unwrap();
        let name = cond.name().to_string();
        let first = doomed_sleeper(point, || notified(&name));
        let second = sleeper(|| notified(&name));
        cond.notify_one(); // for the oldest waiter, which dies with it
        killed(first);
        // Its notification is handed on to the other waiter.
        survives(second);
        drop(cond.lock().unwrap_or_else(|p| p.into_inner()));
    }

    #[test]
    fn a_notified_waiter_killed_before_relocking_hands_its_notification_on() {
        woken_waiter_killed_at("condition.wait.notified", "cond_notified");
    }

    #[test]
    fn a_notified_waiter_killed_after_relocking_hands_its_notification_on() {
        woken_waiter_killed_at("condition.wait.relocked", "cond_relocked");
    }
}

#[cfg(feature = "failpoints")]
mod barrier {
    use super::support::*;
    use super::*;
    use shmsync::Barrier;

    fn passes(name: &str) -> bool {
        Barrier::open(name).unwrap().wait_timeout(LONG).is_ok()
    }

    #[test]
    fn the_next_generation_wakes_the_sleeper_a_dead_last_arriver_left() {
        let _s = serial();
        let names = Names::new("bar_next_gen");
        let barrier = Barrier::builder(&names.get("b")).parties(2).unlink_on_drop(true).create().unwrap();
        let name = barrier.name().to_string();
        let waiter = sleeper_without_slices(|| passes(&name));
        let leader = fork(|| {
            die_at("barrier.generation.ended");
            let _ = Barrier::open(&name).unwrap().wait_timeout(LONG);
            1
        });
        killed(leader);
        // The next generation's end wakes every sleeper, old ones included.
        let partner = fork(|| i32::from(!passes(&name)));
        assert!(barrier.wait_timeout(LONG).is_ok());
        survives(partner);
        survives(waiter);
    }

    #[test]
    fn a_party_killed_right_after_arriving_still_counts() {
        let _s = serial();
        let names = Names::new("bar_arrived");
        let barrier = Barrier::builder(&names.get("b")).parties(3).unlink_on_drop(true).create().unwrap();
        let name = barrier.name().to_string();
        let doomed = fork(|| {
            die_at("barrier.wait.arrived");
            let _ = Barrier::open(&name).unwrap().wait_timeout(LONG);
            1
        });
        killed(doomed);
        let other = fork(|| i32::from(!passes(&name)));
        assert!(barrier.wait_timeout(SURVIVOR_BOUND).is_ok());
        survives(other);
    }

    #[test]
    fn a_last_arriver_killed_between_ending_the_generation_and_waking_strands_nobody() {
        let _s = serial();
        let names = Names::new("bar_ended");
        let barrier = Barrier::builder(&names.get("b")).parties(2).unlink_on_drop(true).create().unwrap();
        let name = barrier.name().to_string();
        let waiter = sleeper(|| passes(&name));
        let leader = fork(|| {
            die_at("barrier.generation.ended");
            let _ = Barrier::open(&name).unwrap().wait_timeout(LONG);
            1
        });
        killed(leader);
        survives(waiter);
        // The next generation meets as usual.
        let other = fork(|| i32::from(!passes(&name)));
        assert!(barrier.wait_timeout(LONG).is_ok());
        survives(other);
    }
}

#[cfg(feature = "failpoints")]
mod queue {
    use super::support::*;
    use super::*;
    use shmsync::{JoinableQueue, Queue};

    fn gets(name: &str, want: u32) -> bool {
        matches!(Queue::<u32>::open(name).unwrap().get_timeout(LONG), Ok(Some(v)) if v == want)
    }

    #[test]
    fn a_producer_killed_after_copying_commits_nothing_and_strands_nobody() {
        let _s = serial();
        let names = Names::new("q_put_copied");
        let q = Queue::<u32>::builder(&names.get("q")).capacity(4096).unlink_on_drop(true).create().unwrap();
        let name = q.name().to_string();
        let getter = sleeper(|| gets(&name, 2));
        let producer = fork(|| {
            die_at("queue.put.copied");
            let _ = Queue::<u32>::open(&name).unwrap().put(&1);
            1
        });
        killed(producer);
        assert_eq!(q.len(), 0);
        q.put_timeout(&2, SURVIVOR_BOUND).unwrap(); // the producers' lock is recovered
        survives(getter);
    }

    #[test]
    fn a_producer_killed_after_committing_strands_no_getter() {
        let _s = serial();
        let names = Names::new("q_put_committed");
        let q = Queue::<u32>::builder(&names.get("q")).capacity(4096).unlink_on_drop(true).create().unwrap();
        let name = q.name().to_string();
        let getter = sleeper(|| gets(&name, 1));
        let producer = fork(|| {
            die_at("queue.put.committed");
            let _ = Queue::<u32>::open(&name).unwrap().put(&1);
            1
        });
        killed(producer);
        survives(getter);
        q.put_timeout(&2, SURVIVOR_BOUND).unwrap();
        assert_eq!(q.try_get().unwrap(), Some(2));
    }

    #[test]
    fn a_consumer_killed_after_copying_leaves_the_message_for_the_next() {
        let _s = serial();
        let names = Names::new("q_get_copied");
        let q = Queue::<u32>::builder(&names.get("q")).capacity(4096).unlink_on_drop(true).create().unwrap();
        let name = q.name().to_string();
        q.put(&1).unwrap();
        let consumer = fork(|| {
            die_at("queue.get.copied");
            let _ = Queue::<u32>::open(&name).unwrap().get();
            1
        });
        killed(consumer);
        survives(fork(|| i32::from(!gets(&name, 1))));
    }

    #[test]
    fn a_consumer_killed_after_committing_strands_no_putter() {
        let _s = serial();
        let names = Names::new("q_get_committed");
        let q = Queue::<Vec<u8>>::builder(&names.get("q")).capacity(32).unlink_on_drop(true).create().unwrap();
        let name = q.name().to_string();
        let big = vec![7u8; q.capacity() - 24];
        q.put(&big).unwrap(); // full now
        let putter = sleeper(|| Queue::<Vec<u8>>::open(&name).unwrap().put_timeout(&vec![1; 8], LONG).is_ok());
        let consumer = fork(|| {
            die_at("queue.get.committed");
            let _ = Queue::<Vec<u8>>::open(&name).unwrap().get();
            1
        });
        killed(consumer);
        survives(putter);
        assert_eq!(q.get_timeout(SURVIVOR_BOUND).unwrap(), Some(vec![1; 8]));
    }

    #[test]
    fn a_reader_killed_inside_get_with_loses_that_message_only() {
        let _s = serial();
        let names = Names::new("q_get_with");
        let q = Queue::<Vec<u8>>::builder(&names.get("q")).capacity(4096).unlink_on_drop(true).create().unwrap();
        let name = q.name().to_string();
        q.put(&vec![1]).unwrap();
        q.put(&vec![2]).unwrap();
        let reader = fork(|| {
            die_at("queue.get_with.reading");
            let _ = Queue::<Vec<u8>>::open(&name).unwrap().get_with(|b| b.len());
            1
        });
        killed(reader);
        assert_eq!(q.get_timeout(SURVIVOR_BOUND).unwrap(), Some(vec![2]));
        assert!(q.is_empty());
    }

    #[test]
    fn a_consumer_killed_after_task_done_strands_no_joiner() {
        let _s = serial();
        let names = Names::new("q_task_done");
        let q = JoinableQueue::<u32>::builder(&names.get("q")).capacity(4096).unlink_on_drop(true).create().unwrap();
        let name = q.name().to_string();
        q.put(&1).unwrap();
        assert_eq!(q.get().unwrap(), 1);
        let joiner = sleeper(|| JoinableQueue::<u32>::open(&name).unwrap().join_timeout(LONG).unwrap_or(false));
        let worker = fork(|| {
            die_at("queue.task_done.counted");
            let _ = JoinableQueue::<u32>::open(&name).unwrap().task_done();
            1
        });
        killed(worker);
        survives(joiner);
    }
}

#[cfg(feature = "failpoints")]
mod dict {
    use super::support::*;
    use shmsync::Dict;

    /// A writer killed at `point` in its commit: the dict holds `expected`
    /// (the old map or the new one, wholly), and the next writer goes on.
    fn writer_killed_at(point: &'static str, test: &str, expected_new: bool) {
        let _s = serial();
        let names = Names::new(test);
        let d = Dict::<u32, String>::builder(&names.get("d")).capacity(4096).unlink_on_drop(true).create().unwrap();
        let name = d.name().to_string();
        d.insert(&1, &"old".to_string()).unwrap();
        let writer = fork(|| {
            die_at(point);
            let _ = Dict::<u32, String>::open(&name).unwrap().insert(&1, &"new".to_string());
            1
        });
        killed(writer);
        let want = if expected_new { "new" } else { "old" };
        assert_eq!(d.get(&1).unwrap().as_deref(), Some(want));
        assert_eq!(d.len(), 1);
        survives(fork(|| {
            let d = Dict::<u32, String>::open(&name).unwrap();
            i32::from(d.insert(&2, &"next".to_string()).is_err() || d.len() != 2)
        }));
    }

    #[test]
    fn a_writer_killed_before_its_flip_leaves_the_old_map() {
        writer_killed_at("dict.commit.written", "dict_written", false);
    }

    #[test]
    fn a_writer_killed_after_its_flip_leaves_the_new_map() {
        writer_killed_at("dict.commit.flipped", "dict_flipped", true);
    }
}

/// Wakes are never lost, with no re-check slice to fall back on: a stream
/// through a queue and many barrier generations, every process sleeping in
/// slices far longer than the test's deadline. A waker that cleared a
/// sleeper's flag from under it (the sleeper registered on the very value
/// the waker had just bumped) stalled such a stream until the next slice.
#[cfg(feature = "failpoints")]
mod no_lost_wakes {
    use super::support::*;
    use super::*;
    use shmsync::{Barrier, Queue};

    fn without_slices() {
        shmsync::__private::set_recheck_for_tests(LONG * 10);
    }

    #[test]
    fn a_stream_through_a_queue_never_waits_for_a_slice() {
        let _s = serial();
        let names = Names::new("stream_no_slices");
        let q = Queue::<Vec<u8>>::builder(&names.get("q")).capacity(64 << 10).unlink_on_drop(true).create().unwrap();
        const N: usize = 1_000_000;
        let consumer = fork(|| {
            without_slices();
            i32::from((0..N).any(|_| q.get().map(|m| m.len()).unwrap_or(0) != 64))
        });
        let producer = fork(|| {
            without_slices();
            let msg = vec![7u8; 64];
            i32::from((0..N).any(|_| q.put(&msg).is_err()))
        });
        let mut consumer = consumer;
        let mut producer = producer;
        assert_eq!(producer.wait_for(LONG), End::Exited(0));
        assert_eq!(consumer.wait_for(LONG), End::Exited(0));
    }

    #[test]
    fn barrier_generations_never_wait_for_a_slice() {
        let _s = serial();
        let names = Names::new("barrier_no_slices");
        let b = Barrier::builder(&names.get("b")).parties(3).unlink_on_drop(true).create().unwrap();
        let parties: Vec<Child> = (0..3)
            .map(|_| {
                fork(|| {
                    without_slices();
                    i32::from((0..3000).any(|_| b.wait_timeout(LONG).is_err()))
                })
            })
            .collect();
        for mut p in parties {
            assert_eq!(p.wait_for(LONG), End::Exited(0));
        }
    }
}
