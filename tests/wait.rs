//! `wait_any`, `wait_all` and the async methods, across real processes:
//! the right index for each kind, deadlines, a random object made ready by
//! another process 1,000 times, and futures that are woken by other
//! processes, dropped or timed out by the runtime without losing anything.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{fork, serial, Child, Shared, DEADLINE};
use shmsync::{wait_all, wait_any, Barrier, BoundedSemaphore, Event, Queue, Semaphore, Waitable};

const SHORT: Duration = Duration::from_millis(50);

#[test]
fn wait_any_returns_the_index_of_the_ready_object_for_each_kind() {
    let _s = serial();
    let ev = Event::new().unwrap();
    let sem = Semaphore::new(0).unwrap();
    let bounded = BoundedSemaphore::new(1).unwrap();
    let q = Queue::<u32>::new(64).unwrap();
    let barrier = Barrier::new(2).unwrap();
    bounded.try_acquire().unwrap().forget();
    // Nothing is ready: the timeout ends the wait, not before its deadline.
    let start = Instant::now();
    let objects: [&dyn Waitable; 5] = [&ev, &sem, &bounded, &q.readable(), &barrier];
    assert_eq!(wait_any(&objects, Some(SHORT)).unwrap(), None);
    assert!(start.elapsed() >= SHORT, "returned before its deadline");
    // Each kind made ready, one at a time, from another process.
    let readable = q.readable();
    let mut children = Vec::new();
    for (i, make_ready) in
        [&(|| ev.set()) as &(dyn Fn() + Sync), &|| sem.release().unwrap(), &|| bounded.release().unwrap(), &|| {
            q.put(&9).unwrap()
        }]
        .into_iter()
        .enumerate()
    {
        let objects: [&dyn Waitable; 4] = [&ev, &sem, &bounded, &readable];
        let child = fork(|| {
            std::thread::sleep(Duration::from_millis(20));
            make_ready();
            0
        });
        assert_eq!(wait_any(&objects, Some(DEADLINE)).unwrap(), Some(i));
        // The wait took nothing; take it now, so only the next is ready.
        match i {
            0 => {
                assert!(ev.is_set());
                ev.clear();
            }
            1 => sem.try_acquire().expect("the unit is still there").forget(),
            2 => bounded.try_acquire().expect("the unit is still there").forget(),
            _ => assert_eq!(q.try_get().unwrap(), Some(9)),
        }
        children.push(child);
    }
    children.into_iter().for_each(Child::expect_success);
    // A barrier's generation ending, by two other processes meeting at it.
    let meet = || i32::from(barrier.wait_timeout(DEADLINE).is_err());
    let (a, b) = (fork(meet), fork(meet));
    assert_eq!(wait_any(&[&barrier], Some(DEADLINE)).unwrap(), Some(0));
    a.expect_success();
    b.expect_success();
    // Writable: a full queue, then room made by another process.
    let small = Queue::<Vec<u8>>::new(32).unwrap();
    small.put(&vec![0; small.capacity() - 24]).unwrap(); // full
    assert_eq!(wait_any(&[&small.writable()], Some(SHORT)).unwrap(), None);
    let drainer = fork(|| i32::from(small.get_timeout(DEADLINE).unwrap().is_none()));
    assert_eq!(wait_any(&[&small.writable()], Some(DEADLINE)).unwrap(), Some(0));
    drainer.expect_success();
}

#[test]
fn an_object_ready_before_the_call_returns_at_once_and_bad_lists_are_refused() {
    let _s = serial();
    let a = Event::new().unwrap();
    let b = Event::new().unwrap();
    b.set();
    assert_eq!(wait_any(&[&a, &b], None).unwrap(), Some(1));
    assert!(matches!(wait_any(&[], None), Err(shmsync::Error::InvalidArgument { .. })));
    let many: Vec<&dyn Waitable> = std::iter::repeat_n(&a as &dyn Waitable, 200).collect();
    assert!(matches!(wait_any(&many, None), Err(shmsync::Error::InvalidArgument { .. })));
    // wait_all: not until both are ready.
    assert!(!wait_all(&[&a, &b], Some(SHORT)).unwrap());
    a.set();
    assert!(wait_all(&[&a, &b], Some(DEADLINE)).unwrap());
}

#[repr(C)]
struct Turn {
    chosen: AtomicU32,
}

#[test]
fn a_random_one_of_100_objects_made_ready_by_another_process_is_found_1000_times() {
    let _s = serial();
    let events: Vec<Event> = (0..100).map(|_| Event::new().unwrap()).collect();
    let ack = Semaphore::new(0).unwrap();
    let turn = Shared::<Turn>::new();
    const ROUNDS: u32 = 1000;
    let setter = fork(|| {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..ROUNDS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % 100) as u32;
            turn.chosen.store(i, Ordering::SeqCst);
            events[i as usize].set();
            if ack.try_acquire_for(DEADLINE).map(|p| p.forget()).is_none() {
                return 1;
            }
        }
        0
    });
    let objects: Vec<&dyn Waitable> = events.iter().map(|e| e as &dyn Waitable).collect();
    for round in 0..ROUNDS {
        let i = wait_any(&objects, Some(DEADLINE)).unwrap().expect("nothing became ready");
        assert_eq!(i as u32, turn.chosen.load(Ordering::SeqCst), "round {round}");
        events[i].clear();
        ack.release().unwrap();
    }
    setter.expect_success();
}

fn runtimes() -> [tokio::runtime::Runtime; 2] {
    [
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap(),
    ]
}

#[test]
fn a_thousand_tasks_awaiting_one_event_are_woken_by_one_set_from_another_process() {
    let _s = serial();
    for rt in runtimes() {
        let ev = std::sync::Arc::new(Event::new().unwrap());
        let woken = std::sync::Arc::new(AtomicU32::new(0));
        let setter = fork(|| {
            std::thread::sleep(Duration::from_millis(100));
            ev.set();
            0
        });
        rt.block_on(async {
            let tasks: Vec<_> = (0..1000)
                .map(|_| {
                    let (ev, woken) = (ev.clone(), woken.clone());
                    tokio::spawn(async move {
                        tokio::time::timeout(DEADLINE, ev.wait_async()).await.expect("not woken");
                        woken.fetch_add(1, Ordering::Relaxed);
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        setter.expect_success();
        assert_eq!(woken.load(Ordering::Relaxed), 1000);
    }
}

#[test]
fn a_dropped_acquire_takes_no_unit_and_a_released_one_wakes_a_task() {
    let _s = serial();
    for rt in runtimes() {
        let sem = std::sync::Arc::new(Semaphore::new(0).unwrap());
        rt.block_on(async {
            // Timed out by the runtime: dropped while pending.
            assert!(tokio::time::timeout(SHORT, sem.acquire_async()).await.is_err());
        });
        assert_eq!(sem.value(), 0);
        let releaser = fork(|| {
            std::thread::sleep(Duration::from_millis(50));
            sem.release().unwrap();
            0
        });
        let sem2 = sem.clone();
        rt.block_on(async move {
            let permit = tokio::time::timeout(DEADLINE, sem2.acquire_async()).await.expect("never acquired");
            permit.forget();
        });
        releaser.expect_success();
        assert_eq!(sem.value(), 0);
    }
}

#[test]
fn getters_timed_out_by_the_runtime_lose_no_message() {
    let _s = serial();
    const N: u32 = 2000;
    for rt in runtimes() {
        let q = std::sync::Arc::new(Queue::<u32>::new(1024).unwrap());
        let producer = fork(|| {
            for i in 0..N {
                if q.put_timeout(&i, DEADLINE).is_err() {
                    return 1;
                }
                if i % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            0
        });
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        rt.block_on(async {
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (q, got) = (q.clone(), got.clone());
                    tokio::spawn(async move {
                        let start = Instant::now();
                        while (got.lock().unwrap().len() as u32) < N && start.elapsed() < DEADLINE {
                            // Short timeouts: many futures are dropped while pending.
                            if let Ok(v) = tokio::time::timeout(Duration::from_micros(300), q.get_async()).await {
                                got.lock().unwrap().push(v.unwrap());
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        producer.expect_success();
        let mut got = got.lock().unwrap().clone();
        assert_eq!(got.len() as u32, N, "messages were lost");
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len() as u32, N, "messages were duplicated");
        assert!(q.is_empty());
    }
}

#[test]
fn put_async_waits_for_room_and_a_dropped_one_puts_nothing() {
    let _s = serial();
    for rt in runtimes() {
        let q = std::sync::Arc::new(Queue::<Vec<u8>>::new(32).unwrap());
        let fill = vec![1; q.capacity() - 24];
        q.put(&fill).unwrap(); // full
        rt.block_on(async {
            let msg = vec![2u8; 8];
            assert!(tokio::time::timeout(SHORT, q.put_async(&msg)).await.is_err());
        });
        assert_eq!(q.len(), 1);
        let consumer = fork(|| {
            std::thread::sleep(Duration::from_millis(50));
            i32::from(q.get_timeout(DEADLINE).unwrap() != Some(fill.clone()))
        });
        let q2 = q.clone();
        rt.block_on(async move {
            let msg = vec![3u8; 8];
            tokio::time::timeout(DEADLINE, q2.put_async(&msg)).await.expect("no room came").unwrap();
        });
        consumer.expect_success();
        assert_eq!(q.try_get().unwrap(), Some(vec![3; 8]));
    }
}

#[test]
fn barrier_wait_async_and_join_async_complete_across_processes() {
    let _s = serial();
    for rt in runtimes() {
        let barrier = std::sync::Arc::new(Barrier::new(2).unwrap());
        let other = fork(|| i32::from(barrier.wait_timeout(DEADLINE).is_err()));
        let b = barrier.clone();
        let r = rt.block_on(async move { tokio::time::timeout(DEADLINE, b.wait_async()).await.expect("stuck") });
        assert!(r.is_ok());
        other.expect_success();
        let p = shmsync::Process::new(|| std::thread::sleep(Duration::from_millis(50)));
        p.start().unwrap();
        let code = rt.block_on(async { tokio::time::timeout(DEADLINE, p.join_async()).await.expect("stuck") });
        assert_eq!(code.unwrap(), 0);
        let unstarted = shmsync::Process::new(|| ());
        assert!(rt.block_on(unstarted.join_async()).is_err());
    }
}

/// A producer killed at each of the put's crash points: tasks awaiting
/// `get_async` still get every committed message (the one a producer
/// committed and died before announcing, too: the watcher's re-check finds
/// it), and later ones.
#[cfg(feature = "failpoints")]
#[test]
fn async_getters_survive_a_producer_killed_at_each_crash_point_of_put() {
    let _s = serial();
    for (point, committed) in [("queue.put.copied", false), ("queue.put.committed", true)] {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let q = std::sync::Arc::new(Queue::<u32>::new(4096).unwrap());
        let q2 = q.clone();
        let first = rt.spawn(async move { tokio::time::timeout(DEADLINE, q2.get_async()).await });
        // Let the task register and its watcher sleep.
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        let mut producer = fork(|| {
            common::die_at(point);
            let _ = q.put(&1);
            0
        });
        assert_eq!(producer.wait(), common::End::Signaled(nix::sys::signal::Signal::SIGKILL));
        if !committed {
            q.put(&2).unwrap();
        }
        let got = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), first).await.expect("a survivor did not go on").unwrap()
        });
        assert_eq!(got.expect("stranded").unwrap(), if committed { 1 } else { 2 }, "at {point}");
        // And the queue goes on for the next message.
        q.put(&7).unwrap();
        let next = rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), q.get_async()).await });
        assert_eq!(next.expect("stranded").unwrap(), 7);
    }
}

/// `Process` is `AsFd`: a pidfd that `poll` sees readable once the child ends.
#[test]
fn a_process_pidfd_becomes_readable_when_the_child_ends() {
    use std::os::fd::AsFd;
    let _s = serial();
    let p = shmsync::Process::new(|| std::thread::sleep(Duration::from_millis(50)));
    p.start().unwrap();
    let mut fds = [nix::poll::PollFd::new(p.as_fd(), nix::poll::PollFlags::POLLIN)];
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::try_from(DEADLINE).unwrap()).unwrap();
    assert_eq!(ready, 1);
    assert_eq!(p.join_timeout(Duration::ZERO).unwrap(), Some(0));
}

/// A setter killed between publishing and waking: `wait_any` and an async
/// wait both go on within the bound.
#[cfg(feature = "failpoints")]
#[test]
fn wait_any_and_wait_async_survive_a_setter_killed_before_its_wake() {
    let _s = serial();
    let (ev, other) = (Event::new().unwrap(), Event::new().unwrap());
    let waiter = fork(|| i32::from(wait_any(&[&other, &ev], Some(DEADLINE)).unwrap() != Some(1)));
    common::await_futex_sleep(&[waiter.pid()]);
    let mut setter = fork(|| {
        common::die_at("event.set.published");
        ev.set();
        0
    });
    assert_eq!(setter.wait(), common::End::Signaled(nix::sys::signal::Signal::SIGKILL));
    let mut waiter = waiter;
    assert_eq!(waiter.wait_for(Duration::from_secs(2)), common::End::Exited(0));
    // The same for a task awaiting the event.
    ev.clear();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ev2 = std::sync::Arc::new(ev);
    let task = {
        let ev = ev2.clone();
        rt.spawn(async move { ev.wait_async().await })
    };
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    let mut setter = fork(|| {
        common::die_at("event.set.published");
        ev2.set();
        0
    });
    assert_eq!(setter.wait(), common::End::Signaled(nix::sys::signal::Signal::SIGKILL));
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), task).await.expect("a survivor did not go on") })
        .unwrap();
}

/// Regression (found by review): an async get that found the consumers'
/// lock held watched the lock word with no re-check, so a holder gone
/// without the kernel marking it (here a live stranger's tid forged into
/// the word) stranded the future for good, where a blocking get recovers
/// after a slice. The auditor's re-check now recovers it too.
#[test]
fn get_async_recovers_a_consumers_lock_named_by_a_stranger() {
    let _s = serial();
    let q = Queue::<u32>::new(64).unwrap();
    q.put(&5).unwrap();
    let mut stranger = std::process::Command::new("sleep").arg("60").spawn().expect("spawn sleep");
    let get_lock = common::OBJECT_OFFSET + 192;
    let word = stranger.id() | 0x8000_0000; // FUTEX_WAITERS
    common::scribble(q.name(), get_lock, &word.to_ne_bytes());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let got = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), q.get_async()).await });
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert_eq!(got.expect("the future was stranded on a lock no one holds").unwrap(), 5);
}
