//! What it costs to hand control from one process to another and back with
//! shmsync's futex-based `Semaphore`, `Event` and `Condition`, side by side
//! with a pipe, a process-shared POSIX semaphore and raw_sync's `Event`; and
//! what the same primitives cost when nobody waits.
//!
//! Run: `cargo bench --bench handoff` (about three minutes). One group only:
//! `cargo bench --bench handoff -- handoff_roundtrip` (or `-- uncontended`);
//! one placement: `cargo bench --bench handoff -- same_core`.
//!
//! Groups:
//! - `handoff_roundtrip`: one iteration is one round trip. An *initiator*
//!   process signals a *responder*, which signals back; the initiator waits
//!   for that reply before the next round. Function names are
//!   `MECHANISM/PLACEMENT`:
//!   - placements: `cross_core` (initiator pinned to the first allowed CPU,
//!     responder to the second), `same_core` (both pinned to the first) and
//!     `unpinned` (the scheduler decides). Each process pins itself right
//!     after its fork, before it first touches the primitive: shmsync decides
//!     once per thread and pid whether spinning can help (not when the thread
//!     may run on one CPU only).
//!   - mechanisms: `shmsync_Semaphore` (two `Semaphore::new(0)`),
//!     `shmsync_Event` (two `Event`s, each side clearing its own incoming
//!     event before signalling the other), `shmsync_Condition` (one
//!     `Condition` and a `turn` word it guards), `pipe` (two pipes, one byte
//!     each way), `posix_sem` (two `sem_t`, `pshared = 1`) and
//!     `raw_sync_Event` (two raw_sync 0.1 auto-reset events, a process-shared
//!     `pthread_cond_t` + mutex each).
//!
//!   Each sample forks both roles afresh (so each starts with its own
//!   affinity and shmsync's per-process cache), runs one untimed round trip
//!   so that both are up and past their copy-on-write faults, then the
//!   initiator times `iters` round trips and hands the time back through
//!   shared memory. The criterion process itself never pins itself and never
//!   waits without a bound: every child dies by `SIGALRM` after 60 s and by
//!   `SIGKILL` when the bench dies, and the bench reaps both with a bounded
//!   pidfd poll.
//! - `uncontended`: one process, nobody waiting. `Event_is_set`,
//!   `Event_set_no_waiters` (set on a set event), `Semaphore_acquire_release`
//!   (`drop(sem.acquire())` at value 1), `Condition_notify_one_no_waiters`,
//!   and as references `futex_wake_syscall` (a bare shared `FUTEX_WAKE` on a
//!   word nobody waits on), `posix_sem_post_wait` and
//!   `atomic_fetch_add_floor`.
//!
//! Reading the numbers:
//! - Compare each shmsync round trip with `pipe` *in the same placement*:
//!   the targets are at most 0.5x a pipe's round trip across cores (where a
//!   spinning waiter can catch the reply without a kernel wake) and at most
//!   1.5x on one core (where every handoff is a context switch, and the
//!   waiter must get out of the way quickly: yield, then sleep).
//! - `posix_sem` and `raw_sync_Event` are what the obvious alternatives cost.
//! - In `uncontended`, a notify or set with no waiters should sit near
//!   `atomic_fetch_add_floor` and far below `futex_wake_syscall`: shmsync
//!   makes no syscall when nobody sleeps.
//! - The machine needs at least 2 CPUs for `cross_core` to exist.

#![warn(clippy::undocumented_unsafe_blocks)]

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::handoff::{placements, Handoff, Mech, Placement, SemSlot, Slots};
use common::{exit_problem, reap_all, sem_init_shared, sem_post, sem_wait, Child, Line, Mapping, ZeroValid, DEADLINE};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

/// How long after [`DEADLINE`] the bench waits for a child before killing it.
const REAP_GRACE: Duration = Duration::from_secs(10);

/// The mechanisms of `handoff_roundtrip` and their function names.
const MECHANISMS: [(Mech, &str); 6] = [
    (Mech::Semaphore, "shmsync_Semaphore"),
    (Mech::Event, "shmsync_Event"),
    (Mech::Condition, "shmsync_Condition"),
    (Mech::Pipe, "pipe"),
    (Mech::PosixSem, "posix_sem"),
    (Mech::RawSync, "raw_sync_Event"),
];

/// Everything the processes of one benchmark share, in one anonymous
/// `MAP_SHARED` mapping. All-zero bytes are a valid value of every field (the
/// semaphores and raw_sync's storage are initialised before use and only
/// reached through raw pointers), so the fresh mapping is one.
#[repr(C)]
struct Shared {
    /// The initiator's timed span in nanoseconds; `u64::MAX` until written.
    elapsed_ns: Line<AtomicU64>,
    /// The round-trip mechanisms' `turn` word, semaphores and raw_sync
    /// storage.
    slots: Slots,
    /// The POSIX semaphore of `posix_sem_post_wait`.
    lone_sem: SemSlot,
    /// The futex word of `futex_wake_syscall`; nobody ever waits on it.
    futex: Line<AtomicU32>,
    /// The word of `atomic_fetch_add_floor`.
    counter: Line<AtomicU32>,
}

// SAFETY: every field is an atomic, or storage (semaphores, raw_sync's, in
// `Slots` and `lone_sem`) that is initialised before use and only reached
// through raw pointers, as `Shared`'s docs say; all-zero bytes are valid for
// each.
unsafe impl ZeroValid for Shared {}

/// Panics unless `child`, reaped with wait `status`, exited 0, saying how it
/// failed in `what`.
fn check_exit(child: &Child, status: libc::c_int, what: &str) {
    if let Some(problem) = exit_problem(child, status) {
        panic!("{what}: {problem}");
    }
}

/// Forks a child that arms its `alarm` deadline, pins itself to `cpu` (if
/// any; exit code 2 if that fails) and runs `body`.
///
/// # Safety
/// As for [`common::spawn`].
unsafe fn spawn(role: &'static str, cpu: Option<usize>, body: &dyn Fn()) -> Child {
    // SAFETY: forwarded from the caller.
    unsafe {
        common::spawn_pinned(role, cpu, &|| {
            body();
            0
        })
    }
}

/// One `iter_custom` sample: fork a responder that answers `iters + 1`
/// rounds and an initiator that runs one untimed round, then times `iters`.
fn roundtrip_sample(name: &str, h: &dyn Handoff, shared: &Shared, place: Placement, iters: u64) -> Duration {
    h.reset();
    shared.elapsed_ns.0.store(u64::MAX, Ordering::Relaxed);
    let what = format!("{name}/{} with {iters} round trips", place.name);
    // SAFETY: the bench runs on one thread; the body touches only the
    // inherited mapping and the primitive under test, `h`.
    let responder = unsafe {
        spawn("responder", place.responder, &|| {
            for _ in 0..=iters {
                h.pong();
            }
        })
    };
    // SAFETY: as for the responder.
    let initiator = unsafe {
        spawn("initiator", place.initiator, &|| {
            h.ping();
            let t0 = Instant::now();
            for _ in 0..iters {
                h.ping();
            }
            let ns = t0.elapsed().as_nanos().min(u64::MAX as u128 - 1) as u64;
            shared.elapsed_ns.0.store(ns, Ordering::Relaxed);
        })
    };
    let mut children = [initiator, responder];
    let done = reap_all(&mut children, Instant::now() + DEADLINE + REAP_GRACE, |child, status| {
        check_exit(child, status, &what);
    });
    assert!(done, "{what}: a child outlived its own {DEADLINE:?} deadline by {REAP_GRACE:?}; killing it");
    // Visible: waitpid synchronises with the initiator's exit.
    let ns = shared.elapsed_ns.0.load(Ordering::Relaxed);
    assert_ne!(ns, u64::MAX, "{what}: the initiator reported no time");
    Duration::from_nanos(ns)
}

fn handoff_roundtrip(c: &mut Criterion) {
    let map = Mapping::<Shared>::new();
    let shared = map.shared();
    // Everything is made before any fork, so the children inherit it. The
    // shmsync objects unlink their names when these handles drop, here in
    // the process that created them; children `_exit` and drop nothing.
    let mechanisms: Vec<(&str, Box<dyn Handoff + '_>)> = MECHANISMS
        .into_iter()
        .map(|(mech, name)| (name, mech.make(&shared.slots).unwrap_or_else(|e| panic!("{name}: {e}"))))
        .collect();

    let mut group = c.benchmark_group("handoff_roundtrip");
    // Each sample forks twice; flat sampling keeps the number of forks small.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let places = placements(["cross_core", "same_core", "unpinned"]);
    if places.len() < 3 {
        eprintln!("handoff: only one CPU allowed, skipping cross_core");
    }
    for place in places {
        for (name, h) in &mechanisms {
            let h = &**h;
            group.bench_function(format!("{name}/{}", place.name), |b| {
                b.iter_custom(|iters| roundtrip_sample(name, h, shared, place, iters));
            });
        }
    }
    group.finish();
}

fn uncontended(c: &mut Criterion) {
    let map = Mapping::<Shared>::new();
    let shared = map.shared();
    let mut group = c.benchmark_group("uncontended");

    group.bench_function("Event_is_set", |b| {
        let ev = shmsync::Event::new().expect("Event::new");
        ev.set();
        b.iter(|| black_box(&ev).is_set());
    });

    group.bench_function("Event_set_no_waiters", |b| {
        let ev = shmsync::Event::new().expect("Event::new");
        ev.set();
        b.iter(|| black_box(&ev).set());
    });

    group.bench_function("Semaphore_acquire_release", |b| {
        let sem = shmsync::Semaphore::new(1).expect("Semaphore::new");
        b.iter(|| drop(black_box(&sem).acquire()));
    });

    group.bench_function("Condition_notify_one_no_waiters", |b| {
        let cond = shmsync::Condition::new().expect("Condition::new");
        b.iter(|| black_box(&cond).notify_one());
    });

    group.bench_function("futex_wake_syscall", |b| {
        let word = &shared.futex.0;
        b.iter(|| {
            // SAFETY: FUTEX_WAKE only reads the address to find sleepers; the
            // word is an aligned AtomicU32 in a mapping that outlives the call.
            // Not FUTEX_PRIVATE_FLAG: a shared futex, as shmsync uses.
            let rc = unsafe { libc::syscall(libc::SYS_futex, black_box(word).as_ptr(), libc::FUTEX_WAKE, 1) };
            assert_eq!(rc, 0, "FUTEX_WAKE woke someone or failed");
        });
    });

    group.bench_function("posix_sem_post_wait", |b| {
        let sem: *mut libc::sem_t = shared.lone_sem.0.get().cast();
        // SAFETY: the slot is aligned, mapped and not yet used.
        unsafe { sem_init_shared(sem, 0) };
        // SAFETY: initialised above and mapped while `map` lives; each post
        // is followed by a wait that takes it, so the wait never blocks.
        b.iter(|| unsafe {
            sem_post(black_box(sem));
            sem_wait(black_box(sem));
        });
        // SAFETY: initialised above; nobody waits on it.
        unsafe { libc::sem_destroy(sem) };
    });

    group.bench_function("atomic_fetch_add_floor", |b| {
        let word = &shared.counter.0;
        b.iter(|| black_box(word).fetch_add(1, Ordering::Relaxed));
    });

    group.finish();
}

criterion_group! {
    name = roundtrip_benches;
    config = Criterion::default();
    targets = handoff_roundtrip
}

criterion_group! {
    name = uncontended_benches;
    config = common::in_process_config();
    targets = uncontended
}

criterion_main!(roundtrip_benches, uncontended_benches);
