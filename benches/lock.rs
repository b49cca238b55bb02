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

use std::cell::UnsafeCell;
use std::hint::{black_box, spin_loop};
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::io::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Bencher, Criterion, SamplingMode, Throughput};
use raw_sync::locks::{LockImpl, LockInit, Mutex as RawSyncMutex};

/// The longest any wait on or in a child may take before the bench gives up.
const DEADLINE: Duration = Duration::from_secs(60);

/// Spins between deadline checks and `sched_yield`s in [`spin_until`].
const SPINS_PER_YIELD: u32 = 64;

/// One cache line, so the fields of [`Shared`] do not false-share.
#[repr(C, align(64))]
struct Line<T>(T);

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

/// An anonymous `MAP_SHARED` mapping holding one [`Shared`], inherited across
/// `fork` at the same address and unmapped on drop.
struct Mapping(NonNull<Shared>);

impl Mapping {
    fn new() -> Mapping {
        let len = std::mem::size_of::<Shared>();
        // SAFETY: an anonymous mapping with a null hint touches no existing
        // memory; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        Mapping(NonNull::new(ptr.cast()).expect("mmap returned null"))
    }

    fn shared(&self) -> &Shared {
        // SAFETY: the mapping is page-aligned (enough for `Shared`), zero-filled
        // (a valid `Shared`, see its docs) and stays mapped until `self` drops.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `Mapping::new` with this length, and
        // every borrow of it (from `shared`) has ended with `self`'s borrow.
        unsafe { libc::munmap(self.0.as_ptr().cast(), std::mem::size_of::<Shared>()) };
    }
}

fn check(call: &str, rc: i32) {
    if rc != 0 {
        panic!("{call} failed: {}", std::io::Error::from_raw_os_error(rc));
    }
}

/// Initialises a process-shared pthread mutex at `mutex`: robust and
/// error-checking as shmsync's `RawLock` is, or a plain `NORMAL` one.
///
/// # Safety
/// `mutex` must be valid for writes and aligned, and no thread in any process
/// may use it until this returns.
unsafe fn init_pthread(mutex: *mut libc::pthread_mutex_t, robust: bool) {
    let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    let attr = attr.as_mut_ptr();
    let kind = if robust { libc::PTHREAD_MUTEX_ERRORCHECK } else { libc::PTHREAD_MUTEX_NORMAL };
    // SAFETY: `attr` is writable storage, initialised by the first call before
    // the others use it and destroyed last; the caller vouches for `mutex`.
    unsafe {
        check("pthread_mutexattr_init", libc::pthread_mutexattr_init(attr));
        check("pthread_mutexattr_settype", libc::pthread_mutexattr_settype(attr, kind));
        check("pthread_mutexattr_setpshared", libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED));
        if robust {
            check("pthread_mutexattr_setrobust", libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST));
        }
        check("pthread_mutex_init", libc::pthread_mutex_init(mutex, attr));
        libc::pthread_mutexattr_destroy(attr);
    }
}

/// Locks and unlocks `mutex` once, calling `inside` while holding it.
///
/// # Safety
/// `mutex` must be initialised, mapped, and not held by the calling thread.
#[inline]
unsafe fn pthread_pair(mutex: *mut libc::pthread_mutex_t, inside: impl FnOnce()) {
    // SAFETY: forwarded from the caller.
    check("pthread_mutex_lock", unsafe { libc::pthread_mutex_lock(mutex) });
    inside();
    // SAFETY: this thread took the mutex just above.
    check("pthread_mutex_unlock", unsafe { libc::pthread_mutex_unlock(mutex) });
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
            let map = Mapping::new();
            let mutex = map.shared().mutex();
            // SAFETY: the slot is aligned, mapped and not yet used.
            unsafe { init_pthread(mutex, robust) };
            // SAFETY: initialised above, mapped while `map` lives, and each
            // iteration unlocks before the next locks.
            b.iter(|| unsafe { pthread_pair(black_box(mutex), || {}) });
        });
    }

    group.bench_function("raw_sync_Mutex", |b| {
        let map = Mapping::new();
        let mutex = raw_sync_mutex(map.shared());
        b.iter(|| drop(black_box(&mutex).lock().expect("raw_sync lock")));
    });

    group.bench_function("atomic_swap_floor", |b| {
        let map = Mapping::new();
        let word = &map.shared().spin.0;
        b.iter(|| {
            let word = black_box(word);
            spin_lock(word);
            spin_unlock(word);
        });
    });

    group.finish();
}

/// Spins (yielding now and then) until `done` holds; false if `deadline`
/// passes first.
fn spin_until(deadline: Instant, done: impl Fn() -> bool) -> bool {
    let mut spins = 0u32;
    while !done() {
        spins = spins.wrapping_add(1);
        if spins % SPINS_PER_YIELD == 0 {
            if Instant::now() >= deadline {
                return false;
            }
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        } else {
            spin_loop();
        }
    }
    true
}

/// A forked child, killed and reaped on drop unless already reaped, so no
/// path out of a sample (a panic included) leaves one behind.
struct Child {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    reaped: bool,
}

impl Child {
    /// Reaps the child, which must have exited; panics unless it exited 0.
    fn reap(&mut self) {
        let mut status = 0;
        // SAFETY: `pid` is our unreaped child; `status` is writable.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(rc, self.pid, "waitpid: {}", std::io::Error::last_os_error());
        self.reaped = true;
        let clean = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        assert!(clean, "child {} failed: wait status {status:#x}", self.pid);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: `pid` is our child and not yet reaped, so it still names
            // that process (or its zombie), never a reused pid.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// The body of a forked child: wait for the start flag, run `op` `iters`
/// times, and `_exit`, never returning into criterion.
fn child_main(shared: &Shared, iters: u64, parent: libc::pid_t, op: &dyn Fn()) -> ! {
    let code = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on this process.
        let armed = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == 0;
        // SAFETY: getppid has no preconditions. The check catches a parent
        // that died before the flag was set.
        if !armed || unsafe { libc::getppid() } != parent {
            return 3;
        }
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
    }))
    .unwrap_or(101);
    // SAFETY: _exit ends the process at once, without running the parent's
    // destructors or atexit handlers in this copy of it.
    unsafe { libc::_exit(code) }
}

/// Forks a child running [`child_main`] and opens a pidfd for it.
fn spawn(shared: &Shared, iters: u64, op: &dyn Fn()) -> Child {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the bench runs on one thread, so the child inherits no lock held
    // by another thread; it then runs only `child_main`, which touches the
    // inherited mapping, the lock under test and `_exit`.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => child_main(shared, iters, parent, op),
        _ => {}
    }
    // SAFETY: pidfd_open takes a pid and flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        // SAFETY: `pid` is our unreaped child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        panic!("pidfd_open (Linux >= 5.3 needed): {err}");
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    Child { pid, pidfd, reaped: false }
}

/// Blocks until every child has exited and reaps each; panics (the drops kill
/// the rest) if `deadline` passes first.
fn reap_all(children: &mut [Child], deadline: Instant) {
    while children.iter().any(|c| !c.reaped) {
        let mut fds: Vec<libc::pollfd> = children
            .iter()
            .filter(|c| !c.reaped)
            .map(|c| libc::pollfd { fd: c.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a live array of `fds.len()` pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "poll: {err}");
            continue;
        }
        assert!(n > 0, "a child did not finish within {DEADLINE:?}; killing it");
        for fd in fds.iter().filter(|fd| fd.revents != 0) {
            let child = children.iter_mut().find(|c| c.pidfd.as_raw_fd() == fd.fd);
            child.expect("pidfd of a live child").reap();
        }
    }
}

/// One `iter_custom` sample: two children each run `op` (lock, bump the
/// counter, unlock) `iters` times. Returns the wall time from the start flag
/// to both children reaped; that is the time of `iters` iterations, each one
/// operation from each process.
fn contended_sample(shared: &Shared, iters: u64, op: &dyn Fn()) -> Duration {
    shared.reset();
    let mut children = [spawn(shared, iters, op), spawn(shared, iters, op)];
    let deadline = Instant::now() + DEADLINE;
    let ready = spin_until(deadline, || shared.ready.0.load(Ordering::Acquire) == 2);
    assert!(ready, "children not ready within {DEADLINE:?}");
    let t0 = Instant::now();
    shared.start.0.store(1, Ordering::Release);
    reap_all(&mut children, t0 + DEADLINE);
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
        let map = Mapping::new();
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
        let map = Mapping::new();
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
        let map = Mapping::new();
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
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = uncontended
}

criterion_group! {
    name = contended_benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = contended
}

criterion_main!(uncontended_benches, contended_benches);
