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

// ---- issue 10: regressions, each named for the bug it pins ----

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::DEADLINE;

/// Runs `f` on a thread and waits for it at most `DEADLINE`; a call that
/// deadlocks fails the test instead of hanging it.
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(DEADLINE).unwrap_or_else(|_| panic!("{what} did not return within {DEADLINE:?}"))
}

fn hangs_on_1(x: u32) -> u32 {
    if x == 1 {
        std::thread::sleep(Duration::from_secs(3600));
    }
    x
}

fn hangs(x: u32) -> u32 {
    std::thread::sleep(Duration::from_secs(3600));
    x
}

fn sigterm_ignored() {
    // SAFETY: SIG_IGN for SIGTERM changes no memory; it is what the test is about.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
}

fn huge_result(len: u32) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![7u8; len as usize])
}

fn byte_len(b: serde_bytes::ByteBuf) -> usize {
    b.len()
}

#[test]
fn pool_calls_during_an_imap_on_the_same_thread_do_not_deadlock() {
    let _s = serial();
    let pool = Arc::new(Pool::new(2).unwrap());
    let p = Arc::clone(&pool);
    let got = within_deadline("a pool call during an imap", move || {
        let mut it = p.imap(double, 0..10u64);
        let first = it.next().unwrap().unwrap();
        let applied = p.apply(double, 21).unwrap();
        let pids = p.pids().len();
        let shown = format!("{p:?}");
        let rest: Vec<u64> = it.map(Result::unwrap).collect();
        (first, applied, pids, shown.contains("Pool"), rest.len())
    });
    assert_eq!(got, (0, 42, 2, true, 9));
    pool.terminate();
}

#[test]
fn terminate_from_another_thread_stops_an_imap_with_a_hung_task() {
    let _s = serial();
    let pool = Arc::new(Pool::new(2).unwrap());
    let p = Arc::clone(&pool);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let outcomes: Vec<_> = p.imap(hangs, 0..2u32).collect();
        let _ = tx.send(outcomes);
    });
    // Let both tasks start, then stop the pool from here.
    std::thread::sleep(Duration::from_millis(300));
    within_deadline("terminate during a hung imap", {
        let pool = Arc::clone(&pool);
        move || pool.terminate()
    });
    let outcomes = rx.recv_timeout(DEADLINE).expect("the imap never ended after terminate");
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.is_err()), "{outcomes:?}");
}

#[test]
fn dropping_an_imap_with_a_hung_task_returns_and_the_pool_still_serves() {
    let _s = serial();
    let pool = Arc::new(Pool::new(2).unwrap());
    let p = Arc::clone(&pool);
    let served = within_deadline("dropping an imap with a task still running", move || {
        let mut it = p.imap(hangs_on_1, 0..2u32);
        let first = it.next().unwrap().unwrap();
        drop(it);
        // The other worker is free; the hung one stays busy.
        (first, p.apply(double, 4).unwrap())
    });
    assert_eq!(served, (0, 8));
    within_deadline("terminate with a hung worker", move || pool.terminate());
}

#[test]
fn terminate_kills_workers_that_ignore_sigterm() {
    let _s = serial();
    let pool = Arc::new(Pool::builder().processes(2).initializer(sigterm_ignored).build().unwrap());
    assert_eq!(pool.map(double, 0..4u64).unwrap(), vec![0, 2, 4, 6]);
    let pids = pool.pids();
    let p = Arc::clone(&pool);
    within_deadline("terminate of workers that ignore SIGTERM", move || p.terminate());
    for pid in pids {
        assert!(!is_our_live_or_zombie_child(pid), "worker {pid} left after terminate");
    }
    // Drop escalates too.
    let pool = Pool::builder().processes(1).initializer(sigterm_ignored).build().unwrap();
    let pids = pool.pids();
    within_deadline("drop of a pool whose workers ignore SIGTERM", move || drop(pool));
    for pid in pids {
        assert!(!is_our_live_or_zombie_child(pid), "worker {pid} left after drop");
    }
}

#[test]
fn a_worker_forked_while_another_thread_holds_stdout_or_stderr_exits_cleanly() {
    let _s = serial();
    for which in ["stdout", "stderr"] {
        // Another thread takes the lock over and over, holding it most of
        // the time, so forks land while it is held.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hammer = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let hold = || {
                        let t = std::time::Instant::now();
                        while t.elapsed() < Duration::from_micros(300) {
                            std::hint::spin_loop();
                        }
                    };
                    if which == "stdout" {
                        let _g = std::io::stdout().lock();
                        hold();
                    } else {
                        let _g = std::io::stderr().lock();
                        hold();
                    }
                }
            })
        };
        for round in 0..6 {
            let pool = Pool::new(2).unwrap();
            assert_eq!(pool.apply(double, 1).unwrap(), 2);
            pool.close();
            // A worker that inherited a held lock hangs in its exit flush.
            let ended = pool.join_timeout(Duration::from_secs(5)).unwrap();
            if !ended {
                pool.terminate();
            }
            assert!(ended, "round {round}: a worker hung at exit ({which} lock held at fork)");
        }
        stop.store(true, Ordering::Relaxed);
        hammer.join().unwrap();
    }
}

#[test]
fn a_pool_used_from_a_forked_child_is_an_error_there_and_the_parent_keeps_its_results() {
    let _s = serial();
    let pool = Pool::new(2).unwrap();
    let child = common::fork(|| {
        let map_refused = matches!(pool.map(double, 0..4u64), Err(Error::ForeignPool { .. }));
        let apply_refused = matches!(pool.apply(double, 1), Err(Error::ForeignPool { .. }));
        let join_refused = matches!(pool.join(), Err(Error::ForeignPool { .. }));
        // close and terminate there must not touch the parent's workers.
        pool.close();
        pool.terminate();
        i32::from(!(map_refused && apply_refused && join_refused))
    });
    child.expect_success();
    assert_eq!(pool.map(double, 0..100u64).unwrap(), (0..100u64).map(|x| x * 2).collect::<Vec<_>>());
    pool.close();
    pool.join().unwrap();
}

#[test]
fn a_pipe_made_before_the_pool_reports_disconnected_once_the_pool_is_gone() {
    // The documented behaviour: workers inherit every descriptor, as Python's
    // do under fork, so a pipe end the parent drops stays open in them.
    let _s = serial();
    let (ours, theirs) = shmsync::pipe().unwrap();
    let pool = Pool::new(1).unwrap();
    drop(theirs);
    assert_eq!(ours.recv_bytes_timeout(Duration::from_millis(50)).unwrap(), None);
    pool.terminate();
    assert!(matches!(ours.recv_bytes_timeout(DEADLINE), Err(Error::Disconnected)));
}

#[test]
fn an_oversize_result_or_item_is_too_large_and_the_worker_lives() {
    let _s = serial();
    let pool = Pool::new(1).unwrap();
    let pids = pool.pids();
    let over = (shmsync::data::DEFAULT_MAX_FRAME + 1024) as u32;
    assert!(matches!(pool.apply(huge_result, over), Err(Error::TooLarge { .. })));
    let item = serde_bytes::ByteBuf::from(vec![1u8; over as usize]);
    assert!(matches!(pool.apply(byte_len, item), Err(Error::TooLarge { .. })));
    // In a chunk, only the oversize item fails.
    let items = vec![
        serde_bytes::ByteBuf::from(vec![1u8; 3]),
        serde_bytes::ByteBuf::from(vec![1u8; over as usize]),
        serde_bytes::ByteBuf::from(vec![1u8; 5]),
    ];
    let outcomes: Vec<_> = pool.imap(byte_len, items).collect();
    assert!(matches!(outcomes[..], [Ok(3), Err(Error::TooLarge { .. }), Ok(5)]), "{outcomes:?}");
    let results: Vec<_> = pool.imap(huge_result, [10, over, 20]).map(|r| r.map(|b| b.len())).collect();
    assert!(matches!(results[..], [Ok(10), Err(Error::TooLarge { .. }), Ok(20)]), "{results:?}");
    assert_eq!(pool.pids(), pids, "a healthy worker was replaced");
    assert_eq!(pool.apply(double, 3).unwrap(), 6);
}

#[test]
fn no_spurious_worker_died_after_an_early_dropped_imap_with_max_tasks_1() {
    let _s = serial();
    let pool = Pool::builder().processes(2).max_tasks_per_child(1).build().unwrap();
    for _ in 0..3 {
        let first: Vec<_> = pool.imap(double, 0..10u64).take(1).collect();
        assert_eq!(first.len(), 1);
        assert_eq!(pool.map(double, 0..6u64).unwrap(), vec![0, 2, 4, 6, 8, 10]);
    }
    pool.close();
    pool.join().unwrap();
}

#[test]
fn no_spurious_worker_died_for_a_worker_that_died_while_idle() {
    let _s = serial();
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map(double, 0..4u64).unwrap(), vec![0, 2, 4, 6]);
    for pid in pool.pids() {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        // Wait until it is a zombie: dead, not yet reaped by the pool.
        let start = std::time::Instant::now();
        while !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")) {
            assert!(start.elapsed() < DEADLINE, "worker {pid} did not die");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert_eq!(pool.map(double, 0..6u64).unwrap(), vec![0, 2, 4, 6, 8, 10]);
    pool.close();
    pool.join().unwrap();
}

#[test]
fn a_replacement_fork_that_fails_leaves_no_stale_index() {
    let _s = serial();
    let child = common::fork(|| {
        // Lose root, so RLIMIT_NPROC applies, then forbid new processes once
        // the pool has its workers.
        if nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).is_err()
            || nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).is_err()
        {
            return 2;
        }
        let pool = Pool::new(2).unwrap();
        let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &zero) } != 0 {
            return 3;
        }
        let outcomes: Vec<_> = pool.imap(killed_on_7, 0..12u32).collect();
        if outcomes.len() != 12 || !matches!(outcomes[7], Err(Error::WorkerDied { index: 7, .. })) {
            return 4;
        }
        if outcomes.iter().enumerate().any(|(i, o)| i != 7 && o.as_ref().ok() != Some(&(i as u32))) {
            return 5;
        }
        // The last worker dies too: what follows are errors, not panics.
        if !matches!(pool.apply(killed_on_7, 7), Err(Error::WorkerDied { .. })) {
            return 6;
        }
        if !matches!(pool.map(double, 0..3u64), Err(Error::NoWorkers { .. })) {
            return 7;
        }
        let mut it = pool.imap(double, 0..3u64);
        if !matches!(it.next(), Some(Err(Error::NoWorkers { .. }))) {
            return 8;
        }
        drop(it);
        pool.terminate();
        0
    });
    child.expect_success();
}

#[test]
fn map_chunked_with_a_huge_chunksize_works() {
    let _s = serial();
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map_chunked(double, 0..10u64, usize::MAX).unwrap(), (0..10u64).map(|x| x * 2).collect::<Vec<_>>());
    pool.close();
    pool.join().unwrap();
}

// ---- issue 16: async results, callbacks, starmap ----

fn panics_on_multiples_of_10(x: u64) -> u64 {
    if x % 10 == 0 {
        panic!("multiple of ten");
    }
    x * 2
}

fn add3(a: u32, b: u32, c: u32) -> u32 {
    a + b + c
}

fn sigkill_self(x: u64) -> u64 {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    x
}

#[test]
fn apply_async_runs_exactly_one_callback_per_task_and_error_callback_for_a_panic() {
    use std::sync::atomic::AtomicUsize;
    let _s = serial();
    let pool = Pool::new(2).unwrap();
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let threads = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let results: Vec<_> = (0..100u64)
        .map(|x| {
            let (ok, failed, threads) = (Arc::clone(&ok), Arc::clone(&failed), Arc::clone(&threads));
            let threads2 = Arc::clone(&threads);
            let callbacks = shmsync::Callbacks::new()
                .callback(move |r: &u64| {
                    assert_eq!(*r, x * 2);
                    ok.fetch_add(1, Ordering::SeqCst);
                    threads.lock().unwrap().insert(std::thread::current().name().map(String::from));
                })
                .error_callback(move |e| {
                    assert!(matches!(e, Error::TaskFailed { message, .. } if message == "multiple of ten"), "{e}");
                    failed.fetch_add(1, Ordering::SeqCst);
                    threads2.lock().unwrap().insert(std::thread::current().name().map(String::from));
                });
            pool.apply_async_with(panics_on_multiples_of_10, x, callbacks)
        })
        .collect();
    for (x, r) in results.into_iter().enumerate() {
        assert!(r.wait_timeout(DEADLINE), "item {x} never finished");
        assert_eq!(r.successful(), Some(x % 10 != 0));
        match r.get() {
            Ok(v) => assert_eq!(v, x as u64 * 2),
            Err(e) => assert!(x % 10 == 0, "item {x}: {e}"),
        }
    }
    // Each callback ran before its result became ready.
    assert_eq!(ok.load(Ordering::SeqCst), 90);
    assert_eq!(failed.load(Ordering::SeqCst), 10);
    let threads = threads.lock().unwrap().clone();
    assert_eq!(threads.into_iter().collect::<Vec<_>>(), vec![Some("shmsync-pool-results".to_string())]);
    pool.close();
    pool.join().unwrap();
}

#[test]
fn a_sigkilled_worker_fails_only_its_async_result_with_worker_died() {
    let _s = serial();
    let pool = Pool::new(2).unwrap();
    let doomed = pool.apply_async(sigkill_self, 1);
    let fine: Vec<_> = (0..20u64).map(|x| pool.apply_async(double, x)).collect();
    let mapped = pool.map_async(double, 0..50u64);
    assert!(matches!(doomed.get(), Err(Error::WorkerDied { signal: Some(9), .. })));
    for (x, r) in fine.into_iter().enumerate() {
        assert_eq!(r.get_timeout(DEADLINE).unwrap(), Some(x as u64 * 2));
    }
    assert_eq!(mapped.get().unwrap(), (0..50u64).map(|x| x * 2).collect::<Vec<_>>());
    pool.close();
    pool.join().unwrap();
}

#[test]
fn map_async_starmap_and_starmap_async_give_results_in_order_and_close_lets_them_finish() {
    let _s = serial();
    let pool = Pool::new(2).unwrap();
    assert_eq!(
        pool.starmap(add3, (0..100u32).map(|i| (i, i, 1))).unwrap(),
        (0..100u32).map(|i| 2 * i + 1).collect::<Vec<_>>()
    );
    let star = pool.starmap_async(add3, [(1, 2, 3), (4, 5, 6)]);
    let mapped = pool.map_async(double, 0..1000u64);
    let failing = pool.map_async(panics_on_3, 0..6u32);
    // Python's pattern: close and join, then read the results.
    pool.close();
    pool.join().unwrap();
    assert!(star.ready() && mapped.ready() && failing.ready());
    assert_eq!(star.get().unwrap(), vec![6, 15]);
    assert_eq!(mapped.get().unwrap(), (0..1000u64).map(|x| x * 2).collect::<Vec<_>>());
    assert_eq!(failing.successful(), Some(false));
    assert!(matches!(failing.get_timeout(DEADLINE), Err(Error::TaskFailed { index: 3, .. })));
    assert_eq!(failing.successful(), Some(false), "still unsuccessful once its error was taken");
    assert!(matches!(failing.get(), Err(Error::InvalidArgument { .. })));
    // After close, new async calls fail at once.
    assert!(matches!(pool.apply_async(double, 1).get(), Err(Error::PoolClosed)));
}

#[test]
fn terminate_fails_outstanding_async_results_instead_of_hanging() {
    let _s = serial();
    let pool = Pool::new(1).unwrap();
    let hung = pool.apply_async(hangs, 1);
    let queued = pool.map_async(double, 0..10u64);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!hung.ready());
    within_deadline("terminate with async calls outstanding", {
        let pool = Arc::new(pool);
        move || pool.terminate()
    });
    assert!(matches!(hung.get_timeout(DEADLINE), Err(Error::PoolClosed)));
    assert!(matches!(queued.get_timeout(DEADLINE), Err(Error::PoolClosed)));
}
