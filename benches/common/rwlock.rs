//! The reader-writer locks that `benches/rwlock.rs` and the ipc_cost study's
//! RwLock section measure, and their samples, written once:
//!
//! - `shmsync RwLock`: `RwLock<()>::new()` (a named segment), through its
//!   guards;
//! - `pthread_rwlock_t`: glibc's rwlock with `PTHREAD_PROCESS_SHARED` in an
//!   anonymous `MAP_SHARED` mapping, called directly (not robust: a holder
//!   killed wedges it for good);
//! - `raw_sync RwLock`: raw_sync 0.1's `RwLock` (the same pthread rwlock
//!   behind a boxed trait object) over the same kind of mapping;
//! - for writes, `shmsync Lock` too: the bar is 1.3x of it;
//! - the floor: a pair of compare-exchanges on a word private to the
//!   process, what a read pair costs with nothing shared at all. Its
//!   scaling across processes is the machine's own ceiling for the
//!   `read_scaling` rows (a VM whose vCPUs share a core gets well under 2x
//!   for it).
//!
//! Samples: [`uncontended`] (one process, N lock+unlock pairs) and
//! [`readers`] (K forked processes, each pinned to its own CPU when the
//! machine has enough, each taking N read pairs; wall time from the start
//! flag to the last child reaped).

use std::cell::UnsafeCell;
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use raw_sync::locks::{LockImpl, LockInit, RwLock as RawSyncRwLock};

use super::{
    allowed_cpus, check_rc, exit_problem, reap_all, spawn_pinned, spin_until, Child, Line, Mapping, ZeroValid, DEADLINE,
};

/// A lock under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mech {
    Shmsync,
    Pthread,
    RawSync,
    /// shmsync's mutex, for the write comparison only.
    ShmsyncLock,
    /// Two compare-exchanges on a word of the process's own (no lock).
    Floor,
}

/// Which side of the lock a sample takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Read,
    Write,
}

impl Mech {
    /// Every mechanism that has a read side.
    pub const READERS: [Mech; 4] = [Mech::Shmsync, Mech::Pthread, Mech::RawSync, Mech::Floor];
    /// Every mechanism for the write comparison.
    pub const WRITERS: [Mech; 4] = [Mech::Shmsync, Mech::ShmsyncLock, Mech::Pthread, Mech::RawSync];

    pub fn name(self) -> &'static str {
        match self {
            Mech::Shmsync => "shmsync RwLock",
            Mech::Pthread => "pthread_rwlock_t",
            Mech::RawSync => "raw_sync RwLock",
            Mech::ShmsyncLock => "shmsync Lock",
            Mech::Floor => "private atomic pair",
        }
    }
}

/// Storage for the pthread and raw_sync locks, and the start flag of
/// multi-process samples. All-zero bytes are valid for every field (the
/// locks are initialised before use).
#[repr(C)]
struct Shared {
    start: Line<AtomicU32>,
    ready: Line<AtomicU32>,
    rwlock: Line<UnsafeCell<libc::pthread_rwlock_t>>,
    raw_sync: Line<UnsafeCell<MaybeUninit<libc::pthread_rwlock_t>>>,
    raw_sync_data: Line<UnsafeCell<u64>>,
}

// SAFETY: atomics, integers, and room for pthread rwlocks initialised
// before use; all-zero bytes are valid for each.
unsafe impl ZeroValid for Shared {}

/// One lock of one mechanism, ready to use in this process and in children
/// forked after it was made.
pub struct Instance {
    mech: Mech,
    map: Mapping<Shared>,
    shmsync: Option<shmsync::RwLock>,
    lock: Option<shmsync::Lock>,
    raw_sync: Option<Box<dyn LockImpl>>,
    /// The floor's word: on the heap, so each forked child has its own copy.
    floor: Box<Line<std::sync::atomic::AtomicU64>>,
}

impl Instance {
    pub fn new(mech: Mech) -> Result<Instance, String> {
        let map = Mapping::<Shared>::new();
        let floor = Box::new(Line(std::sync::atomic::AtomicU64::new(0)));
        let mut inst = Instance { mech, map, shmsync: None, lock: None, raw_sync: None, floor };
        let shared = inst.map.shared();
        match mech {
            Mech::Shmsync => inst.shmsync = Some(shmsync::RwLock::new(()).map_err(|e| e.to_string())?),
            Mech::ShmsyncLock => inst.lock = Some(shmsync::Lock::new().map_err(|e| e.to_string())?),
            Mech::Floor => {}
            Mech::Pthread => {
                let mut attr = MaybeUninit::<libc::pthread_rwlockattr_t>::uninit();
                // SAFETY: `attr` is writable storage, initialised by the first
                // call before the others use it and destroyed last; the rwlock
                // slot is aligned, mapped and not yet used.
                unsafe {
                    check_rc("pthread_rwlockattr_init", libc::pthread_rwlockattr_init(attr.as_mut_ptr()));
                    check_rc(
                        "pthread_rwlockattr_setpshared",
                        libc::pthread_rwlockattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED),
                    );
                    check_rc("pthread_rwlock_init", libc::pthread_rwlock_init(shared.rwlock.0.get(), attr.as_ptr()));
                    libc::pthread_rwlockattr_destroy(attr.as_mut_ptr());
                }
            }
            Mech::RawSync => {
                // SAFETY: the storage is an aligned, unused rwlock-sized slot
                // and a data word in a mapping that outlives the box (dropped
                // first, in `Drop`).
                let (lock, _) =
                    unsafe { RawSyncRwLock::new(shared.raw_sync.0.get().cast(), shared.raw_sync_data.0.get().cast()) }
                        .map_err(|e| format!("raw_sync RwLock::new: {e}"))?;
                inst.raw_sync = Some(lock);
            }
        }
        Ok(inst)
    }

    fn rwlock(&self) -> *mut libc::pthread_rwlock_t {
        self.map.shared().rwlock.0.get()
    }

    /// One lock+unlock pair of `side`, with an empty critical section.
    #[inline(always)]
    pub fn pair(&self, side: Side) -> Result<(), String> {
        match (self.mech, side) {
            (Mech::Shmsync, Side::Read) => {
                let lock = black_box(self.shmsync.as_ref()).ok_or("no lock")?;
                lock.read().map(drop).map_err(|_| "read() reported poison".to_string())
            }
            (Mech::Shmsync, Side::Write) => {
                let lock = black_box(self.shmsync.as_ref()).ok_or("no lock")?;
                lock.write().map(drop).map_err(|_| "write() reported poison".to_string())
            }
            (Mech::ShmsyncLock, _) => {
                let lock = black_box(self.lock.as_ref()).ok_or("no lock")?;
                lock.lock().map(drop).map_err(|_| "lock() reported poison".to_string())
            }
            (Mech::Pthread, side) => {
                let l = black_box(self.rwlock());
                // SAFETY: initialised in `new`, mapped while `self` lives;
                // each pair unlocks what it took before the next.
                let rc = unsafe {
                    match side {
                        Side::Read => libc::pthread_rwlock_rdlock(l),
                        Side::Write => libc::pthread_rwlock_wrlock(l),
                    }
                };
                if rc != 0 {
                    return Err(format!("pthread_rwlock lock: {}", std::io::Error::from_raw_os_error(rc)));
                }
                // SAFETY: this thread holds the lock taken just above.
                let rc = unsafe { libc::pthread_rwlock_unlock(l) };
                if rc != 0 {
                    return Err(format!("pthread_rwlock_unlock: {}", std::io::Error::from_raw_os_error(rc)));
                }
                Ok(())
            }
            (Mech::Floor, _) => {
                let w = &black_box(&self.floor).0;
                for delta in [1u64, u64::MAX] {
                    let v = w.load(Ordering::Relaxed);
                    // SeqCst, as a reader's count and its release are.
                    if w.compare_exchange(v, v.wrapping_add(delta), Ordering::SeqCst, Ordering::Relaxed).is_err() {
                        return Err("the private word changed under its only user".into());
                    }
                }
                Ok(())
            }
            (Mech::RawSync, side) => {
                let lock = black_box(self.raw_sync.as_ref()).ok_or("no lock")?;
                match side {
                    Side::Read => lock.rlock().map(drop),
                    Side::Write => lock.lock().map(drop),
                }
                .map_err(|e| format!("raw_sync: {e}"))
            }
        }
    }

    /// After a sample: the lock is free and healthy.
    pub fn check_free(&self) -> Result<(), String> {
        if let Some(l) = &self.shmsync {
            if l.readers() != 0 || l.is_write_locked() || l.is_poisoned() {
                return Err(format!("after the run: {l:?}; expected free and clean"));
            }
        }
        if self.mech == Mech::Pthread {
            // SAFETY: initialised, mapped; a free lock is taken and given back.
            let rc = unsafe { libc::pthread_rwlock_trywrlock(self.rwlock()) };
            if rc != 0 {
                return Err("after the run the pthread rwlock is not free".into());
            }
            // SAFETY: taken just above.
            unsafe { libc::pthread_rwlock_unlock(self.rwlock()) };
        }
        Ok(())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // raw_sync's box points into the mapping: it goes first.
        self.raw_sync.take();
        if self.mech == Mech::Pthread {
            // SAFETY: initialised in `new` and unused by anyone now.
            unsafe { libc::pthread_rwlock_destroy(self.rwlock()) };
        }
    }
}

/// One process takes `pairs` lock+unlock pairs of `side` (after `warm`
/// untimed ones); the timed span.
pub fn uncontended(inst: &Instance, side: Side, warm: u64, pairs: u64) -> Result<Duration, String> {
    for _ in 0..warm {
        inst.pair(side)?;
    }
    let t0 = Instant::now();
    for _ in 0..pairs {
        inst.pair(side)?;
    }
    let span = t0.elapsed();
    inst.check_free()?;
    Ok(span)
}

/// `procs` forked processes, each pinned to its own CPU if there are enough,
/// take `pairs` read pairs each once the start flag is up; the wall time
/// from the flag to the last of them reaped.
///
/// The caller's process must have one thread (the children are forked).
pub fn readers(inst: &Instance, procs: usize, pairs: u64) -> Result<Duration, String> {
    let shared = inst.map.shared();
    shared.start.0.store(0, Ordering::Relaxed);
    shared.ready.0.store(0, Ordering::Relaxed);
    let cpus = allowed_cpus();
    let body = || {
        shared.ready.0.fetch_add(1, Ordering::Release);
        if !spin_until(Instant::now() + DEADLINE, || shared.start.0.load(Ordering::Acquire) != 0) {
            return 4;
        }
        for _ in 0..pairs {
            if inst.pair(Side::Read).is_err() {
                return 5;
            }
        }
        0
    };
    let mut children: Vec<_> = (0..procs)
        .map(|k| {
            let cpu = (cpus.len() >= procs).then(|| cpus[k]);
            // SAFETY: the caller vouches that this process has one thread; the
            // body touches only the inherited mapping and the lock under test.
            unsafe { spawn_pinned("reader", cpu, &body) }
        })
        .collect();
    let ready = spin_until(Instant::now() + DEADLINE, || shared.ready.0.load(Ordering::Acquire) == procs as u32);
    if !ready {
        return Err(format!("the readers were not ready within {DEADLINE:?}"));
    }
    let t0 = Instant::now();
    shared.start.0.store(1, Ordering::Release);
    let reaped = reap_readers(&mut children, t0 + DEADLINE);
    let span = t0.elapsed();
    reaped?;
    inst.check_free()?;
    Ok(span)
}

/// Four forked processes read `lock` in a loop while this process takes
/// `writes` write locks; the time of those writes (each waits for the reads
/// in progress, and shuts new ones out).
///
/// The caller's process must have one thread (the children are forked).
pub fn writes_against_readers(inst: &Instance, readers: usize, writes: u64) -> Result<Duration, String> {
    let shared = inst.map.shared();
    shared.start.0.store(0, Ordering::Relaxed);
    shared.ready.0.store(0, Ordering::Relaxed);
    let body = || {
        let mut first = true;
        // `start` doubles as the stop flag: 0 running, 1 stop.
        while shared.start.0.load(Ordering::Acquire) == 0 {
            if inst.pair(Side::Read).is_err() {
                return 5;
            }
            if first {
                shared.ready.0.fetch_add(1, Ordering::Release);
                first = false;
            }
        }
        0
    };
    let mut children: Vec<_> = (0..readers)
        // SAFETY: as in `readers`.
        .map(|_| unsafe { spawn_pinned("looping reader", None, &body) })
        .collect();
    let ready = spin_until(Instant::now() + DEADLINE, || shared.ready.0.load(Ordering::Acquire) == readers as u32);
    let result = if ready {
        let t0 = Instant::now();
        let mut outcome = Ok(());
        for _ in 0..writes {
            if let Err(e) = inst.pair(Side::Write) {
                outcome = Err(e);
                break;
            }
        }
        outcome.map(|()| t0.elapsed())
    } else {
        Err(format!("the readers were not reading within {DEADLINE:?}"))
    };
    shared.start.0.store(1, Ordering::Release);
    let reaped = reap_readers(&mut children, Instant::now() + DEADLINE);
    let span = result?;
    reaped?;
    inst.check_free()?;
    Ok(span)
}

/// Reaps every reader child by `deadline`: `Ok`, or the first one's
/// failure, or that one was still running then.
fn reap_readers(children: &mut [Child], deadline: Instant) -> Result<(), String> {
    let mut problem = None;
    let done = reap_all(children, deadline, |child, status| {
        if problem.is_none() {
            problem = exit_problem(child, status);
        }
    });
    match problem {
        Some(p) => Err(p),
        None if !done => Err(format!("a reader was still running after {DEADLINE:?}")),
        None => Ok(()),
    }
}
