//! Section 2: handing control from one process to another and back; µs per
//! round trip, with p50, p99 and p99.9 of the individual round trips, and
//! the CPU time both processes spent per round trip.
//!
//! A sample makes the mechanism afresh, forks a responder that answers every
//! round and an initiator that runs [`WARM_TRIPS`] untimed rounds and then
//! times each of the next `trips` rounds with one clock read per round trip.
//! Both are forked, so the bench process never pins itself; each child pins
//! itself (per placement) before it first touches the primitive, because
//! shmsync decides once per thread and pid whether spinning can help.
//!
//! The CPU time is each child's own (`getrusage(RUSAGE_SELF)`) over its
//! timed rounds, summed; the children's whole lives, from the parent's
//! `getrusage(RUSAGE_CHILDREN)`, bound it as a check. Python's `Event`,
//! `Semaphore` and `Condition` run the same protocol in the same placements
//! (`mp_bench.py handoff`).
//!
//! `futex` is a bare shared futex word (no `FUTEX_PRIVATE_FLAG`, as shmsync
//! uses) that each side sets and then always wakes, never spinning: the
//! floor of a kernel-mediated handoff, not of the section (a spinning waiter
//! can beat it across cores).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::reap_or_kill;
use crate::common::handoff::{placements, Mech, Placement, Slots};
use crate::common::{spawn_pinned, CpuSlot, CpuTimes, Line, Mapping, ZeroValid};
use crate::model::{Cpu, Key, Percentiles, PlotKind, Probe, Sample, Section, Setup, Unit};
use crate::python;

pub static SECTION: Section = Section {
    slug: "handoff",
    title: "Handoff round trip between two processes",
    about: "Two forked processes hand control back and forth; µs per round trip (one clock read per trip), \
            with p50/p99/p99.9 of the individual trips. Placements: cross-core (pinned to two CPUs), same-core \
            (both pinned to one) and unpinned. CPU/op is both processes' CPU time per round trip; \
            `cores` = CPU ÷ wall, so 2.0 means both sides spun the whole time.",
    plot: PlotKind::Bars,
    baseline: None,
    setup,
};

/// Timed round trips per sample, full and quick (Python's too).
const TRIPS: [usize; 2] = [3000, 200];
/// Untimed round trips first, so both sides are up and past their faults.
const WARM_TRIPS: usize = 20;
/// Room for the per-trip times of the longest sample.
const MAX_TRIPS: usize = 4096;

/// What the two processes of a sample share.
#[repr(C)]
struct Shared {
    /// Each timed round trip, ns, written by the initiator.
    trip_ns: [AtomicU64; MAX_TRIPS],
    /// How many round trips the initiator timed, written at its end.
    timed: Line<AtomicU64>,
    /// How many rounds the responder answered, written at its end.
    answered: Line<AtomicU64>,
    /// The CPU time of the timed rounds: initiator, responder.
    cpu: [Line<CpuSlot>; 2],
    /// The mechanisms' words, semaphores and raw_sync storage.
    slots: Slots,
}

// SAFETY: every field is an atomic, or `Slots`, whose fields are atomics or
// storage that is initialised before use and reached through raw pointers
// only, as `Slots`' docs say; all-zero bytes are valid for each.
unsafe impl ZeroValid for Shared {}

/// The mechanisms and their names in the report.
const MECHS: [(Mech, &str); 9] = [
    (Mech::Semaphore, "shmsync Semaphore"),
    (Mech::Event, "shmsync Event"),
    (Mech::Condition, "shmsync Condition"),
    (Mech::Futex, "futex"),
    (Mech::Pipe, "pipe"),
    (Mech::Socketpair, "socketpair"),
    (Mech::Eventfd, "eventfd"),
    (Mech::PosixSem, "POSIX sem_t"),
    (Mech::RawSync, "raw_sync Event"),
];

struct HandoffProbe {
    mech: Mech,
    name: &'static str,
    place: Placement,
}

impl HandoffProbe {
    fn run(&self, trips: usize) -> Result<Sample, String> {
        let map = Mapping::<Shared>::new();
        let shared = map.shared();
        // Made before the forks, so both children inherit it; dropped here
        // (shmsync's unlink their names) after both are reaped.
        let h = self.mech.make(&shared.slots)?;
        let h = &*h;
        let rounds = (WARM_TRIPS + trips) as u64;
        let lifetime0 = CpuTimes::reaped_children();
        // SAFETY: the harness runs on one thread; the body touches only the
        // inherited mapping and the mechanism under test.
        let responder = unsafe {
            spawn_pinned("responder", self.place.responder, &|| {
                for _ in 0..WARM_TRIPS {
                    h.pong();
                }
                let cpu0 = CpuTimes::this_process();
                for _ in WARM_TRIPS as u64..rounds {
                    h.pong();
                }
                shared.cpu[1].0.store(CpuTimes::this_process().since(cpu0));
                shared.answered.0.store(rounds, Ordering::Relaxed);
                0
            })
        };
        // SAFETY: as for the responder.
        let initiator = unsafe {
            spawn_pinned("initiator", self.place.initiator, &|| {
                // Fault the result slots in before the clock starts.
                for slot in &shared.trip_ns[..trips] {
                    slot.store(0, Ordering::Relaxed);
                }
                for _ in 0..WARM_TRIPS {
                    h.ping();
                }
                let cpu0 = CpuTimes::this_process();
                let mut last = Instant::now();
                for slot in &shared.trip_ns[..trips] {
                    h.ping();
                    let now = Instant::now();
                    slot.store((now - last).as_nanos() as u64, Ordering::Relaxed);
                    last = now;
                }
                shared.cpu[0].0.store(CpuTimes::this_process().since(cpu0));
                shared.timed.0.store(trips as u64, Ordering::Relaxed);
                0
            })
        };
        reap_or_kill(&mut [initiator, responder], Duration::from_secs(70))?;
        let lifetime = CpuTimes::reaped_children().since(lifetime0);
        // Visible: waitpid synchronises with the children's exits.
        let (timed, answered) = (shared.timed.0.load(Ordering::Relaxed), shared.answered.0.load(Ordering::Relaxed));
        if timed != trips as u64 || answered != rounds {
            return Err(format!(
                "initiator timed {timed} of {trips} round trips, responder answered {answered} of {rounds} rounds"
            ));
        }
        h.check_idle()?;
        let mut ns: Vec<u64> = shared.trip_ns[..trips].iter().map(|s| s.load(Ordering::Relaxed)).collect();
        let total: u64 = ns.iter().sum();
        let cpu = Cpu::checked(shared.cpu[0].0.load().plus(shared.cpu[1].0.load()), lifetime, trips as u64)?;
        Ok(Sample::new(total as f64 / trips as f64 / 1e3)
            .with_percentiles(Percentiles::of(&mut ns, 1e-3))
            .with_cpu(cpu))
    }
}

impl Probe for HandoffProbe {
    fn key(&self) -> Key {
        Key { section: SECTION.slug, mechanism: self.name.to_string(), variant: self.place.name.to_string() }
    }

    fn unit(&self) -> Unit {
        Unit::MicrosPerOp
    }

    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        self.run(TRIPS[usize::from(quick)])
    }
}

/// Python rows: the script's name for the mechanism, its row, ours.
const PYTHON: [(&str, &str, &str); 3] = [
    ("event", "Python multiprocessing.Event", "shmsync Event"),
    ("semaphore", "Python multiprocessing.Semaphore", "shmsync Semaphore"),
    ("condition", "Python multiprocessing.Condition", "shmsync Condition"),
];

fn setup(quick: bool) -> Setup {
    let mut out = Setup::default();
    let py = python::session(&mut out.notes);
    let cpu = |c: Option<usize>| c.map_or("-1".to_string(), |c| c.to_string());
    for place in placements(["cross-core", "same-core", "unpinned"]) {
        for (mech, name) in MECHS {
            out.probes.push(Box::new(HandoffProbe { mech, name, place }));
        }
        if let Some(py) = &py {
            for (kind, name, ours) in PYTHON {
                let trips = TRIPS[usize::from(quick)];
                let args = [
                    "handoff".to_string(),
                    kind.to_string(),
                    cpu(place.initiator),
                    cpu(place.responder),
                    trips.to_string(),
                ];
                out.probes.push(py.probe(SECTION.slug, name, place.name, Unit::MicrosPerOp, ours, &args));
            }
        }
    }
    out
}
