//! A section of the IPC-cost study: reader-writer locks. shmsync's robust
//! `RwLock` against a process-shared `pthread_rwlock_t`, raw_sync's `RwLock`
//! (the same pthread rwlock, neither survives a killed holder) and, for the
//! write side, shmsync's `Lock`:
//!
//! - `read` / `write`: one process, N uncontended lock+unlock pairs, ns per
//!   pair (the bars: read at most 1.5x the pthread rwlock, write at
//!   most 1.3x shmsync's Lock);
//! - `1 proc` / `2 procs`: read pairs per second, all processes together,
//!   each process pinned to its own CPU when there are enough (the bar:
//!   2 procs at least 1.6x 1 proc). The floor rows take the same pairs on a
//!   word private to each process: what this machine allows with nothing
//!   shared, so a VM whose vCPUs share a core shows it here;
//! - `write vs 4 readers`: a writer's lock+unlock while four processes read
//!   in a loop, µs per write (shmsync only: glibc's default rwlock prefers
//!   readers, and a writer there may wait forever).
//!
//! The mechanisms and samples are `benches/common/rwlock.rs`, shared with
//! `cargo bench --bench rwlock`.

use std::time::Duration;

use crate::common::rwlock::{readers, uncontended, writes_against_readers, Instance, Mech, Side};
use crate::model::{Key, PlotKind, Probe, Sample, Section, Setup, Unit};

pub static SECTION: Section = Section {
    slug: "rwlock",
    title: "RwLock: readers and writers",
    about: "Reader-writer locks: shmsync's robust `RwLock` against a process-shared `pthread_rwlock_t` and \
            raw_sync's `RwLock` (neither survives a killed holder), and shmsync's `Lock` for the write side. \
            Uncontended read and write pairs (ns), read pairs per second from 1 and 2 processes (each pinned \
            to its own CPU when there are enough; the floor rows take the same pairs on a private word, what \
            the machine allows with nothing shared), and a writer's lock+unlock while four processes read in \
            a loop (µs; shmsync only, since glibc's default rwlock prefers readers and a writer there may wait \
            forever).",
    plot: PlotKind::Bars,
    baseline: None,
    setup,
};

/// What one uncontended sample should take, full and quick.
const TARGET: [Duration; 2] = [Duration::from_millis(30), Duration::from_millis(2)];
const CALIBRATION_PAIRS: u64 = 20_000;
/// Read pairs per process in a scaling sample, full and quick.
const SCALING_PAIRS: [u64; 2] = [2_000_000, 100_000];
/// Writes in a sample against looping readers, full and quick.
const WRITES: [u64; 2] = [20_000, 1_000];

enum Kind {
    Uncontended { side: Side, pairs: [Option<u64>; 2] },
    Scaling { procs: usize },
    WritesVsReaders,
}

struct RwProbe {
    mech: Mech,
    kind: Kind,
}

fn make(mech: Mech) -> Result<Instance, String> {
    Instance::new(mech).map_err(|e| format!("{}: creating it failed: {e}", mech.name()))
}

impl Probe for RwProbe {
    fn key(&self) -> Key {
        let variant = match &self.kind {
            Kind::Uncontended { side: Side::Read, .. } => "read".to_string(),
            Kind::Uncontended { side: Side::Write, .. } => "write".to_string(),
            Kind::Scaling { procs: 1 } => "1 proc".to_string(),
            Kind::Scaling { procs } => format!("{procs} procs"),
            Kind::WritesVsReaders => "write vs 4 readers".to_string(),
        };
        Key { section: SECTION.slug, mechanism: self.mech.name().to_string(), variant }
    }

    fn unit(&self) -> Unit {
        match self.kind {
            Kind::Uncontended { .. } => Unit::NanosPerOp,
            Kind::Scaling { .. } => Unit::MopsPerSec,
            Kind::WritesVsReaders => Unit::MicrosPerOp,
        }
    }

    fn is_floor(&self) -> bool {
        self.mech == Mech::Floor
    }

    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        let mode = usize::from(quick);
        let value = match &mut self.kind {
            Kind::Uncontended { side, pairs } => {
                let side = *side;
                let n = match pairs[mode] {
                    Some(n) => n,
                    None => {
                        let span = uncontended(&make(self.mech)?, side, CALIBRATION_PAIRS / 10, CALIBRATION_PAIRS)?;
                        let per_pair = span.as_secs_f64() / CALIBRATION_PAIRS as f64;
                        let n = ((TARGET[mode].as_secs_f64() / per_pair.max(1e-10)) as u64).clamp(10_000, 50_000_000);
                        pairs[mode] = Some(n);
                        n
                    }
                };
                let span = uncontended(&make(self.mech)?, side, n / 10, n)?;
                span.as_nanos() as f64 / n as f64
            }
            Kind::Scaling { procs } => {
                let n = SCALING_PAIRS[mode];
                let span = readers(&make(self.mech)?, *procs, n)?;
                (*procs as u64 * n) as f64 / span.as_secs_f64() / 1e6
            }
            Kind::WritesVsReaders => {
                let n = WRITES[mode];
                let span = writes_against_readers(&make(self.mech)?, 4, n)?;
                span.as_secs_f64() * 1e6 / n as f64
            }
        };
        Ok(Sample::new(value))
    }
}

fn setup(_quick: bool) -> Setup {
    Setup { probes: probes(), notes: Vec::new() }
}

/// The section's probes.
fn probes() -> Vec<Box<dyn Probe>> {
    let mut probes: Vec<Box<dyn Probe>> = Vec::new();
    let uncontended = |side| Kind::Uncontended { side, pairs: [None; 2] };
    for mech in Mech::READERS {
        probes.push(Box::new(RwProbe { mech, kind: uncontended(Side::Read) }));
    }
    for mech in Mech::WRITERS {
        probes.push(Box::new(RwProbe { mech, kind: uncontended(Side::Write) }));
    }
    for procs in [1, 2] {
        for mech in Mech::READERS {
            probes.push(Box::new(RwProbe { mech, kind: Kind::Scaling { procs } }));
        }
    }
    probes.push(Box::new(RwProbe { mech: Mech::Shmsync, kind: Kind::WritesVsReaders }));
    probes
}
