//! The pool's crash points: a worker (the woken waiter of a task, or the
//! actor that publishes a result) or the pool's own process is SIGKILLed at
//! each named step of the dispatch, and every survivor must go on within
//! the crash rules' bound, with nothing lost or counted twice.
//!
//! - A worker killed after it took a task: exactly that item is
//!   `WorkerDied`, every other item succeeds, the pool goes on.
//! - A worker killed after it replied: its result counts; at most the one
//!   item sent to it in the instant before its death fails (the pool cannot
//!   tell whether a dead worker started it); nothing hangs.
//! - The pool's process killed after it sent a task, after it read a result,
//!   or after it forked a replacement: the workers are the survivors, and
//!   they must all be gone within the bound (`PR_SET_PDEATHSIG`), leaving no
//!   orphan behind.
//!
//! Run with `cargo test --features failpoints --test crash_data_pool`.
#![cfg(feature = "failpoints")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{End, Shared};
use nix::sys::signal::Signal;
use shmsync::{Error, Pool};

/// What a survivor is given to go on: the crash rules' bound.
const SURVIVOR_BOUND: Duration = Duration::from_secs(2);

fn double(x: u64) -> u64 {
    x * 2
}

fn killed_on_7(x: u64) -> u64 {
    if x == 7 {
        let _ = nix::sys::signal::raise(Signal::SIGKILL);
    }
    x
}

/// An initializer that arms `point` in the first worker only (the one that
/// bumps `counter` from 0).
fn arm_first_worker(counter: &Shared<AtomicU32>, point: &'static str) -> impl Fn() + Send + Sync + 'static {
    let addr = &**counter as *const AtomicU32 as usize;
    move || {
        // SAFETY: the shared mapping outlives the pool; workers inherit it.
        let counter = unsafe { &*(addr as *const AtomicU32) };
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            match point {
                "pool.worker.received" => common::die_at("pool.worker.received"),
                "pool.worker.replied" => common::die_at("pool.worker.replied"),
                _ => unreachable!(),
            }
        }
    }
}

#[test]
fn a_worker_killed_after_taking_a_task_fails_exactly_that_item() {
    let _s = common::serial();
    let counter = Shared::<AtomicU32>::new();
    let pool =
        Pool::builder().processes(2).initializer(arm_first_worker(&counter, "pool.worker.received")).build().unwrap();
    let outcomes: Vec<_> = pool.imap(double, 0..20u64).collect();
    assert_eq!(outcomes.len(), 20);
    let died: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Err(Error::WorkerDied { index, signal: Some(9), .. }) if *index == i => Some(i),
            Ok(v) if *v == 2 * i as u64 => None,
            other => panic!("item {i}: {other:?}"),
        })
        .collect();
    assert_eq!(died.len(), 1, "exactly the item the killed worker took fails: {died:?}");
    assert_eq!(pool.map(double, 0..50u64).unwrap(), (0..50u64).map(double).collect::<Vec<_>>());
    assert!(counter.load(Ordering::SeqCst) >= 3, "the dead worker was not replaced");
    pool.close();
    pool.join().unwrap();
}

#[test]
fn a_worker_killed_after_replying_loses_nothing_and_nothing_hangs() {
    let _s = common::serial();
    let counter = Shared::<AtomicU32>::new();
    let pool =
        Pool::builder().processes(2).initializer(arm_first_worker(&counter, "pool.worker.replied")).build().unwrap();
    let started = Instant::now();
    let outcomes: Vec<_> = pool.imap(double, 0..20u64).collect();
    assert!(started.elapsed() < common::DEADLINE);
    assert_eq!(outcomes.len(), 20);
    let mut failed = 0;
    for (i, o) in outcomes.iter().enumerate() {
        match o {
            Ok(v) => assert_eq!(*v, 2 * i as u64),
            Err(Error::WorkerDied { index, .. }) if *index == i => failed += 1,
            other => panic!("item {i}: {other:?}"),
        }
    }
    assert!(failed <= 1, "only an item sent to the worker as it died may fail, not {failed}");
    assert_eq!(pool.map(double, 0..50u64).unwrap(), (0..50u64).map(double).collect::<Vec<_>>());
    pool.close();
    pool.join().unwrap();
}

/// The processes this one adopted (as child subreaper) or started, that
/// still run. Zombies are reaped.
fn live_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut live = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1) != Some(&me.as_str()) {
            continue;
        }
        if fields.first() == Some(&"Z") {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
        } else {
            live.push(pid);
        }
    }
    live
}

/// Forks a process that makes a pool, arms `point` in itself, and runs
/// `work`; it must die at the point, and every worker it had or was
/// starting must be gone within the bound after it.
fn pool_process_killed_at(point: &'static str, work: fn(&Pool)) {
    let _s = common::serial();
    // SAFETY: PR_SET_CHILD_SUBREAPER takes a flag; orphans of our children
    // then become ours, so the test can see and reap them.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
    let (ours, theirs) = shmsync::pipe().unwrap();
    let mut child = common::fork(|| {
        let pool = Pool::new(2).unwrap();
        theirs.send(&pool.pids()).unwrap();
        match point {
            "pool.dispatch.sent" => common::die_at("pool.dispatch.sent"),
            "pool.collect.received" => common::die_at("pool.collect.received"),
            "pool.worker.replaced" => common::die_at("pool.worker.replaced"),
            _ => unreachable!(),
        }
        work(&pool);
        // Reaching here means the point was never hit.
        3
    });
    drop(theirs);
    let workers: Vec<u32> = ours.recv_timeout(common::DEADLINE).unwrap().expect("the pool's pids");
    assert_eq!(workers.len(), 2);
    assert_eq!(child.wait(), End::Signaled(Signal::SIGKILL), "the pool process did not die at {point}");
    let died = Instant::now();
    loop {
        let left = live_children();
        if left.is_empty() {
            break;
        }
        assert!(died.elapsed() < SURVIVOR_BOUND, "workers {left:?} outlived the pool's process killed at {point}");
        std::thread::sleep(Duration::from_millis(10));
    }
    for pid in workers {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "worker {pid} is left");
    }
}

fn run_a_map(pool: &Pool) {
    let _ = pool.map(double, 0..10u64);
}

fn kill_a_worker(pool: &Pool) {
    let _ = pool.apply(killed_on_7, 7);
}

#[test]
fn the_pool_process_killed_after_sending_a_task_leaves_no_worker() {
    pool_process_killed_at("pool.dispatch.sent", run_a_map);
}

#[test]
fn the_pool_process_killed_after_reading_a_result_leaves_no_worker() {
    pool_process_killed_at("pool.collect.received", run_a_map);
}

#[test]
fn the_pool_process_killed_after_forking_a_replacement_leaves_no_worker() {
    pool_process_killed_at("pool.worker.replaced", kill_a_worker);
}
