//! Section 1: one process takes and releases a free lock N times; ns per pair.
//!
//! Each sample makes the object afresh (a shmsync object is a named segment,
//! the others live in an anonymous `MAP_SHARED` mapping as they would across
//! processes), runs N/10 untimed pairs, then times N pairs. N is calibrated
//! once per probe and mode so that a sample takes about 30 ms (2 ms quick).
//! The CPU time is this process's own over the timed pairs
//! (`getrusage(RUSAGE_SELF)`); below the wall time only if it was preempted.
//! Python's `Lock`, `RLock` and `Semaphore` run the same loop in the
//! interpreter, a fixed number of times.

use std::cell::UnsafeCell;
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use raw_sync::locks::{LockInit, Mutex as RawSyncMutex};
use raw_sync::Timeout;

use crate::common::{init_pthread, sem_destroy_expecting, sem_init_shared, CpuTimes, Line, Mapping, ZeroValid};
use crate::model::{Cpu, Key, PlotKind, Probe, Sample, Section, Setup, Unit};
use crate::python;

pub static SECTION: Section = Section {
    slug: "uncontended",
    title: "Uncontended acquire + release",
    about: "One process takes and releases a free lock N times (N calibrated to about 30 ms a sample); \
            ns per pair. CPU/op is the process's own CPU time over the timed pairs.",
    plot: PlotKind::Bars,
    baseline: None,
    setup,
};

/// Python's pairs per sample, full and quick.
const PYTHON_PAIRS: [u64; 2] = [1_000_000, 50_000];

/// What one sample should take, full and quick.
const TARGET: [Duration; 2] = [Duration::from_millis(30), Duration::from_millis(2)];
/// The calibration run's pairs.
const CALIBRATION_PAIRS: u64 = 20_000;
/// Bounds on N.
const MIN_PAIRS: u64 = 10_000;
const MAX_PAIRS: u64 = 50_000_000;

/// Storage for the non-shmsync mechanisms. All-zero bytes are a valid value
/// of every field: the mutexes and the semaphore are initialised before use.
#[repr(C)]
struct Shared {
    mutex: Line<UnsafeCell<libc::pthread_mutex_t>>,
    raw_sync: Line<UnsafeCell<MaybeUninit<libc::pthread_mutex_t>>>,
    /// The data pointer raw_sync's mutex wants; never touched.
    raw_sync_data: Line<UnsafeCell<u64>>,
    sem: Line<UnsafeCell<MaybeUninit<libc::sem_t>>>,
    spin: Line<AtomicU32>,
}

// SAFETY: every field is an atomic, an integer, or a pthread mutex or
// semaphore (or room for one) that is initialised before use.
unsafe impl ZeroValid for Shared {}

#[derive(Clone, Copy)]
enum Mech {
    Lock,
    RLock,
    Semaphore,
    RawSync,
    Robust,
    Plain,
    PosixSem,
    Spin,
}

impl Mech {
    const ALL: [Mech; 8] = [
        Mech::Lock,
        Mech::RLock,
        Mech::Semaphore,
        Mech::RawSync,
        Mech::Robust,
        Mech::Plain,
        Mech::PosixSem,
        Mech::Spin,
    ];

    fn name(self) -> &'static str {
        match self {
            Mech::Lock => "shmsync Lock",
            Mech::RLock => "shmsync RLock",
            Mech::Semaphore => "shmsync Semaphore",
            Mech::RawSync => "raw_sync Mutex",
            Mech::Robust => "pthread robust mutex",
            Mech::Plain => "pthread plain mutex",
            Mech::PosixSem => "POSIX sem_t",
            Mech::Spin => "atomic spinlock",
        }
    }
}

/// A timed run: its wall span and this process's CPU time over it.
type Timed = (Duration, CpuTimes);

/// Runs `warm` untimed then `pairs` timed calls of `pair`, stopping at the
/// first error; returns the timed span and its CPU time.
#[inline(always)]
fn timed(warm: u64, pairs: u64, mut pair: impl FnMut() -> Result<(), String>) -> Result<Timed, String> {
    for _ in 0..warm {
        pair()?;
    }
    let cpu0 = CpuTimes::this_process();
    let t0 = Instant::now();
    for _ in 0..pairs {
        pair()?;
    }
    let span = t0.elapsed();
    Ok((span, CpuTimes::this_process().since(cpu0)))
}

fn pthread_err(call: &str, rc: i32) -> String {
    format!("{call} failed: {}", std::io::Error::from_raw_os_error(rc))
}

/// One timed run of `pairs` pairs on a fresh object, checked afterwards.
fn run(mech: Mech, warm: u64, pairs: u64) -> Result<Timed, String> {
    let map = Mapping::<Shared>::new();
    let shared = map.shared();
    let new_err = |e: shmsync::Error| format!("{}: creating it failed: {e}", mech.name());
    match mech {
        Mech::Lock | Mech::RLock => {
            // One code path for both: the same guard type, the same calls.
            enum Either {
                Lock(shmsync::Lock),
                RLock(shmsync::RLock),
            }
            let lock = match mech {
                Mech::Lock => Either::Lock(shmsync::Lock::new().map_err(new_err)?),
                _ => Either::RLock(shmsync::RLock::new().map_err(new_err)?),
            };
            let span = match &lock {
                Either::Lock(l) => timed(warm, pairs, || match black_box(l).lock() {
                    Ok(g) => {
                        drop(g);
                        Ok(())
                    }
                    Err(_) => Err("lock() reported poison".to_string()),
                })?,
                Either::RLock(l) => timed(warm, pairs, || match black_box(l).lock() {
                    Ok(g) => {
                        drop(g);
                        Ok(())
                    }
                    Err(_) => Err("lock() reported poison".to_string()),
                })?,
            };
            let (locked, poisoned) = match &lock {
                Either::Lock(l) => (l.is_locked(), l.is_poisoned()),
                Either::RLock(l) => (l.is_locked(), l.is_poisoned()),
            };
            if locked || poisoned {
                return Err(format!("after the run: locked {locked}, poisoned {poisoned}; expected free and clean"));
            }
            Ok(span)
        }
        Mech::Semaphore => {
            let sem = shmsync::Semaphore::new(1).map_err(new_err)?;
            let span = timed(warm, pairs, || {
                drop(black_box(&sem).acquire());
                Ok(())
            })?;
            match sem.value() {
                1 => Ok(span),
                v => Err(format!("after the run the value is {v}, expected 1")),
            }
        }
        Mech::RawSync => {
            // SAFETY: the storage is an aligned, unused `pthread_mutex_t`-sized
            // slot (and a data word) in a mapping that outlives the box,
            // which drops at the end of this arm, before `map`.
            let (mutex, _) =
                unsafe { RawSyncMutex::new(shared.raw_sync.0.get().cast(), shared.raw_sync_data.0.get().cast()) }
                    .map_err(|e| format!("raw_sync Mutex::new: {e}"))?;
            let span = timed(warm, pairs, || match black_box(&mutex).lock() {
                Ok(g) => {
                    drop(g);
                    Ok(())
                }
                Err(e) => Err(format!("raw_sync lock: {e}")),
            })?;
            let free = mutex.try_lock(Timeout::Val(Duration::ZERO)).map(drop);
            free.map_err(|e| format!("after the run the mutex is not free: {e}"))?;
            Ok(span)
        }
        Mech::Robust | Mech::Plain => {
            let m = shared.mutex.0.get();
            // SAFETY: the slot is aligned, mapped and not yet used.
            unsafe { init_pthread(m, matches!(mech, Mech::Robust)) };
            let span = timed(warm, pairs, || {
                let m = black_box(m);
                // SAFETY: initialised above, mapped while `map` lives, and
                // each pair unlocks before the next locks.
                let rc = unsafe { libc::pthread_mutex_lock(m) };
                if rc != 0 {
                    return Err(pthread_err("pthread_mutex_lock", rc));
                }
                // SAFETY: this thread took the mutex just above.
                let rc = unsafe { libc::pthread_mutex_unlock(m) };
                if rc != 0 {
                    return Err(pthread_err("pthread_mutex_unlock", rc));
                }
                Ok(())
            });
            // SAFETY: as above; a free mutex is taken and given back at once.
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
                return Err(format!("after the run the mutex is not free: {}", pthread_err("trylock", rc)));
            }
            Ok(span)
        }
        Mech::PosixSem => {
            let sem: *mut libc::sem_t = shared.sem.0.get().cast();
            // SAFETY: the slot is aligned, mapped and not yet used.
            unsafe { sem_init_shared(sem, 0) };
            let span = timed(warm, pairs, || {
                let sem = black_box(sem);
                // SAFETY: initialised above and mapped while `map` lives; the
                // wait takes the unit just posted, so it never blocks.
                if unsafe { libc::sem_post(sem) } != 0 {
                    return Err(format!("sem_post: {}", std::io::Error::last_os_error()));
                }
                // SAFETY: as for sem_post.
                if unsafe { libc::sem_wait(sem) } != 0 {
                    return Err(format!("sem_wait: {}", std::io::Error::last_os_error()));
                }
                Ok(())
            });
            // SAFETY: initialised above; nobody else uses it, so it can be
            // read and then destroyed.
            let idle = unsafe { sem_destroy_expecting(sem, 0) };
            let span = span?;
            idle?;
            Ok(span)
        }
        Mech::Spin => {
            let word = &shared.spin.0;
            let span = timed(warm, pairs, || {
                let word = black_box(word);
                // Acquire pairs with the Release store below.
                while word.swap(1, Ordering::Acquire) != 0 {
                    std::hint::spin_loop();
                }
                word.store(0, Ordering::Release);
                Ok(())
            })?;
            match word.load(Ordering::Relaxed) {
                0 => Ok(span),
                v => Err(format!("after the run the spin word is {v}, expected 0")),
            }
        }
    }
}

struct Uncontended {
    mech: Mech,
    /// N, once calibrated, for full and quick samples.
    pairs: [Option<u64>; 2],
}

impl Probe for Uncontended {
    fn key(&self) -> Key {
        Key { section: SECTION.slug, mechanism: self.mech.name().to_string(), variant: String::new() }
    }

    fn unit(&self) -> Unit {
        Unit::NanosPerOp
    }

    fn is_floor(&self) -> bool {
        matches!(self.mech, Mech::Spin)
    }

    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        let mode = usize::from(quick);
        let pairs = match self.pairs[mode] {
            Some(n) => n,
            None => {
                let (span, _) = run(self.mech, CALIBRATION_PAIRS / 10, CALIBRATION_PAIRS)?;
                let per_pair = span.as_secs_f64() / CALIBRATION_PAIRS as f64;
                let n = (TARGET[mode].as_secs_f64() / per_pair.max(1e-10)) as u64;
                let n = n.clamp(MIN_PAIRS, MAX_PAIRS);
                self.pairs[mode] = Some(n);
                n
            }
        };
        let (span, cpu) = run(self.mech, pairs / 10, pairs)?;
        Ok(Sample::new(span.as_nanos() as f64 / pairs as f64).with_cpu(Cpu::per_op(cpu, pairs)))
    }
}

/// Python rows: the script's name for the object, ours it stands beside.
const PYTHON: [(&str, &str, &str); 3] = [
    ("lock", "Python multiprocessing.Lock", "shmsync Lock"),
    ("rlock", "Python multiprocessing.RLock", "shmsync RLock"),
    ("semaphore", "Python multiprocessing.Semaphore", "shmsync Semaphore"),
];

fn setup(quick: bool) -> Setup {
    let mut out = Setup::default();
    for &mech in &Mech::ALL {
        out.probes.push(Box::new(Uncontended { mech, pairs: [None; 2] }));
    }
    if let Some(py) = python::session(&mut out.notes) {
        for (kind, name, ours) in PYTHON {
            let pairs = PYTHON_PAIRS[usize::from(quick)];
            let args = ["uncontended".to_string(), kind.to_string(), pairs.to_string()];
            out.probes.push(py.probe(SECTION.slug, name, "", Unit::NanosPerOp, ours, &args));
        }
    }
    out
}
