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
