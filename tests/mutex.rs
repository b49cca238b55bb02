//! Mutex<T> across real processes.

mod common;

use common::{fork, serial, DEADLINE};
use shmsync::{Error, Mutex};

#[test]
fn four_processes_times_10000_increments_of_an_array_are_exact() {
    let _s = serial();
    let m = Mutex::<[u64; 4]>::new([0; 4]).unwrap();
    let children: Vec<_> = (0..4)
        .map(|i| {
            let name = m.name().to_string();
            let inherited = &m;
            fork(move || {
                let opened;
                let m = if i % 2 == 0 {
                    inherited
                } else {
                    opened = Mutex::<[u64; 4]>::open(&name).unwrap();
                    &opened
                };
                for _ in 0..10_000 {
                    let mut g = m.try_lock_for(DEADLINE).unwrap();
                    for slot in g.iter_mut() {
                        *slot += 1;
                    }
                }
                0
            })
        })
        .collect();
    for c in children {
        c.expect_success();
    }
    assert_eq!(*m.lock().unwrap(), [40_000; 4]);
}

#[test]
fn opening_as_the_wrong_type_is_incompatible_layout() {
    let _s = serial();
    let m = Mutex::<[i64; 4]>::new([1, 2, 3, 4]).unwrap();
    assert!(matches!(Mutex::<[u64; 4]>::open(m.name()), Err(Error::IncompatibleLayout { .. })));
    assert!(matches!(Mutex::<[i64; 8]>::open(m.name()), Err(Error::IncompatibleLayout { .. })));
    assert!(matches!(Mutex::<u8>::open(m.name()), Err(Error::IncompatibleLayout { .. })));
    assert!(matches!(shmsync::Lock::open(m.name()), Err(Error::WrongKind { .. })));
    assert_eq!(*Mutex::<[i64; 4]>::open(m.name()).unwrap().lock().unwrap(), [1, 2, 3, 4]);
}

#[test]
fn a_holder_killed_mid_update_poisons_it_for_everyone() {
    let _s = serial();
    let m = Mutex::<u64>::new(7).unwrap();
    let written = common::Shared::<std::sync::atomic::AtomicU32>::new();
    let mut child = fork(|| {
        let mut g = m.lock().unwrap();
        *g = 8;
        written.store(1, std::sync::atomic::Ordering::Release);
        std::thread::sleep(DEADLINE);
        0
    });
    // Kill it inside the critical section, after its write.
    common::await_value(&written, 1, "the child's write under the lock");
    child.kill();
    let g = m.try_lock_for(DEADLINE).unwrap_err();
    match g {
        std::sync::TryLockError::Poisoned(p) => assert_eq!(*p.into_inner(), 8),
        _ => panic!("not poisoned"),
    }
    m.clear_poison();
    assert_eq!(*m.lock().unwrap(), 8);
}
