//! Semaphore and BoundedSemaphore across real processes.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{fork, serial, Shared, DEADLINE};
use shmsync::{BoundedSemaphore, Error, Semaphore};

#[test]
fn cpython_value_sequence() {
    let _s = serial();
    // Python: s = Semaphore(2); acquire -> 1; acquire -> 0; acquire(False) fails;
    // release twice -> 2; release twice more -> 4 (unbounded).
    let s = Semaphore::new(2).unwrap();
    let a = s.acquire();
    assert_eq!(s.value(), 1);
    let b = s.acquire();
    assert_eq!(s.value(), 0);
    assert!(s.try_acquire().is_none());
    assert!(s.try_acquire_for(Duration::from_millis(10)).is_none());
    drop(a);
    drop(b);
    assert_eq!(s.value(), 2);
    s.release().unwrap();
    s.release().unwrap();
    assert_eq!(s.value(), 4);
}

#[test]
fn values_above_i32_max_are_invalid() {
    let _s = serial();
    assert!(matches!(Semaphore::new(u32::MAX), Err(Error::InvalidArgument { .. })));
    assert!(matches!(BoundedSemaphore::new(i32::MAX as u32 + 1), Err(Error::InvalidArgument { .. })));
    let big = Semaphore::new(i32::MAX as u32).unwrap();
    assert!(matches!(big.release(), Err(Error::TooManyReleases { .. })));
}

#[test]
fn bounded_release_at_max_is_an_error_and_changes_nothing() {
    let _s = serial();
    let s = BoundedSemaphore::new(2).unwrap();
    assert_eq!(s.max_value(), 2);
    let err = s.release().unwrap_err();
    assert!(matches!(err, Error::TooManyReleases { max: 2, .. }));
    assert!(err.to_string().contains(s.name()));
    assert_eq!(s.value(), 2);
    s.acquire().forget();
    s.release().unwrap();
    assert_eq!(s.value(), 2);
}

#[repr(C)]
struct Tally {
    inside: AtomicU32,
    high_water: AtomicU32,
    total: AtomicU32,
    ok: AtomicU32,
    err: AtomicU32,
    go: AtomicU32,
}

#[test]
fn six_processes_race_to_release_three_missing_units_and_exactly_three_win() {
    let _s = serial();
    for _ in 0..10 {
        let s = BoundedSemaphore::new(3).unwrap();
        for _ in 0..3 {
            s.acquire().forget();
        }
        let tally = Shared::<Tally>::new();
        let children: Vec<_> = (0..6)
            .map(|_| {
                fork(|| {
                    common::await_value(&tally.go, 1, "go");
                    match s.release() {
                        Ok(()) => tally.ok.fetch_add(1, Ordering::SeqCst),
                        Err(Error::TooManyReleases { .. }) => tally.err.fetch_add(1, Ordering::SeqCst),
                        Err(_) => return 1,
                    };
                    0
                })
            })
            .collect();
        tally.go.store(1, Ordering::Release);
        for c in children {
            c.expect_success();
        }
        assert_eq!(tally.ok.load(Ordering::SeqCst), 3);
        assert_eq!(tally.err.load(Ordering::SeqCst), 3);
        assert_eq!(s.value(), 3);
    }
}

#[test]
fn six_processes_times_300_at_value_3_never_exceed_3_holders() {
    let _s = serial();
    let s = Semaphore::new(3).unwrap();
    let tally = Shared::<Tally>::new();
    let children: Vec<_> = (0..6)
        .map(|_| {
            fork(|| {
                for _ in 0..300 {
                    let Some(_permit) = s.try_acquire_for(DEADLINE) else { return 1 };
                    let now = tally.inside.fetch_add(1, Ordering::SeqCst) + 1;
                    tally.high_water.fetch_max(now, Ordering::SeqCst);
                    std::hint::spin_loop();
                    tally.inside.fetch_sub(1, Ordering::SeqCst);
                    tally.total.fetch_add(1, Ordering::SeqCst);
                }
                0
            })
        })
        .collect();
    for c in children {
        c.expect_success();
    }
    assert_eq!(tally.total.load(Ordering::SeqCst), 1800);
    assert!(tally.high_water.load(Ordering::SeqCst) <= 3);
    assert!(tally.high_water.load(Ordering::SeqCst) >= 1);
    assert_eq!(s.value(), 3);
}

#[test]
fn twenty_thousand_round_ping_pong_loses_no_wakeup() {
    let _s = serial();
    let ping = Semaphore::new(0).unwrap();
    let pong = Semaphore::new(0).unwrap();
    const ROUNDS: u32 = 20_000;
    let child = fork(|| {
        for _ in 0..ROUNDS {
            match ping.try_acquire_for(DEADLINE) {
                Some(p) => p.forget(),
                None => return 1,
            }
            pong.release().unwrap();
        }
        0
    });
    for round in 0..ROUNDS {
        ping.release().unwrap();
        match pong.try_acquire_for(DEADLINE) {
            Some(p) => p.forget(),
            None => panic!("lost wakeup at round {round}"),
        }
    }
    child.expect_success();
    assert_eq!((ping.value(), pong.value()), (0, 0));
}

#[test]
fn a_permit_forgotten_in_one_process_is_released_by_another() {
    let _s = serial();
    let s = Semaphore::new(1).unwrap();
    fork(|| {
        s.acquire().forget();
        0
    })
    .expect_success();
    assert_eq!(s.value(), 0);
    let name = s.name().to_string();
    fork(|| i32::from(Semaphore::open(&name).unwrap().release().is_err())).expect_success();
    assert_eq!(s.value(), 1);
}

#[test]
fn a_waiter_killed_asleep_does_not_eat_later_releases() {
    let _s = serial();
    let s = Semaphore::new(0).unwrap();
    let mut victim = fork(|| {
        let _ = s.try_acquire_for(DEADLINE).map(|p| p.forget());
        0
    });
    let start = std::time::Instant::now();
    while !common::is_futex_sleeping(victim.pid()) {
        assert!(start.elapsed() < DEADLINE);
        std::thread::sleep(Duration::from_millis(2));
    }
    victim.kill();
    let survivor = fork(|| i32::from(s.try_acquire_for(DEADLINE).map(|p| p.forget()).is_none()));
    s.release().unwrap();
    survivor.expect_success();
    assert_eq!(s.value(), 0);
}

#[test]
fn the_builder_sets_the_value_and_open_or_create_keeps_it() {
    let _s = serial();
    let names = common::Names::new("sembuilder");
    let name = names.get("s");
    let s = Semaphore::builder(&name).value(5).unlink_on_drop(true).create().unwrap();
    assert_eq!(s.value(), 5);
    assert_eq!(Semaphore::open_or_create(&name, 1).unwrap().value(), 5);
    assert!(matches!(BoundedSemaphore::open(&name), Err(Error::WrongKind { .. })));
}

/// A waiter killed in its sleep used to leave `waiters` one too high, so
/// every later release paid a `FUTEX_WAKE`.
#[test]
fn regression_waiters_killed_asleep_cost_later_releases_no_syscall() {
    let _s = common::serial();
    let sem = Semaphore::new(0).unwrap();
    let victims: Vec<common::Child> = (0..3)
        .map(|_| common::fork(|| i32::from(sem.try_acquire_for(common::DEADLINE).map(|p| p.forget()).is_none())))
        .collect();
    common::await_futex_sleep(&victims.iter().map(common::Child::pid).collect::<Vec<_>>());
    common::kill_all(victims);
    assert!(common::futex_wakes_in_child(|| sem.release().unwrap()) <= 1);
    assert_eq!(common::futex_wakes_in_child(|| (0..20).for_each(|_| sem.release().unwrap())), 0);
    assert_eq!(sem.value(), 21);
}

/// The body of a segment is checked at open, not only its header.
#[test]
fn regression_a_semaphore_whose_value_exceeds_its_maximum_is_corrupt_at_open() {
    let _s = common::serial();
    let sem = BoundedSemaphore::new(2).unwrap();
    common::scribble(sem.name(), common::OBJECT_OFFSET, &5u32.to_ne_bytes()); // value
    assert!(matches!(BoundedSemaphore::open(sem.name()), Err(shmsync::Error::Corrupt { .. })));
    common::scribble(sem.name(), common::OBJECT_OFFSET, &2u32.to_ne_bytes());
    common::scribble(sem.name(), common::OBJECT_OFFSET + 8, &u32::MAX.to_ne_bytes()); // max
    assert!(matches!(BoundedSemaphore::open(sem.name()), Err(shmsync::Error::Corrupt { .. })));
}

/// Regression (found by review): `release` trusted the maximum in the
/// segment after open, so a peer's garbage there carried the count into
/// the sleepers' bit (the unit lost) or overflowed (a panic in debug). The
/// maximum is now bounded by `MAX_VALUE` at every use.
#[test]
fn regression_a_garbage_maximum_neither_loses_a_unit_nor_overflows() {
    let _s = serial();
    let names = common::Names::new("sem_max");
    let sem = Semaphore::builder(&names.get("s")).unlink_on_drop(true).create().unwrap();
    let (value, max) = (common::OBJECT_OFFSET, common::OBJECT_OFFSET + 8);
    common::scribble(sem.name(), max, &u32::MAX.to_ne_bytes());
    common::scribble(sem.name(), value, &0x7fff_ffffu32.to_ne_bytes());
    assert!(sem.release().is_err(), "at MAX_VALUE");
    assert_eq!(sem.value(), 0x7fff_ffff, "nothing lost");
    common::scribble(sem.name(), value, &u32::MAX.to_ne_bytes()); // sleepers' bit too
    assert!(sem.release().is_err());
    common::scribble(sem.name(), value, &0u32.to_ne_bytes());
    assert!(sem.release().is_ok());
    assert_eq!(sem.value(), 1);
}
