//! Pool: order, failures, dead and retired workers, lifecycle, no zombies.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::{serial, Shared};
use shmsync::{current, Error, Pool};

fn double(x: u64) -> u64 {
    x * 2
}

fn panics_on_3(x: u32) -> u32 {
    if x == 3 {
        panic!("three is right out");
    }
    x
}

fn killed_on_7(x: u32) -> u32 {
    if x == 7 {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    x
}

fn exits_on_5(x: u32) -> u32 {
    if x == 5 {
        shmsync::process::exit(3);
    }
    x
}

fn worker_pid(_: u32) -> u32 {
    std::process::id()
}

fn worker_name(_: u32) -> String {
    current().name().to_string()
}

/// A zombie or a missing /proc entry both mean "not running"; a reaped pid
/// has no entry (or belongs to someone else, whose parent is not us).
fn is_our_live_or_zombie_child(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    status
        .lines()
        .any(|l| l.starts_with("PPid:") && l.split_whitespace().nth(1) == Some(&std::process::id().to_string()))
}

#[test]
fn map_of_10000_items_keeps_input_order() {
    let _s = serial();
    let pool = Pool::new(3).unwrap();
    let out = pool.map(double, 0..10_000u64).unwrap();
    assert_eq!(out, (0..10_000u64).map(|x| x * 2).collect::<Vec<_>>());
    let chunked = pool.map_chunked(double, 0..1_000u64, 64).unwrap();
    assert_eq!(chunked, (0..1_000u64).map(|x| x * 2).collect::<Vec<_>>());
    assert_eq!(pool.apply(double, 21).unwrap(), 42);
    let mut unordered: Vec<u64> = pool.imap_unordered(double, 0..100u64).map(Result::unwrap).collect();
    unordered.sort();
    assert_eq!(unordered, (0..100u64).map(|x| x * 2).collect::<Vec<_>>());
    pool.close();
    pool.join().unwrap();
}

#[test]
fn a_panicking_task_fails_only_its_item() {
    let _s = serial();
    let pool = Pool::new(2).unwrap();
    let outcomes: Vec<_> = pool.imap(panics_on_3, 0..6u32).collect();
    for (i, o) in outcomes.iter().enumerate() {
        if i == 3 {
            assert!(
                matches!(o, Err(Error::TaskFailed { index: 3, message }) if message.contains("three is right out")),
                "{o:?}"
            );
        } else {
            assert_eq!(o.as_ref().unwrap(), &(i as u32));
        }
    }
    assert!(matches!(pool.map(panics_on_3, 0..6u32), Err(Error::TaskFailed { index: 3, .. })));
    // The worker survived: the pool still works with the same workers.
    let pids = pool.pids();
    assert_eq!(pool.map(double, 0..4u64).unwrap(), vec![0, 2, 4, 6]);
    assert_eq!(pool.pids(), pids);
}

#[test]
fn a_worker_killed_mid_task_is_worker_died_for_that_item_and_is_replaced() {
    let _s = serial();
    let pool = Pool::new(2).unwrap();
    let before = pool.pids();
    let outcomes: Vec<_> = pool.imap(killed_on_7, 0..12u32).collect();
    assert_eq!(outcomes.len(), 12);
    for (i, o) in outcomes.iter().enumerate() {
        if i == 7 {
            assert!(matches!(o, Err(Error::WorkerDied { index: 7, signal: Some(9), .. })), "{o:?}");
        } else {
            assert_eq!(o.as_ref().unwrap(), &(i as u32), "item {i}");
        }
    }
    assert_ne!(pool.pids(), before, "the dead worker was not replaced");
    // map gives the lowest-index error, and the pool goes on working.
    assert!(matches!(pool.map(killed_on_7, 5..9u32), Err(Error::WorkerDied { index: 2, .. })));
    assert_eq!(pool.map(double, 0..3u64).unwrap(), vec![0, 2, 4]);
    // A worker that calls exit is a death without a signal.
    assert!(matches!(pool.apply(exits_on_5, 5), Err(Error::WorkerDied { signal: None, .. })));
    assert_eq!(pool.apply(double, 1).unwrap(), 2);
}

#[test]
fn max_tasks_per_child_replaces_workers_and_the_initializer_runs_in_each() {
    let _s = serial();
    let starts = Shared::<AtomicU32>::new();
    let addr = &*starts as *const AtomicU32 as usize;
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(2)
        .initializer(move || {
            // SAFETY: the mapping outlives the pool; workers inherit it.
            unsafe { &*(addr as *const AtomicU32) }.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let pids = pool.map(worker_pid, 0..10u32).unwrap();
    let mut distinct = pids.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 5, "10 tasks, 2 per child, yet only {} workers: {pids:?}", distinct.len());
    let names = pool.map(worker_name, 0..2u32).unwrap();
    assert!(names.iter().all(|n| n.starts_with("PoolWorker-")), "{names:?}");
    pool.close();
    pool.join().unwrap();
    // Every worker ever started ran the initializer, and none is left.
    assert!(starts.load(Ordering::SeqCst) as usize >= distinct.len());
    for pid in distinct {
        assert!(!is_our_live_or_zombie_child(pid), "worker {pid} was not reaped");
    }
}

#[test]
fn lifecycle_errors_and_no_zombies_after_terminate_or_drop() {
    let _s = serial();
    let pool = Pool::new(2).unwrap();
    assert!(matches!(pool.join(), Err(Error::PoolNotClosed)));
    pool.close();
    assert!(matches!(pool.imap(double, 0..3u64).next(), Some(Err(Error::PoolClosed))));
    assert!(matches!(pool.map(double, 0..3u64), Err(Error::PoolClosed)));
    pool.join().unwrap();

    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    pool.terminate();
    for &pid in &pids {
        assert!(!is_our_live_or_zombie_child(pid), "worker {pid} left after terminate");
    }
    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    assert_eq!(pool.map(double, 0..3u64).unwrap(), vec![0, 2, 4]);
    drop(pool);
    for &pid in &pids {
        assert!(!is_our_live_or_zombie_child(pid), "worker {pid} left after drop");
    }
    assert!(matches!(Pool::new(0), Err(Error::InvalidArgument { .. })));
}

#[test]
fn an_imap_dropped_early_leaves_the_pool_usable() {
    let _s = serial();
    let pool = Pool::new(2).unwrap();
    let first: Vec<_> = pool.imap(double, 0..100u64).take(3).map(Result::unwrap).collect();
    assert_eq!(first, vec![0, 2, 4]);
    assert_eq!(pool.map(double, 0..5u64).unwrap(), vec![0, 2, 4, 6, 8]);
}
