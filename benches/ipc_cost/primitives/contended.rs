//! Section 3: P forked processes (1, 2, 4, 8; unpinned) each take one lock M
//! times and bump a plain shared `u64` inside it; total Mops/s.
//!
//! A sample makes the lock afresh, forks the P workers, waits until all are
//! spinning on a start flag, then stamps `CLOCK_MONOTONIC` and releases them.
//! Each worker stamps the same clock after its last unlock; the span ends at
//! the latest stamp, so neither fork nor exit is timed. The counter must come
//! out exactly P * M. M = TOTAL / P, so every sample does the same work.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raw_sync::locks::{LockInit, Mutex as RawSyncMutex};

use super::reap_or_kill;
use crate::common::{
    check_rc, init_pthread, monotonic_ns, sem_init_shared, sem_post, sem_wait, spawn_pinned, spin_until, Child, Line,
    Mapping, ZeroValid, DEADLINE,
};
use crate::model::{Key, Probe, Sample, Section, Unit};

/// Lock+bump+unlock operations per sample, all processes together; full and quick.
const TOTAL: [u64; 2] = [1 << 20, 1 << 17];
const PROCS: [usize; 4] = [1, 2, 4, 8];
const MAX_PROCS: usize = 8;

/// What the workers share. All-zero bytes are a valid value of every field
/// (the mutexes and the semaphore are initialised before use).
#[repr(C)]
struct Shared {
    /// 0 while the workers wait; the parent stores 1 to start them.
    start: Line<AtomicU32>,
    /// How many workers are spinning on `start`.
    ready: Line<AtomicU32>,
    /// Bumped by the workers under the lock being measured, never otherwise.
    counter: Line<UnsafeCell<u64>>,
    mutex: Line<UnsafeCell<libc::pthread_mutex_t>>,
    raw_sync: Line<UnsafeCell<MaybeUninit<libc::pthread_mutex_t>>>,
    sem: Line<UnsafeCell<MaybeUninit<libc::sem_t>>>,
    /// Each worker's `CLOCK_MONOTONIC` after its last operation.
    end_ns: [Line<AtomicU64>; MAX_PROCS],
}

impl Shared {
    /// Adds one to the counter.
    ///
    /// # Safety
    /// The caller holds the lock under test, which every bump takes.
    #[inline(always)]
    unsafe fn bump(&self) {
        // SAFETY: the pointer comes from a live UnsafeCell; the caller's lock
        // makes this the only access.
        unsafe { *self.counter.0.get() += 1 }
    }

    fn sem(&self) -> *mut libc::sem_t {
        self.sem.0.get().cast()
    }
}

// SAFETY: every field is an atomic, an integer, or a pthread mutex or
// semaphore (or room for one) that is initialised before use.
unsafe impl ZeroValid for Shared {}

/// Forks `procs` workers that each run `op` `per_proc` times after the start
/// flag; returns the span from the flag to the last worker's last op.
fn contend(shared: &Shared, procs: usize, per_proc: u64, op: impl Fn()) -> Result<Duration, String> {
    let body = |i: usize| {
        shared.ready.0.fetch_add(1, Ordering::Release);
        if !spin_until(Instant::now() + DEADLINE, || shared.start.0.load(Ordering::Acquire) != 0) {
            return 4;
        }
        for _ in 0..per_proc {
            op();
        }
        shared.end_ns[i].0.store(monotonic_ns(), Ordering::Relaxed);
        0
    };
    let mut children: Vec<Child> = Vec::with_capacity(procs);
    for i in 0..procs {
        // SAFETY: the harness runs on one thread; the body touches only the
        // inherited mapping and the lock under test (through `op`).
        children.push(unsafe { spawn_pinned("worker", None, &|| body(i)) });
    }
    let ready =
        spin_until(Instant::now() + Duration::from_secs(10), || shared.ready.0.load(Ordering::Acquire) == procs as u32);
    if !ready {
        return Err(format!("only {} of {procs} workers came up within 10 s", shared.ready.0.load(Ordering::Relaxed)));
    }
    let t0 = monotonic_ns();
    shared.start.0.store(1, Ordering::Release);
    reap_or_kill(&mut children, Duration::from_secs(70))?;
    // Visible: waitpid synchronises with the workers' exits.
    let end = shared.end_ns[..procs].iter().map(|e| e.0.load(Ordering::Relaxed)).max().unwrap_or(0);
    if end < t0 {
        return Err("a worker stamped no end time".to_string());
    }
    Ok(Duration::from_nanos(end - t0))
}

#[derive(Clone, Copy)]
enum Mech {
    Lock,
    Robust,
    RawSync,
    PosixSem,
}

impl Mech {
    const ALL: [Mech; 4] = [Mech::Lock, Mech::Robust, Mech::RawSync, Mech::PosixSem];

    fn name(self) -> &'static str {
        match self {
            Mech::Lock => "shmsync Lock",
            Mech::Robust => "pthread robust mutex",
            Mech::RawSync => "raw_sync Mutex",
            Mech::PosixSem => "POSIX sem_t",
        }
    }

    /// One sample on a fresh lock; the span, after checking the count.
    fn run(self, procs: usize, per_proc: u64) -> Result<Duration, String> {
        let map = Mapping::<Shared>::new();
        let shared = map.shared();
        let span = match self {
            Mech::Lock => {
                // Created before the fork: the workers inherit its mapping.
                let lock = shmsync::Lock::new().map_err(|e| format!("Lock::new: {e}"))?;
                let span = contend(shared, procs, per_proc, || {
                    let _guard = lock.lock().expect("Lock poisoned");
                    // SAFETY: `_guard` holds the lock every bump takes.
                    unsafe { shared.bump() }
                })?;
                if lock.is_locked() || lock.is_poisoned() {
                    return Err("the lock is held or poisoned after the run".to_string());
                }
                span
            }
            Mech::Robust => {
                let m = shared.mutex.0.get();
                // SAFETY: the slot is aligned, mapped and not yet used.
                unsafe { init_pthread(m, true) };
                let span = contend(shared, procs, per_proc, || {
                    // SAFETY: initialised above and mapped until `map` drops,
                    // after every worker is reaped; the bump runs while this
                    // thread holds the mutex, and every bump does.
                    unsafe {
                        check_rc("pthread_mutex_lock", libc::pthread_mutex_lock(m));
                        shared.bump();
                        check_rc("pthread_mutex_unlock", libc::pthread_mutex_unlock(m));
                    }
                });
                // SAFETY: no worker is alive; a free mutex is taken and given back.
                let rc = unsafe { libc::pthread_mutex_trylock(m) };
                // SAFETY: taken just above if rc == 0; destroyed unheld, unused after.
                unsafe {
                    if rc == 0 {
                        libc::pthread_mutex_unlock(m);
                    }
                    libc::pthread_mutex_destroy(m);
                }
                let span = span?;
                if rc != 0 {
                    return Err(format!("the mutex is not free after the run (trylock returned {rc})"));
                }
                span
            }
            Mech::RawSync => {
                // SAFETY: the storage is an aligned, unused `pthread_mutex_t`
                // slot in a mapping that outlives the box (dropped in this arm).
                let (mutex, _) =
                    unsafe { RawSyncMutex::new(shared.raw_sync.0.get().cast(), shared.counter.0.get().cast()) }
                        .map_err(|e| format!("raw_sync Mutex::new: {e}"))?;
                contend(shared, procs, per_proc, || {
                    let _guard = mutex.lock().expect("raw_sync lock");
                    // SAFETY: `_guard` holds the lock every bump takes.
                    unsafe { shared.bump() }
                })?
            }
            Mech::PosixSem => {
                let sem = shared.sem();
                // SAFETY: the slot is aligned, mapped and not yet used; value 1: a binary semaphore.
                unsafe { sem_init_shared(sem, 1) };
                let span = contend(shared, procs, per_proc, || {
                    // SAFETY: initialised above and mapped until `map` drops;
                    // the bump runs between the wait and the post, as every
                    // bump does.
                    unsafe {
                        sem_wait(sem);
                        shared.bump();
                        sem_post(sem);
                    }
                });
                let mut value = -1;
                // SAFETY: initialised above; no worker is alive.
                unsafe {
                    libc::sem_getvalue(sem, &mut value);
                    libc::sem_destroy(sem);
                }
                let span = span?;
                if value != 1 {
                    return Err(format!("the semaphore's value is {value} after the run, expected 1"));
                }
                span
            }
        };
        // SAFETY: no worker is alive, so nothing writes the counter.
        let count = unsafe { *shared.counter.0.get() };
        let want = procs as u64 * per_proc;
        if count != want {
            return Err(format!(
                "the counter is {count} after {procs} x {per_proc} locked increments, expected {want}"
            ));
        }
        Ok(span)
    }
}

struct Contended {
    mech: Mech,
    procs: usize,
}

impl Probe for Contended {
    fn key(&self) -> Key {
        let variant = if self.procs == 1 { "1 proc".to_string() } else { format!("{} procs", self.procs) };
        Key { section: Section::Contended, mechanism: self.mech.name().to_string(), variant }
    }

    fn unit(&self) -> Unit {
        Unit::MopsPerSec
    }

    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        let per_proc = TOTAL[usize::from(quick)] / self.procs as u64;
        let span = self.mech.run(self.procs, per_proc)?;
        let ops = (per_proc * self.procs as u64) as f64;
        Ok(Sample { value: ops / span.as_secs_f64().max(1e-9) / 1e6, p50: None, p99: None })
    }
}

pub fn probes() -> Vec<Box<dyn Probe>> {
    let mut out: Vec<Box<dyn Probe>> = Vec::new();
    for procs in PROCS {
        for mech in Mech::ALL {
            out.push(Box::new(Contended { mech, procs }));
        }
    }
    out
}
