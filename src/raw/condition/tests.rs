//! Unit tests of `RawCondition`, in one process (the cross-process ones are
//! in `tests/condition.rs`).

use super::*;
use std::mem::MaybeUninit;
use std::time::Duration;

fn new() -> Box<RawCondition> {
    let mut slot = Box::new(MaybeUninit::<RawCondition>::uninit());
    // SAFETY: fresh, aligned, unshared storage.
    unsafe { RawCondition::init(slot.as_mut_ptr()) };
    // SAFETY: init ran.
    unsafe { Box::from_raw(Box::into_raw(slot).cast()) }
}

#[test]
#[cfg(target_pointer_width = "64")]
fn layout_is_as_documented() {
    assert_eq!(std::mem::size_of::<RawCondition>(), 1600);
    assert_eq!(std::mem::align_of::<RawCondition>(), 8);
}

#[test]
fn notify_reaches_a_thread_and_timeouts_report() {
    let cond = new();
    let flag = AtomicU32::new(0);
    assert!(!cond.lock().lock().is_poisoned());
    // SAFETY: this thread holds the lock.
    let (l, timed_out) = unsafe { cond.wait_timeout(Duration::from_millis(5)) };
    assert!(timed_out && !l.is_poisoned());
    assert_eq!(cond.waiters(), 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = cond.lock().lock();
            flag.store(1, Ordering::Relaxed);
            cond.notify_all();
            // SAFETY: this thread holds the lock.
            unsafe { cond.lock().unlock() };
        });
        while flag.load(Ordering::Relaxed) == 0 {
            // SAFETY: this thread holds the lock (taken above or relocked by wait).
            let (_, timed_out) = unsafe { cond.wait_timeout(Duration::from_secs(30)) };
            assert!(!timed_out);
        }
    });
    // SAFETY: this thread holds the lock.
    unsafe { cond.lock().unlock() };
    assert_eq!(cond.claimed.load(Ordering::Relaxed), 0);
}

#[test]
fn a_zero_timeout_returns_at_once_and_frees_its_slot() {
    let cond = new();
    let _ = cond.lock().lock();
    // SAFETY: this thread holds the lock.
    let (_, timed_out) = unsafe { cond.wait_timeout(Duration::ZERO) };
    assert!(timed_out);
    assert_eq!(cond.claimed.load(Ordering::Relaxed), 0);
    // SAFETY: this thread holds the lock.
    unsafe { cond.lock().unlock() };
}

#[test]
fn notify_one_wakes_the_oldest_and_only_it() {
    let cond = new();
    let order = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for k in 0..3u32 {
            let (cond, order) = (&cond, &order);
            let _ = cond.lock().lock();
            s.spawn(move || {
                // SAFETY: this thread takes and holds the lock around the wait.
                unsafe {
                    let _ = cond.lock().lock();
                    let (_, timed_out) = cond.wait_timeout(Duration::from_secs(30));
                    assert!(!timed_out);
                    order.lock().unwrap().push(k);
                    cond.lock().unlock();
                }
            });
            // SAFETY: this thread holds the lock; releasing it lets waiter k register.
            unsafe { cond.lock().unlock() };
            while cond.waiters() < k + 1 {
                std::thread::yield_now();
            }
        }
        for k in 0..3 {
            cond.notify_one();
            while order.lock().unwrap().len() < k + 1 {
                std::thread::yield_now();
            }
            assert_eq!(cond.waiters() as usize, 2 - k);
        }
    });
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
}
