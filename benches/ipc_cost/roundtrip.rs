//! Section 5: a message's round trip between two processes, one message in
//! flight: the latency a request/response pays, with p50, p99 and p99.9 of
//! the individual trips, through the same mechanisms as section 4 (two of
//! each, one per direction), at 64 B and 16 KiB, and Python's
//! `multiprocessing.Queue` and `Pipe` beside ours.
//!
//! `common::messages::round_trips` forks a responder that echoes each
//! message and an initiator that times each trip with one clock read; every
//! echo is checked. CPU/op is both processes' CPU time per round trip.

use crate::common::messages::{round_trips, Mechanism, Shared};
use crate::common::Mapping;
use crate::messages::{LIMITS, MECHANISMS, PYTHON, TUNED_PIPE};
use crate::model::{size_label, Cpu, Key, Percentiles, PlotKind, Probe, Sample, Section, Setup, Unit};
use crate::python;

pub static SECTION: Section = Section {
    slug: "roundtrip",
    title: "Message round trip between two processes",
    about: "A forked initiator sends a message and waits for a forked responder to echo it back, one message \
            in flight (both unpinned); µs per round trip, with p50/p99/p99.9 of the individual trips (one \
            clock read per trip). The mechanisms of section 4, two of each (one per direction). CPU/op is both \
            processes' CPU time per round trip; **× tuned pipe** is the tuned pipe's time over the row's \
            (above 1: faster).",
    plot: PlotKind::Bars,
    baseline: Some(TUNED_PIPE),
    setup,
};

/// The payload sizes.
const SIZES: [usize; 2] = [64, 16 << 10];
/// Timed round trips per sample, full and quick (Python's too).
const TRIPS: [usize; 2] = [2000, 200];

struct RoundTripProbe {
    there: Box<dyn Mechanism>,
    back: Box<dyn Mechanism>,
    name: &'static str,
    size: usize,
    map: Mapping<Shared>,
}

impl Probe for RoundTripProbe {
    fn key(&self) -> Key {
        Key { section: SECTION.slug, mechanism: self.name.to_string(), variant: size_label(self.size) }
    }
    fn unit(&self) -> Unit {
        Unit::MicrosPerOp
    }
    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        let trips = TRIPS[usize::from(quick)];
        let mut out = round_trips(&*self.there, &*self.back, self.map.shared(), self.size, trips, &LIMITS, "")?;
        let total: u64 = out.trip_ns.iter().sum();
        Ok(Sample::new(total as f64 / trips as f64 / 1e3)
            .with_percentiles(Percentiles::of(&mut out.trip_ns, 1e-3))
            .with_cpu(Cpu::checked(out.cpu, out.cpu_lifetime, trips as u64)?))
    }
}

fn setup(quick: bool) -> Setup {
    let mut out = Setup::default();
    let py = python::session(&mut out.notes);
    for size in SIZES {
        for (kind, name) in MECHANISMS {
            let (there, back) = (kind.make(size), kind.make(size));
            out.probes.push(Box::new(RoundTripProbe { there, back, name, size, map: Mapping::new() }));
        }
        if let Some(py) = &py {
            for (kind, name, ours) in PYTHON {
                let trips = TRIPS[usize::from(quick)];
                let args = ["roundtrip".to_string(), kind.to_string(), size.to_string(), trips.to_string()];
                out.probes.push(py.probe(SECTION.slug, name, &size_label(size), Unit::MicrosPerOp, ours, &args));
            }
        }
    }
    out
}
