//! What one lock+unlock pair costs with `shmsync::Lock`, side by side with the
//! bare glibc mutex it is built on, raw_sync's mutex, and an atomic floor.
//!
//! Run: `cargo bench --bench lock` (under a minute). One group only:
//! `cargo bench --bench lock -- contended_2proc`.
//!
//! Groups:
//! - `uncontended_lock_unlock`: one thread locks and unlocks a free lock.
//!   - `shmsync_Lock`: `Lock::new()` (named segment), `drop(lock.lock())`.
//!   - `pthread_robust_direct`: a glibc mutex with the attributes shmsync
//!     uses (`PROCESS_SHARED` + `ROBUST` + `ERRORCHECK`) in an anonymous
//!     `MAP_SHARED` mapping, called directly.
//!   - `pthread_plain_pshared`: the same, not robust, `NORMAL`.
//!   - `raw_sync_Mutex`: raw_sync 0.1's `Mutex` (a plain process-shared
//!     pthread mutex behind a boxed trait object) over the same kind of mapping.
//!   - `atomic_swap_floor`: an `AtomicU32` swap-to-1 / store-0 spinlock.
//! - `contended_2proc`: two forked processes each take the lock `iters`
//!   times and bump a plain `u64` inside it; the count must come out exactly
//!   `2 * iters`. Fork and reaping setup is outside the timed span, which runs
//!   from the start flag to both children reaped.
//!
//! Reading the numbers:
//! - `shmsync_Lock / pthread_robust_direct` is what the wrapper adds (poison
//!   flag, guard, return-code checks); near 1.0 is the goal.
//! - `pthread_robust_direct / pthread_plain_pshared` is the price of
//!   robustness: glibc takes its slow "full" path for every robust mutex.
//! - `... / atomic_swap_floor`: how far above a bare atomic read-modify-write
//!   pair each lock sits.
//! - `contended_2proc`: the reported time is per iteration = one lock+unlock
//!   from *each* process, so one operation costs half of it; the `thrpt`
//!   line is operations per second. Compare each with `raw_sync_Mutex`.
//!   Needs at least 2 CPUs to mean anything.

#![warn(clippy::undocumented_unsafe_blocks)]

mod common;

use std::cell::UnsafeCell;
use std::hint::{black_box, spin_loop};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{check_rc, exited_cleanly, init_pthread, reap_all, spawn, spin_until, Line, Mapping, ZeroValid, DEADLINE};
use criterion::{criterion_group, criterion_main, Bencher, Criterion, SamplingMode, Throughput};
use raw_sync::locks::{LockImpl, LockInit, Mutex as RawSyncMutex};

/// Everything the processes of one benchmark share, in one anonymous
/// `MAP_SHARED` mapping. All-zero bytes are a valid value of every field (the
/// mutexes are initialised before use), so the fresh mapping is one.
#[repr(C)]
struct Shared {
    /// 0 while the children wait; the parent stores 1 to start them.
    start: Line<AtomicU32>,
    /// How many children are spinning on `start`.
    ready: Line<AtomicU32>,
    /// Bumped by the children under the lock being measured, never otherwise.
    counter: Line<UnsafeCell<u64>>,
    /// The pthread mutex of the `pthread_*` functions.
    mutex: Line<UnsafeCell<libc::pthread_mutex_t>>,
    /// Storage for raw_sync's mutex, which it initialises itself.
    raw_sync: Line<UnsafeCell<MaybeUninit<libc::pthread_mutex_t>>>,
    /// The word of the atomic spinlock.
    spin: Line<AtomicU32>,
}

impl Shared {
    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.mutex.0.get()
    }

    /// Adds one to the counter.
    ///
    /// # Safety
    /// The caller holds the lock under test, which every bump takes, so no
    /// other thread in any process touches the counter meanwhile.
    unsafe fn bump(&self) {
        // SAFETY: the pointer comes from a live UnsafeCell; the caller's lock
        // makes this the only access.
        unsafe { *self.counter.0.get() += 1 }
    }

    fn count(&self) -> u64 {
        // SAFETY: called only in the parent with no child alive, so nothing
        // writes the counter concurrently.
        unsafe { *self.counter.0.get() }
    }

    fn reset(&self) {
        // SAFETY: as in `count`.
        unsafe { *self.counter.0.get() = 0 }
        self.ready.0.store(0, Ordering::Relaxed);
        self.start.0.store(0, Ordering::Relaxed);
    }
}

// SAFETY: every field is an atomic, an integer, or a pthread mutex (or room
// for one) that is initialised before use, as `Shared`'s docs say; all-zero
// bytes are valid for each.
unsafe impl ZeroValid for Shared {}

/// Locks and unlocks `mutex` once, calling `inside` while holding it.
///
/// # Safety
/// `mutex` must be initialised, mapped, and not held by the calling thread.
#[inline]
unsafe fn pthread_pair(mutex: *mut libc::pthread_mutex_t, inside: impl FnOnce()) {
    // SAFETY: forwarded from the caller.
    check_rc("pthread_mutex_lock", unsafe { libc::pthread_mutex_lock(mutex) });
    inside();
    // SAFETY: this thread took the mutex just above.
    check_rc("pthread_mutex_unlock", unsafe { libc::pthread_mutex_unlock(mutex) });
}

/// Makes raw_sync's mutex in `shared`'s storage, guarding its counter.
fn raw_sync_mutex(shared: &Shared) -> Box<dyn LockImpl> {
    // SAFETY: the storage is an aligned, unused `pthread_mutex_t`-sized slot
    // in a mapping that outlives the returned box (callers drop it first).
    let (mutex, _) = unsafe { RawSyncMutex::new(shared.raw_sync.0.get().cast(), shared.counter.0.get().cast()) }
        .expect("raw_sync Mutex::new");
    mutex
}

fn spin_lock(word: &AtomicU32) {
    // Acquire pairs with the Release store in `spin_unlock`.
    while word.swap(1, Ordering::Acquire) != 0 {
        spin_loop();
    }
}

fn spin_unlock(word: &AtomicU32) {
    word.store(0, Ordering::Release);
}

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended_lock_unlock");

    group.bench_function("shmsync_Lock", |b| {
        let lock = shmsync::Lock::new().expect("Lock::new");
        b.iter(|| drop(black_box(&lock).lock()));
    });

    for (name, robust) in [("pthread_robust_direct", true), ("pthread_plain_pshared", false)] {
        group.bench_function(name, |b| {
            let map = Mapping::<Shared>::new();
            let mutex = map.shared().mutex();
            // SAFETY: the slot is aligned, mapped and not yet used.
            unsafe { init_pthread(mutex, robust) };
            // SAFETY: initialised above, mapped while `map` lives, and each
            // iteration unlocks before the next locks.
            b.iter(|| unsafe { pthread_pair(black_box(mutex), || {}) });
        });
    }

    group.bench_function("raw_sync_Mutex", |b| {
        let map = Mapping::<Shared>::new();
        let mutex = raw_sync_mutex(map.shared());
        b.iter(|| drop(black_box(&mutex).lock().expect("raw_sync lock")));
    });

    group.bench_function("atomic_swap_floor", |b| {
        let map = Mapping::<Shared>::new();
        let word = &map.shared().spin.0;
        b.iter(|| {
            let word = black_box(word);
            spin_lock(word);
            spin_unlock(word);
        });
    });

    group.finish();
}

/// One `iter_custom` sample: two children each run `op` (lock, bump the
/// counter, unlock) `iters` times. Returns the wall time from the start flag
/// to both children reaped; that is the time of `iters` iterations, each one
/// operation from each process.
fn contended_sample(shared: &Shared, iters: u64, op: &dyn Fn()) -> Duration {
    shared.reset();
    // In each child: wait for the start flag, then run `op` `iters` times.
    // Exit code 2: the start flag did not come within the deadline.
    let body = || {
        // Release/Acquire: the parent's reset of the counter happened before
        // the fork anyway; these only order the hand-shake itself.
        shared.ready.0.fetch_add(1, Ordering::Release);
        let deadline = Instant::now() + DEADLINE;
        if !spin_until(deadline, || shared.start.0.load(Ordering::Acquire) != 0) {
            return 2;
        }
        for _ in 0..iters {
            op();
        }
        0
    };
    // SAFETY: the bench runs on one thread; `body` touches only the inherited
    // mapping and the lock under test (through `op`).
    let mut children = unsafe { [spawn("child", &body), spawn("child", &body)] };
    let deadline = Instant::now() + DEADLINE;
    let ready = spin_until(deadline, || shared.ready.0.load(Ordering::Acquire) == 2);
    assert!(ready, "children not ready within {DEADLINE:?}");
    let t0 = Instant::now();
    shared.start.0.store(1, Ordering::Release);
    let done = reap_all(&mut children, t0 + DEADLINE, |child, status| {
        assert!(exited_cleanly(status), "child {} failed: wait status {status:#x}", child.pid);
    });
    assert!(done, "a child did not finish within {DEADLINE:?}; killing it");
    let elapsed = t0.elapsed();
    // The children's writes are visible: waitpid synchronises with their exit.
    assert_eq!(shared.count(), 2 * iters, "lost or extra updates under the lock");
    elapsed
}

fn run_contended(b: &mut Bencher<'_>, shared: &Shared, op: &dyn Fn()) {
    b.iter_custom(|iters| contended_sample(shared, iters, op));
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("contended_2proc");
    // One iteration is one lock+unlock in each of the two processes.
    group.throughput(Throughput::Elements(2));
    // Each sample forks; flat sampling keeps the number of forks small.
    group.sampling_mode(SamplingMode::Flat);

    group.bench_function("shmsync_Lock", |b| {
        let map = Mapping::<Shared>::new();
        let shared = map.shared();
        // Created before the fork: the children inherit its mapping.
        let lock = shmsync::Lock::new().expect("Lock::new");
        run_contended(b, shared, &|| {
            let _guard = lock.lock().expect("poisoned");
            // SAFETY: `_guard` holds the lock every bump takes.
            unsafe { shared.bump() }
        });
    });

    group.bench_function("pthread_robust_direct", |b| {
        let map = Mapping::<Shared>::new();
        let shared = map.shared();
        // SAFETY: the slot is aligned, mapped and not yet used.
        unsafe { init_pthread(shared.mutex(), true) };
        run_contended(b, shared, &|| {
            // SAFETY: the mutex is initialised and stays mapped until `map`
            // drops after the bench; the bump runs while the pair holds it,
            // and every bump does.
            unsafe { pthread_pair(shared.mutex(), || shared.bump()) }
        });
    });

    group.bench_function("raw_sync_Mutex", |b| {
        let map = Mapping::<Shared>::new();
        let shared = map.shared();
        let mutex = raw_sync_mutex(shared);
        run_contended(b, shared, &|| {
            let _guard = mutex.lock().expect("raw_sync lock");
            // SAFETY: `_guard` holds the lock every bump takes.
            unsafe { shared.bump() }
        });
    });

    group.finish();
}

criterion_group! {
    name = uncontended_benches;
    config = common::in_process_config();
    targets = uncontended
}

criterion_group! {
    name = contended_benches;
    config = common::forking_config();
    targets = contended
}

criterion_main!(uncontended_benches, contended_benches);
