//! RwLock across real processes: exclusion, overlapping readers, fairness
//! both ways, the death of a reader, a writer, an upgradable and an
//! upgraded reader, and corrupt segments.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::TryLockError;
use std::time::{Duration, Instant};

use common::{await_true, await_value, dead_tid, fork, scribble, serial, Child, End, Names, Shared, DEADLINE};
use shmsync::{Error, RwLock, RwLockUpgradableReadGuard, RwLockWriteGuard};

/// The bound a survivor is given after a death: the documented
/// `raw::RECHECK` (1 s), plus room for a loaded machine.
const RECOVERY: Duration = Duration::from_secs(2);

/// Generous deadlines for the fairness tests: far above what a fair lock
/// needs (microseconds to milliseconds), far below forever.
const FAIR: Duration = Duration::from_secs(1);

/// Where the raw lock's fields sit in the segment file.
const OBJECT: u64 = common::OBJECT_OFFSET;
const STATE: u64 = OBJECT;
const POISONED: u64 = OBJECT + 8;
const CLAIMED: u64 = OBJECT + 24;
fn slot_word(i: u64) -> u64 {
    OBJECT + 64 + 64 * i
}

/// A slot word: `tid` owning it with `reads` read locks (tag 0).
fn slot(tid: u32, reads: u16) -> [u8; 8] {
    ((u64::from(tid) << 32) | u64::from(reads)).to_le_bytes()
}

/// A table whose writers set every element to the same new value, one
/// element at a time, so a reader that overlapped a writer would see two
/// values.
type Table = [u64; 8];

fn write_all(t: &mut Table, v: u64) {
    for (k, x) in t.iter_mut().enumerate() {
        // SAFETY: `x` is a valid, exclusive reference; volatile keeps the
        // element-by-element update from being merged into one store.
        unsafe { std::ptr::write_volatile(x, v) };
        if k == 3 && v % 64 == 0 {
            std::thread::yield_now(); // widen the window, now and then
        }
    }
}

fn is_whole(t: &Table) -> Option<u64> {
    // SAFETY: reads of valid references; volatile so each element is loaded.
    let first = unsafe { std::ptr::read_volatile(&t[0]) };
    // SAFETY: as above.
    t.iter().all(|x| unsafe { std::ptr::read_volatile(x) } == first).then_some(first)
}

#[test]
fn four_readers_and_two_writers_times_10000_see_no_half_done_update() {
    let _s = serial();
    let names = Names::new("stress");
    let lock = RwLock::<Table>::builder(&names.get("t")).unlink_on_drop(true).create().unwrap();
    let name = lock.name().to_string();
    const ITERS: u64 = 10_000;
    let writers: Vec<Child> = (0..2)
        .map(|_| {
            fork(|| {
                for _ in 0..ITERS {
                    let mut g = lock.try_write_for(DEADLINE).unwrap();
                    let Some(v) = is_whole(&g) else { return 1 };
                    write_all(&mut g, v + 1);
                }
                0
            })
        })
        .collect();
    let readers: Vec<Child> = (0..4)
        .map(|i| {
            let name = name.clone();
            let inherited = &lock;
            fork(move || {
                // Two readers use the inherited handle, two open by name.
                let opened;
                let lock = if i % 2 == 0 {
                    inherited
                } else {
                    opened = RwLock::<Table>::open(&name).unwrap();
                    &opened
                };
                let mut last = 0;
                for _ in 0..ITERS {
                    let g = lock.try_read_for(DEADLINE).unwrap();
                    let Some(v) = is_whole(&g) else { return 1 };
                    if v < last {
                        return 2;
                    }
                    last = v;
                }
                0
            })
        })
        .collect();
    for child in writers.into_iter().chain(readers) {
        child.expect_success();
    }
    assert_eq!(*lock.read().unwrap(), [2 * ITERS; 8]);
    assert!(!lock.is_poisoned());
    assert_eq!(lock.readers(), 0);
}

#[test]
fn readers_in_four_processes_hold_it_at_the_same_time() {
    let _s = serial();
    let lock = RwLock::<u64>::new(7).unwrap();
    let holding = Shared::<AtomicU32>::new();
    let release = Shared::<AtomicU32>::new();
    const N: u32 = 4;
    let children: Vec<Child> = (0..N)
        .map(|_| {
            fork(|| {
                let g = lock.try_read_for(DEADLINE).unwrap();
                holding.fetch_add(1, Ordering::Release);
                // Each holds its read until every one of them holds one:
                // that can only end if the reads overlap.
                await_value(&holding, N, "all readers to hold the lock");
                await_value(&release, 1, "the parent's release");
                i32::from(*g != 7)
            })
        })
        .collect();
    await_value(&holding, N, "all readers to hold the lock");
    assert_eq!(lock.readers(), N);
    assert!(matches!(lock.try_write(), Err(TryLockError::WouldBlock)));
    release.store(1, Ordering::Release);
    for child in children {
        child.expect_success();
    }
    assert_eq!(lock.readers(), 0);
    assert!(lock.try_write().is_ok());
}

#[test]
fn try_write_fails_while_another_process_reads() {
    let _s = serial();
    let lock = RwLock::<u64>::new(1).unwrap();
    let holding = Shared::<AtomicU32>::new();
    let release = Shared::<AtomicU32>::new();
    let reader = fork(|| {
        let _g = lock.try_read_for(DEADLINE).unwrap();
        holding.store(1, Ordering::Release);
        await_value(&release, 1, "the parent's release");
        0
    });
    await_value(&holding, 1, "the reader to hold the lock");
    assert!(matches!(lock.try_write(), Err(TryLockError::WouldBlock)));
    assert!(matches!(lock.try_write_for(Duration::from_millis(50)), Err(TryLockError::WouldBlock)));
    // An upgradable read shares the lock with readers, but cannot upgrade.
    let up = lock.try_upgradable_read().unwrap();
    let up = match RwLockUpgradableReadGuard::try_upgrade_for(up, Duration::from_millis(50)) {
        Ok(_) => panic!("upgraded while another process reads"),
        Err(up) => up,
    };
    assert_eq!(*up, 1);
    // Readers are let in while an upgrade waits, then it completes once
    // they leave.
    release.store(1, Ordering::Release);
    let mut w = RwLockUpgradableReadGuard::upgrade(up);
    *w = 2;
    drop(w);
    reader.expect_success();
    assert_eq!(*lock.read().unwrap(), 2);
}

#[test]
fn an_upgradable_reader_shuts_out_writers_in_other_processes() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let up = lock.upgradable_read().unwrap();
    fork(|| {
        let refused = lock.try_write_for(Duration::from_millis(50)).is_err()
            && lock.try_upgradable_read().is_err()
            && lock.try_read().is_ok();
        i32::from(!refused)
    })
    .expect_success();
    let w = RwLockUpgradableReadGuard::upgrade(up);
    let r = RwLockWriteGuard::downgrade(w);
    fork(|| i32::from(lock.try_read().is_err() || lock.try_write().is_ok())).expect_success();
    drop(r);
    fork(|| i32::from(lock.try_write().is_err())).expect_success();
}

/// Readers in `readers` processes loop until told to stop; returns them and
/// the stop flag's owner, after they have all started reading.
fn looping_readers(
    lock: &RwLock<Table>,
    stop: &Shared<AtomicU32>,
    started: &Shared<AtomicU32>,
    readers: u32,
) -> Vec<Child> {
    let children = (0..readers)
        .map(|_| {
            fork(|| {
                let mut n = 0u64;
                while stop.load(Ordering::Acquire) == 0 {
                    let Ok(g) = lock.try_read_for(DEADLINE) else { return 1 };
                    if is_whole(&g).is_none() {
                        return 2;
                    }
                    n += 1;
                    if n == 1 {
                        started.fetch_add(1, Ordering::Release);
                    }
                }
                0
            })
        })
        .collect();
    await_value(started, readers, "the readers to start");
    children
}

#[test]
fn a_writer_gets_in_against_four_processes_reading_in_a_loop() {
    let _s = serial();
    let lock = RwLock::<Table>::new([0; 8]).unwrap();
    let stop = Shared::<AtomicU32>::new();
    let started = Shared::<AtomicU32>::new();
    let readers = looping_readers(&lock, &stop, &started, 4);
    // A writer-preferring lock lets every one of these in within
    // microseconds to milliseconds; a lock that starved writers would not
    // let one in at all while the readers overlap.
    let mut slowest = Duration::ZERO;
    for v in 1..=20 {
        let asked = Instant::now();
        let mut g = lock.try_write_for(FAIR).unwrap_or_else(|_| panic!("write {v} starved by readers"));
        slowest = slowest.max(asked.elapsed());
        write_all(&mut g, v);
    }
    eprintln!("the slowest of 20 writes among 4 looping readers got in after {slowest:?}");
    stop.store(1, Ordering::Release);
    for child in readers {
        child.expect_success();
    }
    assert_eq!(*lock.read().unwrap(), [20; 8]);
}

#[test]
fn readers_get_in_against_two_processes_writing_in_a_loop() {
    let _s = serial();
    let lock = RwLock::<Table>::new([0; 8]).unwrap();
    let stop = Shared::<AtomicU32>::new();
    let started = Shared::<AtomicU32>::new();
    let writers: Vec<Child> = (0..2)
        .map(|_| {
            fork(|| {
                let mut n = 0;
                while stop.load(Ordering::Acquire) == 0 {
                    let Ok(mut g) = lock.try_write_for(DEADLINE) else { return 1 };
                    let Some(v) = is_whole(&g) else { return 2 };
                    write_all(&mut g, v + 1);
                    n += 1;
                    if n == 1 {
                        started.fetch_add(1, Ordering::Release);
                    }
                }
                0
            })
        })
        .collect();
    await_value(&started, 2, "the writers to start");
    let readers: Vec<Child> = (0..2)
        .map(|_| {
            fork(|| {
                for _ in 0..200 {
                    let Ok(g) = lock.try_read_for(FAIR) else { return 1 };
                    if is_whole(&g).is_none() {
                        return 2;
                    }
                }
                0
            })
        })
        .collect();
    let outcomes: Vec<End> = readers.into_iter().map(|mut c| c.wait()).collect();
    stop.store(1, Ordering::Release);
    for child in writers {
        child.expect_success();
    }
    assert_eq!(
        outcomes,
        [End::Exited(0), End::Exited(0)],
        "a reader was starved by the writers (1) or saw a torn table (2)"
    );
}

#[test]
fn a_writer_killed_mid_update_poisons_it_for_readers_and_writers() {
    let _s = serial();
    let names = Names::new("writer_killed");
    let name = names.get("t");
    let lock = RwLock::<Table>::builder(&name).unlink_on_drop(true).create().unwrap();
    let written = Shared::<AtomicU32>::new();
    for round in 1..=3u32 {
        let mut writer = fork(|| {
            let lock = RwLock::<Table>::open(&name).unwrap();
            let mut g = lock.write().unwrap_or_else(|p| p.into_inner());
            g[0] = 100 + u64::from(round); // half an update
            written.store(round, Ordering::Release);
            std::thread::sleep(DEADLINE);
            0
        });
        await_value(&written, round, "the writer's half update");
        // Readers that wait behind the writer when it dies.
        let waiting: Vec<Child> = (0..2)
            .map(|_| {
                fork(|| match lock.try_read_for(RECOVERY) {
                    Err(TryLockError::Poisoned(p)) => i32::from(p.into_inner()[0] != 100 + u64::from(round)),
                    _ => 1,
                })
            })
            .collect();
        await_true(|| lock.is_write_locked(), "the writer to hold");
        writer.kill();
        let killed = Instant::now();
        for mut child in waiting {
            assert_eq!(
                child.wait_for(DEADLINE),
                End::Exited(0),
                "round {round}: a waiting reader did not get it poisoned"
            );
        }
        eprintln!("round {round}: the readers behind a dead writer got in {:?} after the kill", killed.elapsed());
        // A writer sees the poison too, and repairs the table.
        match lock.try_write_for(RECOVERY) {
            Err(TryLockError::Poisoned(p)) => write_all(&mut p.into_inner(), 0),
            Err(TryLockError::WouldBlock) => panic!("round {round}: the dead writer's lock was not recovered"),
            Ok(_) => panic!("round {round}: the writer's death did not poison the lock"),
        }
        fork(|| i32::from(!RwLock::<Table>::open(&name).unwrap().is_poisoned())).expect_success();
        lock.clear_poison();
        assert_eq!(*lock.try_read_for(DEADLINE).unwrap(), [0; 8]);
    }
}

#[test]
fn a_reader_killed_holding_is_forgotten_without_poison() {
    let _s = serial();
    let lock = RwLock::<u64>::new(5).unwrap();
    let holding = Shared::<AtomicU32>::new();
    for round in 1..=3u32 {
        let mut reader = fork(|| {
            let _g = lock.read().unwrap();
            let _nested = lock.read().unwrap();
            holding.store(round, Ordering::Release);
            std::thread::sleep(DEADLINE);
            0
        });
        await_value(&holding, round, "the reader to hold");
        assert_eq!(lock.readers(), 2);
        reader.kill();
        let killed = Instant::now();
        // A writer in another process waits, then gets in when the dead
        // reader's share is reclaimed; nothing is poisoned.
        fork(|| match lock.try_write_for(RECOVERY) {
            Ok(mut g) => {
                *g += 1;
                0
            }
            Err(_) => 1,
        })
        .expect_success();
        eprintln!("round {round}: a dead reader's share reclaimed {:?} after the kill", killed.elapsed());
        assert_eq!(lock.readers(), 0);
        assert!(!lock.is_poisoned());
    }
    assert_eq!(*lock.read().unwrap(), 8);
}

#[test]
fn an_upgradable_reader_killed_before_upgrading_counts_as_a_reader() {
    let _s = serial();
    let lock = RwLock::<u64>::new(5).unwrap();
    let holding = Shared::<AtomicU32>::new();
    let mut holder = fork(|| {
        let _g = lock.upgradable_read().unwrap();
        holding.store(1, Ordering::Release);
        std::thread::sleep(DEADLINE);
        0
    });
    await_value(&holding, 1, "the upgradable reader to hold");
    assert!(lock.try_read().is_ok());
    assert!(lock.try_write().is_err());
    let waiter = fork(|| i32::from(lock.try_write_for(RECOVERY).map(|mut g| *g += 1).is_err()));
    holder.kill();
    waiter.expect_success();
    assert!(!lock.is_poisoned());
    let up = lock.try_upgradable_read_for(RECOVERY).unwrap();
    assert_eq!(*up, 6);
}

#[test]
fn an_upgraded_reader_killed_holding_poisons_like_a_writer() {
    let _s = serial();
    let lock = RwLock::<u64>::new(5).unwrap();
    let holding = Shared::<AtomicU32>::new();
    let mut holder = fork(|| {
        let up = lock.upgradable_read().unwrap();
        let mut w = RwLockUpgradableReadGuard::upgrade(up);
        *w = 99;
        holding.store(1, Ordering::Release);
        std::thread::sleep(DEADLINE);
        0
    });
    await_value(&holding, 1, "the upgraded reader to hold");
    let waiter = fork(|| match lock.try_read_for(RECOVERY) {
        Err(TryLockError::Poisoned(p)) => i32::from(**p.get_ref() != 99),
        _ => 1,
    });
    holder.kill();
    waiter.expect_success();
    assert!(lock.is_poisoned());
    lock.clear_poison();
    assert!(lock.try_write_for(DEADLINE).is_ok());
}

#[test]
fn a_forked_child_reads_as_itself_not_as_its_parent() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let parent_read = lock.read().unwrap(); // the parent's thread identity is cached now
    let holding = Shared::<AtomicU32>::new();
    let mut child = fork(|| {
        let _g = lock.read().unwrap();
        holding.store(1, Ordering::Release);
        std::thread::sleep(DEADLINE);
        0
    });
    await_value(&holding, 1, "the child to read");
    assert_eq!(lock.readers(), 2);
    child.kill();
    drop(parent_read);
    // Had the child counted its read in the parent's slot, under the
    // parent's identity, it would never be reclaimed.
    assert!(lock.try_write_for(RECOVERY).is_ok());
}

#[test]
fn no_syscall_without_waiters() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let wakes = common::futex_wakes_in_child(|| {
        for _ in 0..1000 {
            drop(lock.read().unwrap());
            drop(lock.try_read().unwrap());
            *lock.write().unwrap() += 1;
            drop(lock.try_write().unwrap());
            drop(RwLockUpgradableReadGuard::upgrade(lock.upgradable_read().unwrap()));
        }
    });
    assert_eq!(wakes, 0);
    assert_eq!(*lock.read().unwrap(), 1000);
}

#[test]
fn opening_as_another_type_or_kind_is_refused() {
    let _s = serial();
    let lock = RwLock::<[u64; 4]>::new([1, 2, 3, 4]).unwrap();
    assert!(matches!(RwLock::<[i64; 4]>::open(lock.name()), Err(Error::IncompatibleLayout { .. })));
    assert!(matches!(RwLock::<()>::open(lock.name()), Err(Error::IncompatibleLayout { .. })));
    assert!(matches!(shmsync::Mutex::<[u64; 4]>::open(lock.name()), Err(Error::WrongKind { .. })));
    assert!(matches!(shmsync::Lock::open(lock.name()), Err(Error::WrongKind { .. })));
    assert_eq!(*RwLock::<[u64; 4]>::open(lock.name()).unwrap().read().unwrap(), [1, 2, 3, 4]);
    let unit: RwLock = RwLock::new(()).unwrap();
    assert!(unit.write().is_ok());
}

fn corrupt_at_open(test: &str, offset: u64, bytes: &[u8]) {
    let names = Names::new(test);
    let name = names.get("t");
    let lock = RwLock::<u64>::create(&name, 0).unwrap();
    drop(lock);
    scribble(&name, offset, bytes);
    let opened = RwLock::<u64>::open(&name);
    shmsync::unlink(&name).unwrap();
    match opened {
        Err(Error::Corrupt { detail, .. }) => eprintln!("{test}: Corrupt: {detail}"),
        other => panic!("{test}: {other:?}, expected Corrupt"),
    }
}

#[test]
fn a_corrupt_reader_table_or_state_is_corrupt_at_open() {
    let _s = serial();
    // A free slot that holds reads.
    corrupt_at_open("free_with_reads", slot_word(3), &slot(0, 5));
    // An owned slot that writers would not scan (not in the claimed mask).
    corrupt_at_open("owned_unclaimed", slot_word(9), &slot(1234, 1));
    // A slot naming a thread id no Linux thread can have.
    corrupt_at_open("beyond_tid", slot_word(0), &slot(1 << 23, 1));
    // A writer bit with no holder.
    corrupt_at_open("writer_without_holder", STATE, &(1u32 << 22).to_le_bytes());
    // A poison flag that is neither 0 nor 1.
    corrupt_at_open("poison_flag", POISONED, &7u32.to_le_bytes());
}

#[test]
fn a_reader_table_corrupted_in_use_neither_hangs_nor_breaks_the_lock() {
    let _s = serial();
    let names = Names::new("in_use");
    let name = names.get("t");
    let lock = RwLock::<u64>::builder(&name).unlink_on_drop(true).create().unwrap();
    let dead = dead_tid();
    // A dead thread's reads, and reads in a slot that names no one: both
    // reclaimed by the next writer, nothing poisoned.
    scribble(&name, slot_word(5), &slot(dead, 3));
    scribble(&name, slot_word(6), &slot(0, 2));
    scribble(&name, CLAIMED, &((1u64 << 5) | (1 << 6)).to_le_bytes());
    assert_eq!(lock.readers(), 5);
    let started = Instant::now();
    assert!(lock.try_write_for(RECOVERY).is_ok(), "a forged reader blocked the writer");
    eprintln!("forged readers reclaimed in {:?}", started.elapsed());
    assert!(!lock.is_poisoned());
    assert_eq!(lock.readers(), 0);
    // A dead writer forged into the state word: recovered, poisoned.
    scribble(&name, STATE, &(dead | 1 << 22).to_le_bytes());
    assert!(lock.is_write_locked());
    match lock.try_read_for(RECOVERY) {
        Err(TryLockError::Poisoned(_)) => {}
        Err(TryLockError::WouldBlock) => panic!("a forged dead writer blocked the reader"),
        Ok(_) => panic!("a forged dead writer's lock came back unpoisoned"),
    }
    lock.clear_poison();
    // A writer bit with no holder: the next writer takes it, poisoned.
    scribble(&name, STATE, &(1u32 << 22).to_le_bytes());
    assert!(matches!(lock.try_write_for(RECOVERY), Err(TryLockError::Poisoned(_))));
    lock.clear_poison();
    assert!(lock.try_write().is_ok() && lock.try_read().is_ok());
}

#[test]
fn a_reader_that_waited_goes_in_before_the_writers_next_write() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let phase = Shared::<AtomicU32>::new();
    let seen = Shared::<AtomicU32>::new();
    let first = lock.write().unwrap();
    phase.store(1, Ordering::Release);
    let reader = fork(|| {
        let _g = lock.try_read_for(DEADLINE).unwrap();
        seen.store(phase.load(Ordering::Acquire), Ordering::Release);
        0
    });
    // The reader waits behind the first write, then is stopped, so only the
    // lock's fairness can let it in before the writer's next write: left to
    // the scheduler, the writer would win while the reader cannot run.
    common::await_futex_sleep(&[reader.pid()]);
    let pid = Pid::from_raw(reader.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    await_true(|| common::is_stopped(reader.pid()), "the reader to stop");
    let resumer = fork(move || {
        std::thread::sleep(Duration::from_millis(200));
        i32::from(kill(pid, Signal::SIGCONT).is_err())
    });
    drop(first);
    let second = lock.try_write_for(DEADLINE).unwrap();
    phase.store(2, Ordering::Release);
    drop(second);
    resumer.expect_success();
    reader.expect_success();
    assert_eq!(seen.load(Ordering::Acquire), 1, "the writer went again before the reader that waited");
}

#[test]
fn a_waiting_writer_shuts_out_new_readers() {
    let _s = serial();
    let lock = RwLock::<u64>::new(0).unwrap();
    let first = lock.read().unwrap();
    let writer = fork(|| i32::from(lock.try_write_for(DEADLINE).map(|mut g| *g = 1).is_err()));
    await_true(|| lock.is_write_locked(), "the writer to announce itself");
    // New readers in other processes wait behind the writer, however many
    // come, so a stream of readers cannot starve it.
    fork(|| i32::from(lock.try_read().is_ok() || lock.try_read_for(Duration::from_millis(20)).is_ok()))
        .expect_success();
    drop(first);
    writer.expect_success();
    assert_eq!(*lock.read().unwrap(), 1);
}

/// The slot a thread (`tid`) owns in the lock's segment file, found by
/// reading the file: (index, word).
fn own_slot(name: &str, tid: u32) -> (u64, u64) {
    let bytes = std::fs::read(format!("/dev/shm/{name}")).unwrap();
    (0..64)
        .map(|i| {
            let at = slot_word(i) as usize;
            (i, u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()))
        })
        .find(|&(_, w)| (w >> 32) as u32 == tid)
        .expect("the thread's slot")
}

/// Regression (found by review): WRITING with no holder (garbage) left
/// every reader asleep for good (only a blocking writer repaired it), and
/// `try_write` failed for ever. Readers alone now recover it, poisoned, and
/// so does `try_write`.
#[test]
fn regression_a_writer_bit_without_holder_blocks_neither_readers_nor_try_write() {
    let _s = serial();
    let names = Names::new("stray_writing");
    let name = names.get("t");
    let lock = RwLock::<u64>::builder(&name).unlink_on_drop(true).create().unwrap();
    let stray = (1u32 << 22).to_le_bytes();
    let opened = Shared::<AtomicU32>::new();
    let mut reader = fork(|| {
        // Opened before the garbage: `open` itself refuses such a state.
        let lock = RwLock::<u64>::open(&name).unwrap();
        opened.store(1, Ordering::Release);
        await_value(&opened, 2, "the garbage");
        let poisoned = lock.read().is_err();
        i32::from(!poisoned)
    });
    await_value(&opened, 1, "the reader");
    scribble(&name, STATE, &stray);
    opened.store(2, Ordering::Release);
    assert_eq!(reader.wait_for(RECOVERY + RECOVERY), End::Exited(0), "a blocked reader went on, poisoned");
    lock.clear_poison();
    scribble(&name, STATE, &stray);
    assert!(matches!(lock.try_read_for(RECOVERY), Err(TryLockError::Poisoned(_))));
    lock.clear_poison();
    scribble(&name, STATE, &stray);
    assert!(matches!(lock.try_write(), Err(TryLockError::Poisoned(_))), "try_write repairs it");
    lock.clear_poison();
    assert!(lock.try_write().is_ok() && lock.try_read().is_ok());
}

/// Regression (found by review): a queue mark on an idle reader's slot
/// (garbage) made a fair writer wait for a reader that would never come:
/// for ever on its own slot, and for as long as the idle reader lived on
/// another's. The writer skips its own slot and, after a slice, stops
/// waiting for marks that stand.
#[test]
fn regression_a_stale_queue_mark_does_not_hold_a_writer() {
    const WAITING: u64 = 1 << 16;
    const QUEUE: u64 = OBJECT + 32;
    let _s = serial();
    let names = Names::new("stale_mark");
    let name = names.get("t");
    let lock = RwLock::<u64>::builder(&name).unlink_on_drop(true).create().unwrap();
    // This thread's own idle slot, marked.
    drop(lock.read());
    let (i, w) = own_slot(&name, nix::unistd::gettid().as_raw() as u32);
    scribble(&name, slot_word(i), &(w | WAITING).to_le_bytes());
    scribble(&name, QUEUE, &(1u64 << i).to_le_bytes());
    assert!(lock.try_write_for(RECOVERY).is_ok(), "the writer waited for its own slot");
    // A live process's idle slot, marked.
    let ready = Shared::<AtomicU32>::new();
    let mut idle = fork(|| {
        let lock = RwLock::<u64>::open(&name).unwrap();
        drop(lock.read());
        ready.store(nix::unistd::gettid().as_raw() as u32, Ordering::Release);
        std::thread::sleep(DEADLINE);
        0
    });
    await_true(|| ready.load(Ordering::Acquire) != 0, "the idle reader");
    let (j, w) = own_slot(&name, ready.load(Ordering::Acquire));
    scribble(&name, slot_word(j), &(w | WAITING).to_le_bytes());
    scribble(&name, QUEUE, &(1u64 << j).to_le_bytes());
    let got = lock.try_write_for(RECOVERY + RECOVERY).is_ok();
    idle.kill();
    assert!(got, "the writer waited for an idle live reader's stale mark");
}
