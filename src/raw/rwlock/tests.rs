//! Unit tests of the raw lock, within one process.

use super::*;
use std::sync::atomic::{AtomicBool, AtomicU32};

#[test]
fn layout_is_as_documented() {
    assert_eq!(std::mem::size_of::<RawRwLock>(), 4160);
    assert_eq!(std::mem::align_of::<RawRwLock>(), 64);
    assert_eq!(std::mem::offset_of!(RawRwLock, slots), 64);
    assert_eq!(std::mem::size_of::<Slot>(), 64);
    assert!(RawRwLock::default().check().is_ok());
}

#[test]
fn reads_nest_and_shut_writers_out() {
    let lock = RawRwLock::default();
    assert_eq!(lock.read(), Locked::Clean);
    assert_eq!(lock.read(), Locked::Clean);
    assert_eq!(lock.readers(), 2);
    assert!(lock.try_write().is_none());
    assert!(lock.try_write_for(Duration::from_millis(5)).is_none());
    // SAFETY: this thread holds two reads.
    unsafe { lock.unlock_read() };
    assert!(lock.try_write().is_none());
    // SAFETY: this thread holds one read.
    unsafe { lock.unlock_read() };
    assert_eq!(lock.readers(), 0);
    assert_eq!(lock.try_write(), Some(Locked::Clean));
    assert!(lock.is_write_locked());
    assert!(lock.try_read().is_none());
    assert!(lock.try_upgradable_read().is_none());
    // SAFETY: this thread holds the write lock.
    unsafe { lock.unlock_write() };
    assert!(!lock.is_write_locked());
    assert_eq!(lock.exclusive_holder(), None);
}

#[test]
fn a_writer_waits_for_a_reader_thread() {
    let lock = RawRwLock::default();
    let inside = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _ = lock.read();
        s.spawn(|| {
            let _ = lock.write();
            inside.store(true, Ordering::Relaxed);
            // SAFETY: this thread holds the write lock.
            unsafe { lock.unlock_write() };
        });
        std::thread::sleep(Duration::from_millis(20));
        assert!(!inside.load(Ordering::Relaxed));
        // A nested read by a reader does not wait for the waiting writer.
        assert_eq!(lock.try_read(), Some(Locked::Clean));
        // SAFETY: this thread holds two reads.
        unsafe {
            lock.unlock_read();
            lock.unlock_read();
        }
    });
    assert!(inside.load(Ordering::Relaxed));
}

#[test]
fn upgrade_and_downgrades() {
    let lock = RawRwLock::default();
    assert_eq!(lock.upgradable_read(), Locked::Clean);
    assert!(lock.try_upgradable_read().is_none());
    std::thread::scope(|s| {
        s.spawn(|| {
            // Readers share the lock with an upgradable reader...
            assert!(lock.try_read().is_some());
            // SAFETY: this thread holds the read.
            unsafe { lock.unlock_read() };
            // ... writers do not.
            assert!(lock.try_write().is_none());
        });
    });
    // SAFETY: this thread holds the upgradable read.
    unsafe {
        assert_eq!(lock.upgrade(), Locked::Clean);
        assert!(lock.is_write_locked());
        lock.downgrade();
    }
    assert!(!lock.is_write_locked());
    assert_eq!(lock.readers(), 1);
    assert!(lock.try_write().is_none());
    // SAFETY: this thread holds the read from the downgrade.
    unsafe { lock.unlock_read() };
    let _ = lock.write();
    // SAFETY: this thread holds the write lock, then an upgradable read,
    // then a read.
    unsafe {
        lock.downgrade_to_upgradable();
        assert!(lock.try_read().is_some());
        lock.unlock_read();
        lock.downgrade_upgradable();
        lock.unlock_read();
    }
    assert_eq!(lock.exclusive_holder(), None);
    assert_eq!(lock.readers(), 0);
}

#[test]
fn calls_that_would_wait_for_their_own_thread_refuse() {
    let lock = RawRwLock::default();
    let _ = lock.write();
    assert!(lock.try_read().is_none());
    assert!(lock.try_read_for(Duration::from_secs(30)).is_none());
    assert!(lock.try_write_for(Duration::from_secs(30)).is_none());
    // SAFETY: this thread holds the write lock.
    unsafe { lock.unlock_write() };
    let _ = lock.read();
    assert!(lock.try_write_for(Duration::from_secs(30)).is_none());
    let _ = lock.upgradable_read();
    // SAFETY: this thread holds an upgradable read and a read.
    unsafe {
        assert!(!lock.try_upgrade_for(Duration::from_secs(30)));
        lock.unlock_read();
        assert!(lock.try_upgrade());
        lock.unlock_write();
    }
    assert!(std::panic::catch_unwind(|| lock.write()).is_ok());
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lock.read())).is_err());
    // SAFETY: this thread holds the write lock.
    unsafe { lock.unlock_write() };
}

#[test]
fn a_slot_for_every_reader_and_the_rest_take_turns() {
    let lock = RawRwLock::default();
    // Every slot held at once, by as many threads...
    let holding = std::sync::Barrier::new(READER_SLOTS + 1);
    let release = std::sync::Barrier::new(READER_SLOTS + 1);
    let extra = AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..READER_SLOTS {
            s.spawn(|| {
                assert!(lock.try_read_for(Duration::from_secs(30)).is_some());
                holding.wait();
                release.wait();
                // SAFETY: this thread holds the read taken above.
                unsafe { lock.unlock_read() };
            });
        }
        holding.wait();
        assert_eq!(lock.readers(), READER_SLOTS as u32);
        // ... and readers beyond them still get in, one at a time,
        // through the exclusive side, while writers stay out.
        for _ in 0..4 {
            s.spawn(|| {
                assert!(lock.try_read_for(Duration::from_secs(30)).is_some());
                assert!(lock.try_read().is_some()); // nested
                extra.fetch_add(1, Ordering::Relaxed);
                // SAFETY: this thread holds the two reads taken above.
                unsafe {
                    lock.unlock_read();
                    lock.unlock_read();
                }
            });
        }
        while extra.load(Ordering::Relaxed) < 4 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(lock.try_write().is_none());
        release.wait();
    });
    assert_eq!(lock.readers(), 0);
    assert_eq!(lock.exclusive_holder(), None);
    assert!(lock.try_write().is_some());
}

#[test]
fn a_reader_thread_that_exits_holding_is_reclaimed() {
    let lock = RawRwLock::default();
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = lock.read();
        });
    });
    assert_eq!(lock.readers(), 1);
    assert_eq!(lock.try_write_for(Duration::from_secs(30)), Some(Locked::Clean));
    // SAFETY: this thread holds the write lock.
    unsafe { lock.unlock_write() };
    assert_eq!(lock.readers(), 0);
}

#[test]
fn a_writer_thread_that_exits_holding_poisons() {
    let lock = RawRwLock::default();
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = lock.write();
        });
    });
    assert_eq!(lock.try_read_for(Duration::from_secs(30)), Some(Locked::Poisoned));
    // SAFETY: this thread holds the read.
    unsafe { lock.unlock_read() };
    lock.clear_poison();
    assert_eq!(lock.try_write(), Some(Locked::Clean));
    // SAFETY: this thread holds the write lock.
    unsafe { lock.unlock_write() };
}

#[test]
fn nesting_stops_at_the_slot_count() {
    let lock = RawRwLock::default();
    for _ in 0..COUNT {
        assert!(lock.try_read().is_some());
    }
    assert!(lock.try_read().is_none());
    assert!(std::panic::catch_unwind(|| lock.read()).is_err());
    for _ in 0..COUNT {
        // SAFETY: this thread holds COUNT reads.
        unsafe { lock.unlock_read() };
    }
    assert_eq!(lock.readers(), 0);
    assert!(lock.try_write().is_some());
}

#[test]
fn more_live_threads_than_slots_taking_slots_over_keep_exclusion() {
    struct Guarded(std::cell::UnsafeCell<[u64; 2]>);
    // SAFETY: the pair is only touched under the lock below.
    unsafe impl Sync for Guarded {}
    let lock = RawRwLock::default();
    let data = Guarded(std::cell::UnsafeCell::new([0, 0]));
    let threads = READER_SLOTS + 16;
    let writes = AtomicU32::new(0);
    let start = std::sync::Barrier::new(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (lock, data, writes, start) = (&lock, &data, &writes, &start);
            s.spawn(move || {
                start.wait();
                for k in 0..1000 {
                    if (t + k) % 10 == 0 {
                        assert!(lock.try_write_for(Duration::from_secs(30)).is_some());
                        // SAFETY: the write lock is held.
                        unsafe {
                            let d = &mut *data.0.get();
                            d[0] += 1;
                            std::hint::spin_loop();
                            d[1] += 1;
                            lock.unlock_write();
                        }
                        writes.fetch_add(1, Ordering::Relaxed);
                    } else {
                        assert!(lock.try_read_for(Duration::from_secs(30)).is_some());
                        // SAFETY: a read lock is held: no writer changes the pair.
                        unsafe {
                            let d = *data.0.get();
                            std::thread::yield_now(); // more readers at once than slots
                            assert_eq!(d, *data.0.get(), "the pair changed under a read lock");
                            assert_eq!(d[0], d[1], "a reader saw a half-done write");
                            lock.unlock_read();
                        }
                    }
                }
            });
        }
    });
    let w = u64::from(writes.load(Ordering::Relaxed));
    // SAFETY: every thread has finished.
    assert_eq!(unsafe { *data.0.get() }, [w, w]);
    assert_eq!(lock.readers(), 0);
    assert_eq!(lock.exclusive_holder(), None);
}
