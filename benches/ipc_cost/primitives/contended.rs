//! Section 3: P forked processes (1, 2, 4, 8; unpinned) share one lock and
//! take it, between them, TOTAL times; total Mops/s, the CPU time per
//! acquisition, and the lock's fairness.
//!
//! A sample makes the lock afresh, forks the P workers, waits until all are
//! spinning on a start flag, then stamps `CLOCK_MONOTONIC` and releases them.
//! Each worker loops: lock; read the shared counter; if it is below TOTAL,
//! bump it; unlock. It stops when the counter has reached TOTAL, stamps the
//! clock, and the span ends at the latest stamp, so neither fork nor exit is
//! timed. The work is fixed in total, not per process, so a lock that lets
//! one process keep re-taking it shows in who got the acquisitions.
//!
//! **Fairness, recorded cheaply.** The counter value a worker read under the
//! lock is the index of its acquisition in the lock's global order. After
//! unlocking, the worker notes that index in its own private, pre-faulted
//! array; the critical section gains only the comparison with TOTAL, and the
//! notes add no shared-memory traffic. Once every worker is done, each copies
//! its indices into a shared array of holders (one byte per acquisition),
//! untimed. From that array come each process's share of the acquisitions
//! (the smallest and largest, 1/P each if fair), the longest run of
//! consecutive acquisitions by one process, and the mean run (acquisitions
//! per change of holder). The checks: the counter ends at exactly TOTAL,
//! every acquisition has exactly one holder, and each worker's own count
//! matches the array's.
//!
//! CPU time is each worker's own (`getrusage(RUSAGE_SELF)`) from the start
//! to its last acquisition, summed, and checked against the workers' whole
//! lives (`getrusage(RUSAGE_CHILDREN)` in the parent).

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use raw_sync::locks::{LockInit, Mutex as RawSyncMutex};

use super::reap_or_kill;
use crate::common::{
    check_rc, init_pthread, monotonic_ns, sem_destroy_expecting, sem_init_shared, sem_post, sem_wait, spawn_pinned,
    spin_until, Child, CpuSlot, CpuTimes, Line, Mapping, ZeroValid, DEADLINE,
};
use crate::model::{Cpu, Fairness, Key, PlotKind, Probe, Sample, Section, Setup, Unit};
use crate::python;

pub static SECTION: Section = Section {
    slug: "contended",
    title: "Contended throughput and fairness",
    about: "P unpinned processes share one lock and take it, between them, a fixed total number of times \
            (each bumping a shared counter inside); total Mops/s. **share min–max** is the smallest and \
            largest share of the acquisitions one process got (fair: 1/P each), **longest run** the most \
            consecutive acquisitions by one process, **mean run** the acquisitions per change of holder. \
            Each worker notes the counter value it saw, privately and after unlocking, and the parent \
            rebuilds the order from those notes afterwards, so recording it adds nothing shared to the \
            critical section. CPU/op is all workers' CPU time per acquisition.",
    plot: PlotKind::Bars,
    baseline: None,
    setup,
};

/// Acquisitions per sample, all processes together; full and quick.
const TOTAL: [u64; 2] = [1 << 20, 1 << 17];
/// Python's, which runs some 50 times slower.
const PYTHON_TOTAL: [u64; 2] = [1 << 16, 1 << 13];
const PROCS: [usize; 4] = [1, 2, 4, 8];
const MAX_PROCS: usize = 8;
const MAX_TOTAL: usize = 1 << 20;
/// The holder of an acquisition nobody claimed.
const NOBODY: u8 = u8::MAX;

/// What the workers share. All-zero bytes are a valid value of every field
/// (the mutexes and the semaphore are initialised before use).
#[repr(C)]
struct Shared {
    /// 0 while the workers wait; the parent stores 1 to start them.
    start: Line<AtomicU32>,
    /// How many workers are spinning on `start`.
    ready: Line<AtomicU32>,
    /// How many workers are past their last acquisition.
    finished: Line<AtomicU32>,
    /// Read and bumped by the workers under the lock being measured, never
    /// otherwise: the number of acquisitions so far.
    counter: Line<UnsafeCell<u64>>,
    mutex: Line<UnsafeCell<libc::pthread_mutex_t>>,
    raw_sync: Line<UnsafeCell<MaybeUninit<libc::pthread_mutex_t>>>,
    sem: Line<UnsafeCell<MaybeUninit<libc::sem_t>>>,
    /// Each worker's `CLOCK_MONOTONIC` after its last acquisition.
    end_ns: [Line<AtomicU64>; MAX_PROCS],
    /// How many acquisitions each worker counted for itself.
    took: [Line<AtomicU64>; MAX_PROCS],
    /// Each worker's CPU time from the start to its last acquisition.
    cpu: [Line<CpuSlot>; MAX_PROCS],
    /// The holder of each acquisition, in order, written after the run.
    order: [AtomicU8; MAX_TOTAL],
}

impl Shared {
    /// Claims the next acquisition's index, if fewer than `total` were made.
    ///
    /// # Safety
    /// The caller holds the lock under test, which every claim takes.
    #[inline(always)]
    unsafe fn claim(&self, total: u64) -> Option<u64> {
        let counter = self.counter.0.get();
        // SAFETY: the pointer comes from a live UnsafeCell; the caller's lock
        // makes this the only access.
        unsafe {
            let n = *counter;
            if n >= total {
                return None;
            }
            *counter = n + 1;
            Some(n)
        }
    }

    fn sem(&self) -> *mut libc::sem_t {
        self.sem.0.get().cast()
    }
}

// SAFETY: every field is an atomic, an integer, or a pthread mutex or
// semaphore (or room for one) that is initialised before use.
unsafe impl ZeroValid for Shared {}

/// What a contended run measured.
struct Run {
    span: Duration,
    cpu: Cpu,
    fairness: Fairness,
}

/// Forks `procs` workers that call `claim` (which takes the lock, claims an
/// index with [`Shared::claim`] and unlocks) until it returns `None`; see
/// the module docs.
fn contend(shared: &Shared, procs: usize, total: u64, claim: impl Fn() -> Option<u64>) -> Result<Run, String> {
    assert!(total as usize <= MAX_TOTAL && procs <= MAX_PROCS);
    for slot in &shared.order[..total as usize] {
        slot.store(NOBODY, Ordering::Relaxed);
    }
    let body = |i: usize| {
        // Written through before the start, so no page faults while timed.
        let mut mine = vec![u32::MAX; total as usize];
        shared.ready.0.fetch_add(1, Ordering::Release);
        if !spin_until(Instant::now() + DEADLINE, || shared.start.0.load(Ordering::Acquire) != 0) {
            return 4;
        }
        let cpu0 = CpuTimes::this_process();
        let mut n = 0;
        while let Some(index) = claim() {
            mine[n] = index as u32;
            n += 1;
        }
        shared.end_ns[i].0.store(monotonic_ns(), Ordering::Relaxed);
        shared.cpu[i].0.store(CpuTimes::this_process().since(cpu0));
        shared.took[i].0.store(n as u64, Ordering::Relaxed);
        // Copy the notes out only once nobody is timed any more: sleeping
        // meanwhile leaves the CPU to those still contending.
        shared.finished.0.fetch_add(1, Ordering::AcqRel);
        while shared.finished.0.load(Ordering::Acquire) < procs as u32 {
            std::thread::sleep(Duration::from_micros(200));
        }
        for &index in &mine[..n] {
            shared.order[index as usize].store(i as u8, Ordering::Relaxed);
        }
        0
    };
    let lifetime0 = CpuTimes::reaped_children();
    let mut children: Vec<Child> = Vec::with_capacity(procs);
    for i in 0..procs {
        // SAFETY: the harness runs on one thread; the body touches only the
        // inherited mapping and the lock under test (through `claim`).
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
    let lifetime = CpuTimes::reaped_children().since(lifetime0);
    // Visible: waitpid synchronises with the workers' exits.
    // SAFETY: no worker is alive, so nothing writes the counter.
    let count = unsafe { *shared.counter.0.get() };
    if count != total {
        return Err(format!("the counter is {count} after the run, expected {total}"));
    }
    let took: Vec<u64> = shared.took[..procs].iter().map(|t| t.0.load(Ordering::Relaxed)).collect();
    if took.iter().sum::<u64>() != total {
        return Err(format!("the workers counted {took:?} acquisitions, which is not {total} in all"));
    }
    let order: Vec<u8> = shared.order[..total as usize].iter().map(|o| o.load(Ordering::Relaxed)).collect();
    let mut counts = vec![0u64; procs];
    for (index, &who) in order.iter().enumerate() {
        match counts.get_mut(who as usize) {
            Some(c) => *c += 1,
            None => return Err(format!("acquisition {index} has no holder (two workers claimed one index?)")),
        }
    }
    if counts != took {
        return Err(format!("the holders' array counts {counts:?}, the workers counted {took:?}"));
    }
    let end = shared.end_ns[..procs].iter().map(|e| e.0.load(Ordering::Relaxed)).max().unwrap_or(0);
    if end < t0 {
        return Err("a worker stamped no end time".to_string());
    }
    let window = (0..procs).fold(CpuTimes::default(), |sum, i| sum.plus(shared.cpu[i].0.load()));
    Ok(Run {
        span: Duration::from_nanos(end - t0),
        cpu: Cpu::checked(window, lifetime, total)?,
        fairness: Fairness::of(&order, procs),
    })
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

    /// One sample on a fresh lock.
    fn run(self, procs: usize, total: u64) -> Result<Run, String> {
        let map = Mapping::<Shared>::new();
        let shared = map.shared();
        match self {
            Mech::Lock => {
                // Created before the fork: the workers inherit its mapping.
                let lock = shmsync::Lock::new().map_err(|e| format!("Lock::new: {e}"))?;
                let run = contend(shared, procs, total, || {
                    let _guard = lock.lock().expect("Lock poisoned");
                    // SAFETY: `_guard` holds the lock every claim takes.
                    unsafe { shared.claim(total) }
                })?;
                if lock.is_locked() || lock.is_poisoned() {
                    return Err("the lock is held or poisoned after the run".to_string());
                }
                Ok(run)
            }
            Mech::Robust => {
                let m = shared.mutex.0.get();
                // SAFETY: the slot is aligned, mapped and not yet used.
                unsafe { init_pthread(m, true) };
                let run = contend(shared, procs, total, || {
                    // SAFETY: initialised above and mapped until `map` drops,
                    // after every worker is reaped; the claim runs while this
                    // thread holds the mutex, and every claim does.
                    unsafe {
                        check_rc("pthread_mutex_lock", libc::pthread_mutex_lock(m));
                        let index = shared.claim(total);
                        check_rc("pthread_mutex_unlock", libc::pthread_mutex_unlock(m));
                        index
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
                let run = run?;
                if rc != 0 {
                    return Err(format!("the mutex is not free after the run (trylock returned {rc})"));
                }
                Ok(run)
            }
            Mech::RawSync => {
                // SAFETY: the storage is an aligned, unused `pthread_mutex_t`
                // slot in a mapping that outlives the box (dropped in this arm).
                let (mutex, _) =
                    unsafe { RawSyncMutex::new(shared.raw_sync.0.get().cast(), shared.counter.0.get().cast()) }
                        .map_err(|e| format!("raw_sync Mutex::new: {e}"))?;
                contend(shared, procs, total, || {
                    let _guard = mutex.lock().expect("raw_sync lock");
                    // SAFETY: `_guard` holds the lock every claim takes.
                    unsafe { shared.claim(total) }
                })
            }
            Mech::PosixSem => {
                let sem = shared.sem();
                // SAFETY: the slot is aligned, mapped and not yet used; value 1: a binary semaphore.
                unsafe { sem_init_shared(sem, 1) };
                let run = contend(shared, procs, total, || {
                    // SAFETY: initialised above and mapped until `map` drops;
                    // the claim runs between the wait and the post, as every
                    // claim does.
                    unsafe {
                        sem_wait(sem);
                        let index = shared.claim(total);
                        sem_post(sem);
                        index
                    }
                });
                // SAFETY: initialised above; no worker is alive.
                let idle = unsafe { sem_destroy_expecting(sem, 1) };
                let run = run?;
                idle?;
                Ok(run)
            }
        }
    }
}

/// The variant label of `procs` processes.
fn procs_label(procs: usize) -> String {
    if procs == 1 {
        "1 proc".to_string()
    } else {
        format!("{procs} procs")
    }
}

struct Contended {
    mech: Mech,
    procs: usize,
}

impl Probe for Contended {
    fn key(&self) -> Key {
        Key { section: SECTION.slug, mechanism: self.mech.name().to_string(), variant: procs_label(self.procs) }
    }

    fn unit(&self) -> Unit {
        Unit::MopsPerSec
    }

    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        let total = TOTAL[usize::from(quick)];
        let run = self.mech.run(self.procs, total)?;
        Ok(Sample::new(total as f64 / run.span.as_secs_f64().max(1e-9) / 1e6)
            .with_cpu(run.cpu)
            .with_fairness(run.fairness))
    }
}

fn setup(quick: bool) -> Setup {
    let mut out = Setup::default();
    let py = python::session(&mut out.notes);
    for procs in PROCS {
        for mech in Mech::ALL {
            out.probes.push(Box::new(Contended { mech, procs }));
        }
        if let Some(py) = &py {
            let total = PYTHON_TOTAL[usize::from(quick)];
            let args = ["contended".to_string(), procs.to_string(), total.to_string()];
            let name = "Python multiprocessing.Lock";
            let probe = py.probe(SECTION.slug, name, &procs_label(procs), Unit::MopsPerSec, "shmsync Lock", &args);
            out.probes.push(probe);
        }
    }
    out
}
