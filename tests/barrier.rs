//! Barrier across real processes.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{fork, is_futex_sleeping, serial, Child, Shared, DEADLINE};
use shmsync::{Barrier, Error};

const GENERATIONS: usize = 200;

#[repr(C)]
struct Log {
    leaders: [AtomicU32; GENERATIONS],
    arrived: [AtomicU32; GENERATIONS],
    broken: AtomicU32,
}

fn until_waiting(b: &Barrier, n: u32) {
    let start = std::time::Instant::now();
    while b.n_waiting() < n {
        assert!(start.elapsed() < DEADLINE, "only {} of {n} arrived", b.n_waiting());
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn parties_zero_is_invalid() {
    let _s = serial();
    assert!(matches!(Barrier::new(0), Err(Error::InvalidArgument { .. })));
    assert!(matches!(Barrier::new(40_000), Err(Error::InvalidArgument { .. })));
}

#[test]
fn five_processes_times_200_generations_in_lockstep_with_one_leader_each() {
    let _s = serial();
    let b = Barrier::new(5).unwrap();
    let log = Shared::<Log>::new();
    let children: Vec<Child> = (0..5)
        .map(|_| {
            fork(|| {
                for g in 0..GENERATIONS {
                    log.arrived[g].fetch_add(1, Ordering::SeqCst);
                    let r = match b.wait_timeout(DEADLINE) {
                        Ok(r) => r,
                        Err(_) => return 1,
                    };
                    // Lockstep: nobody passes generation g before all 5 arrived.
                    if log.arrived[g].load(Ordering::SeqCst) != 5 || r.index() >= 5 {
                        return 2;
                    }
                    if r.is_leader() {
                        if r.index() != 4 {
                            return 3;
                        }
                        log.leaders[g].fetch_add(1, Ordering::SeqCst);
                    }
                }
                0
            })
        })
        .collect();
    for c in children {
        c.expect_success();
    }
    assert!(log.leaders.iter().all(|l| l.load(Ordering::SeqCst) == 1));
    assert!(!b.is_broken());
}

#[test]
fn a_timeout_breaks_it_for_everyone_and_reset_restores_it() {
    let _s = serial();
    let b = Barrier::new(4).unwrap();
    let log = Shared::<Log>::new();
    let waiters: Vec<Child> = (0..2)
        .map(|_| {
            fork(|| match b.wait_timeout(DEADLINE) {
                Err(Error::BrokenBarrier { .. }) => {
                    log.broken.fetch_add(1, Ordering::SeqCst);
                    0
                }
                _ => 1,
            })
        })
        .collect();
    until_waiting(&b, 2);
    // The third of four parties gives up: its timeout breaks the barrier for all.
    assert!(matches!(b.wait_timeout(Duration::from_millis(20)), Err(Error::BrokenBarrier { .. })));
    for w in waiters {
        w.expect_success();
    }
    assert_eq!(log.broken.load(Ordering::SeqCst), 2);
    assert!(b.is_broken());
    assert!(matches!(b.wait_timeout(DEADLINE), Err(Error::BrokenBarrier { .. })));
    b.reset();
    assert!(!b.is_broken());
    // Usable again: four parties pass.
    let others: Vec<Child> = (0..3).map(|_| fork(|| i32::from(b.wait_timeout(DEADLINE).is_err()))).collect();
    assert!(b.wait_timeout(DEADLINE).is_ok());
    for o in others {
        o.expect_success();
    }
}

#[test]
fn abort_releases_the_waiters() {
    let _s = serial();
    let b = Barrier::new(4).unwrap();
    let waiters: Vec<Child> =
        (0..3).map(|_| fork(|| i32::from(!matches!(b.wait(), Err(Error::BrokenBarrier { .. }))))).collect();
    until_waiting(&b, 3);
    b.abort();
    for w in waiters {
        w.expect_success();
    }
    assert!(b.is_broken());
}

#[test]
fn reset_with_waiters_breaks_them_and_leaves_it_usable() {
    let _s = serial();
    let b = Barrier::new(2).unwrap();
    let waiter = fork(|| i32::from(!matches!(b.wait_timeout(DEADLINE), Err(Error::BrokenBarrier { .. }))));
    until_waiting(&b, 1);
    b.reset();
    waiter.expect_success();
    assert!(!b.is_broken());
    assert_eq!(b.n_waiting(), 0);
    let other = fork(|| i32::from(b.wait_timeout(DEADLINE).is_err()));
    assert!(b.wait_timeout(DEADLINE).is_ok());
    other.expect_success();
}

#[test]
fn a_party_killed_after_arriving_still_counts() {
    let _s = serial();
    let b = Barrier::new(3).unwrap();
    let mut victim = fork(|| {
        let _ = b.wait();
        0
    });
    until_waiting(&b, 1);
    while !is_futex_sleeping(victim.pid()) {
        std::thread::sleep(Duration::from_millis(1));
    }
    victim.kill();
    let other = fork(|| i32::from(b.wait_timeout(DEADLINE).is_err()));
    let r = b.wait_timeout(DEADLINE);
    other.expect_success();
    assert!(r.is_ok(), "the survivors were left hanging: {r:?}");
    assert!(!b.is_broken());
}

#[test]
fn threads_meet_too() {
    let _s = serial();
    let b = Barrier::new(4).unwrap();
    let leaders = AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..50 {
                    if b.wait_timeout(DEADLINE).unwrap().is_leader() {
                        leaders.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(leaders.load(Ordering::SeqCst), 50);
    assert_eq!(b.parties(), 4);
}

/// A generation's end with nobody asleep makes no syscall, also after
/// sleepers were killed.
#[test]
fn regression_sleepers_killed_asleep_cost_later_generations_no_syscall() {
    let _s = common::serial();
    let barrier = Barrier::new(3).unwrap();
    let victims: Vec<common::Child> =
        (0..2).map(|_| common::fork(|| i32::from(barrier.wait_timeout(common::DEADLINE).is_err()))).collect();
    common::await_futex_sleep(&victims.iter().map(common::Child::pid).collect::<Vec<_>>());
    common::kill_all(victims);
    // The dead still count as arrived: this wait ends their generation.
    assert!(barrier.wait_timeout(common::DEADLINE).unwrap().is_leader());
    let solo = Barrier::new(1).unwrap();
    assert_eq!(common::futex_wakes_in_child(|| (0..20).for_each(|_| assert!(solo.wait().unwrap().is_leader()))), 0);
    assert!(common::futex_wakes_in_child(|| barrier.reset()) <= 1);
}

/// A barrier body with no parties, or more arrivals than parties, is
/// corrupt at open; a wait on one corrupted later is `Corrupt`, and
/// `reset` repairs it.
#[test]
fn regression_a_barrier_with_impossible_counts_is_corrupt_not_wedged() {
    let _s = common::serial();
    let barrier = Barrier::new(3).unwrap();
    // RawBarrier: lock 48, state 4, seq 4, gen 8, broken_count 8, broken 256, parties 4.
    let parties_at = common::OBJECT_OFFSET + 48 + 4 + 4 + 8 + 8 + 256;
    common::scribble(barrier.name(), parties_at, &0u32.to_ne_bytes());
    assert!(matches!(Barrier::open(barrier.name()), Err(shmsync::Error::Corrupt { .. })));
    common::scribble(barrier.name(), parties_at, &3u32.to_ne_bytes());
    common::scribble(barrier.name(), common::OBJECT_OFFSET + 48, &(7u32 << 1).to_ne_bytes()); // 7 arrived
    assert!(matches!(Barrier::open(barrier.name()), Err(shmsync::Error::Corrupt { .. })));
    assert!(matches!(barrier.wait_timeout(Duration::from_millis(10)), Err(shmsync::Error::Corrupt { .. })));
    barrier.reset();
    assert!(Barrier::open(barrier.name()).is_ok());
}
