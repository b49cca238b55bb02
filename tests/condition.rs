//! Condition across real processes: exact wake counts, predicates, and
//! waiters killed inside `wait`.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{fork, is_futex_sleeping, serial, Child, Shared, DEADLINE};
use shmsync::Condition;

#[repr(C)]
#[derive(Default)]
struct State {
    woken: AtomicU32,
    value: AtomicU32,
}

/// Waits until every child sleeps in a futex wait.
fn until_asleep(children: &[Child]) {
    common::await_futex_sleep(&children.iter().map(Child::pid).collect::<Vec<_>>());
}

/// Waits until `counter` reaches `n`, then checks it stays there a moment.
fn until_count(counter: &AtomicU32, n: u32) {
    let start = Instant::now();
    while counter.load(Ordering::SeqCst) < n {
        assert!(start.elapsed() < DEADLINE, "only {} of {n} woke", counter.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A child that waits once (one `wait`, no predicate) and counts its wakeup.
fn one_shot_waiter<'a>(cond: &'a Condition, state: &'a Shared<State>) -> impl FnOnce() -> i32 + 'a {
    move || {
        let g = cond.lock().unwrap();
        let (_g, res) = cond.wait_timeout(g, DEADLINE).unwrap();
        if res.timed_out() {
            return 1;
        }
        state.woken.fetch_add(1, Ordering::SeqCst);
        0
    }
}

#[test]
fn notify_one_wakes_exactly_one_notify_two_exactly_two_notify_all_the_rest() {
    let _s = serial();
    let cond = Condition::new().unwrap();
    let state = Shared::<State>::new();
    let children: Vec<Child> = (0..6).map(|_| fork(one_shot_waiter(&cond, &state))).collect();
    until_asleep(&children);

    cond.notify_one();
    until_count(&state.woken, 1);
    // The woken one has left; let the rest be seen asleep again before
    // judging that nobody else woke.
    let sleeping: Vec<&Child> = children.iter().filter(|c| is_futex_sleeping(c.pid())).collect();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(state.woken.load(Ordering::SeqCst), 1, "notify_one woke more than one");
    assert_eq!(sleeping.len(), 5);

    cond.notify(2);
    until_count(&state.woken, 3);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(state.woken.load(Ordering::SeqCst), 3, "notify(2) woke more than two");

    cond.notify_all();
    until_count(&state.woken, 6);
    for c in children {
        c.expect_success();
    }
}

#[test]
fn notify_with_nobody_waiting_is_not_banked() {
    let _s = serial();
    let cond = Condition::new().unwrap();
    cond.notify_all();
    cond.notify_one();
    let g = cond.lock().unwrap();
    let (_g, res) = cond.wait_timeout(g, Duration::from_millis(50)).unwrap();
    assert!(res.timed_out());
}

#[test]
fn wait_while_follows_a_state_the_parent_bumps() {
    let _s = serial();
    let cond = Condition::new().unwrap();
    let state = Shared::<State>::new();
    let children: Vec<Child> = (1..=3u32)
        .map(|target| {
            let (cond, state) = (&cond, &state);
            fork(move || {
                let g = cond.lock().unwrap();
                let (_g, res) =
                    cond.wait_timeout_while(g, DEADLINE, || state.value.load(Ordering::SeqCst) < target * 10).unwrap();
                i32::from(res.timed_out())
            })
        })
        .collect();
    for _ in 0..30 {
        let _g = cond.lock().unwrap();
        state.value.fetch_add(1, Ordering::SeqCst);
        cond.notify_all();
    }
    for c in children {
        c.expect_success();
    }
}

#[test]
fn waiters_killed_inside_wait_cost_the_others_nothing() {
    let _s = serial();
    let cond = Condition::new().unwrap();
    let state = Shared::<State>::new();
    for round in 1..=3u32 {
        let mut victims: Vec<Child> = (0..3).map(|_| fork(one_shot_waiter(&cond, &state))).collect();
        until_asleep(&victims);
        for v in &mut victims {
            v.kill();
        }
        // A live waiter, after the deaths, gets the next notify_one.
        let survivor = fork(one_shot_waiter(&cond, &state));
        until_asleep(std::slice::from_ref(&survivor));
        cond.notify_one();
        survivor.expect_success();
        assert_eq!(state.woken.load(Ordering::SeqCst), round);
        // No notify blocks, with or without (dead) waiters.
        cond.notify_all();
        cond.notify(5);
    }
    assert!(!cond.is_poisoned());
}

#[test]
fn a_holder_killed_while_holding_the_lock_poisons_the_next_wait() {
    let _s = serial();
    let cond = Condition::new().unwrap();
    let state = Shared::<State>::new();
    let mut holder = fork(|| {
        let _g = cond.lock().unwrap();
        state.value.store(1, Ordering::SeqCst);
        std::thread::sleep(DEADLINE);
        0
    });
    common::await_value(&state.value, 1, "the holder");
    holder.kill();
    let g = match cond.lock() {
        Err(p) => p.into_inner(),
        Ok(_) => panic!("holder death did not poison the condition's lock"),
    };
    assert!(cond.is_poisoned());
    cond.clear_poison();
    let (_g, res) = cond.wait_timeout(g, Duration::from_millis(10)).unwrap();
    assert!(res.timed_out());
}

#[test]
#[should_panic(expected = "belongs to another Condition")]
fn a_guard_from_another_condition_is_refused() {
    let _s = serial();
    let a = Condition::new().unwrap();
    let b = Condition::new().unwrap();
    let g = b.lock().unwrap();
    let _ = a.wait_timeout(g, Duration::from_millis(1));
}

#[test]
fn threads_in_one_process_use_it_too() {
    let _s = serial();
    let cond = Condition::new().unwrap();
    let state = State::default();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let g = cond.lock().unwrap();
                let (_g, res) =
                    cond.wait_timeout_while(g, DEADLINE, || state.value.load(Ordering::SeqCst) == 0).unwrap();
                assert!(!res.timed_out());
            });
        }
        std::thread::sleep(Duration::from_millis(20));
        let _g = cond.lock().unwrap();
        state.value.store(1, Ordering::SeqCst);
        cond.notify_all();
    });
}

/// A guard taken through a second handle to the same Condition is its
/// guard: both handles share one mapping, so the check that refuses
/// another Condition's guard used to refuse it too.
#[test]
fn regression_a_guard_from_another_handle_to_the_same_condition_is_accepted() {
    let _s = serial();
    let a = Condition::new().unwrap();
    let b = Condition::open(a.name()).unwrap();
    let g = a.lock().unwrap();
    let (g, res) = b.wait_timeout(g, Duration::from_millis(5)).unwrap();
    assert!(res.timed_out());
    drop(g);
}

/// `FUTEX_WAKE` picks the highest-priority sleeper, so a newer real-time
/// waiter used to absorb a `notify_one` meant for an older one. Notifies go
/// to the oldest waiter, whatever the priorities.
#[test]
fn regression_notify_one_goes_to_the_oldest_waiter_not_the_highest_priority() {
    let _s = serial();
    let cond = Condition::new().unwrap();
    let state = Shared::<State>::new();
    let oldest = fork(|| {
        let g = cond.lock().unwrap();
        let (_g, res) = cond.wait_timeout(g, DEADLINE).unwrap();
        state.woken.store(1, Ordering::SeqCst);
        i32::from(res.timed_out())
    });
    until_asleep(std::slice::from_ref(&oldest));
    let newest = fork(|| {
        let param = libc::sched_param { sched_priority: 10 };
        // SAFETY: sets this (forked, single-threaded) process's own policy.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
            return 2; // not permitted here: the order still holds, just untested
        }
        let g = cond.lock().unwrap();
        let (_g, res) = cond.wait_timeout(g, DEADLINE).unwrap();
        state.woken.store(2, Ordering::SeqCst);
        i32::from(res.timed_out())
    });
    until_asleep(std::slice::from_ref(&newest));
    cond.notify_one();
    oldest.expect_success();
    assert_eq!(state.woken.load(Ordering::SeqCst), 1, "the real-time waiter took the notify");
    cond.notify_one();
    let mut newest = newest;
    match newest.wait() {
        common::End::Exited(0 | 2) => {}
        other => panic!("{other:?}"),
    }
}

/// A waiter killed in its sleep used to leave a count that made every later
/// notify pay a `FUTEX_WAKE`.
#[test]
fn regression_waiters_killed_asleep_cost_later_notifies_no_syscall() {
    let _s = serial();
    let cond = Condition::new().unwrap();
    let state = Shared::<State>::new();
    let victims: Vec<Child> = (0..3).map(|_| fork(one_shot_waiter(&cond, &state))).collect();
    until_asleep(&victims);
    common::kill_all(victims);
    // The first notify finds the dead (and reclaims their slots); after
    // that, a notify with nobody waiting makes no syscall.
    cond.notify_all();
    assert_eq!(common::futex_wakes_in_child(|| (0..20).for_each(|_| cond.notify_one())), 0);
}
