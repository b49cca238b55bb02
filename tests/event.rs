//! Event across real processes.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{await_futex_sleep, await_value, fork, serial, Shared, DEADLINE};
use shmsync::Event;

#[repr(C)]
struct Flags {
    ready: AtomicU32,
    woken: AtomicU32,
}

#[test]
fn wait_timeout_returns_false_when_not_set() {
    let _s = serial();
    let ev = Event::new().unwrap();
    assert!(!ev.wait_timeout(Duration::ZERO));
    let start = Instant::now();
    assert!(!ev.wait_timeout(Duration::from_millis(100)));
    // The outcome is the point; this only checks it did wait, not how fast.
    assert!(start.elapsed() >= Duration::from_millis(100));
}

#[test]
fn set_from_a_child_wakes_the_parent() {
    let _s = serial();
    let ev = Event::new().unwrap();
    let name = ev.name().to_string();
    let child = fork(|| {
        let ev = Event::open(&name).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        ev.set();
        0
    });
    assert!(ev.wait_timeout(DEADLINE));
    child.expect_success();
}

#[test]
fn set_wakes_five_waiting_children() {
    let _s = serial();
    let ev = Event::new().unwrap();
    let flags = Shared::<Flags>::new();
    let children: Vec<_> = (0..5)
        .map(|_| {
            fork(|| {
                if ev.wait_timeout(DEADLINE) {
                    flags.woken.fetch_add(1, Ordering::SeqCst);
                    0
                } else {
                    1
                }
            })
        })
        .collect();
    await_futex_sleep(&children.iter().map(|c| c.pid()).collect::<Vec<_>>());
    assert_eq!(flags.woken.load(Ordering::SeqCst), 0);
    ev.set();
    for c in children {
        c.expect_success();
    }
    assert_eq!(flags.woken.load(Ordering::SeqCst), 5);
}

#[test]
fn set_still_works_after_a_waiter_was_killed_mid_wait() {
    let _s = serial();
    let ev = Event::new().unwrap();
    let mut victim = fork(|| {
        ev.wait_timeout(DEADLINE);
        0
    });
    let survivor = fork(|| i32::from(!ev.wait_timeout(DEADLINE)));
    await_futex_sleep(&[victim.pid(), survivor.pid()]);
    victim.kill();
    ev.set();
    survivor.expect_success();
    // And later waiters on a set event return at once; after clear they wait.
    assert!(ev.wait_timeout(Duration::ZERO));
    ev.clear();
    assert!(!ev.wait_timeout(Duration::from_millis(10)));
}

#[test]
fn a_set_then_clear_pulse_still_wakes_sleepers() {
    let _s = serial();
    let ev = Event::new().unwrap();
    let waiter = fork(|| i32::from(!ev.wait_timeout(DEADLINE)));
    await_futex_sleep(&[waiter.pid()]);
    ev.set();
    ev.clear();
    waiter.expect_success();
}

#[test]
fn threads_and_processes_share_one_event() {
    let _s = serial();
    let ev = Event::new().unwrap();
    let flags = Shared::<Flags>::new();
    let child = fork(|| {
        flags.ready.store(1, Ordering::Release);
        i32::from(!ev.wait_timeout(DEADLINE))
    });
    await_value(&flags.ready, 1, "the child");
    std::thread::scope(|s| {
        let t = s.spawn(|| ev.wait_timeout(DEADLINE));
        ev.set();
        assert!(t.join().unwrap());
    });
    child.expect_success();
}

/// A waiter killed in its sleep leaves the waiters bit set: the next set
/// pays one `FUTEX_WAKE` and clears it, and later sets pay nothing.
#[test]
fn regression_waiters_killed_asleep_cost_later_sets_no_syscall() {
    let _s = common::serial();
    let ev = Event::new().unwrap();
    let victims: Vec<common::Child> =
        (0..3).map(|_| common::fork(|| i32::from(!ev.wait_timeout(common::DEADLINE)))).collect();
    common::await_futex_sleep(&victims.iter().map(common::Child::pid).collect::<Vec<_>>());
    common::kill_all(victims);
    assert!(common::futex_wakes_in_child(|| ev.set()) <= 1);
    ev.clear();
    assert_eq!(
        common::futex_wakes_in_child(|| (0..20).for_each(|_| {
            ev.set();
            ev.clear();
        })),
        0
    );
}
