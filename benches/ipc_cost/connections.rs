//! A section of the study: messages per second through connections made
//! by address, `Listener`/`Client`, beside what they are built on and
//! beside Python's `multiprocessing.connection` over the same transports.
//!
//! Rows, each at 64 B and 4 KiB:
//! - `shmsync Connection (socketpair)`: `shmsync::pipe()`, the Unix floor;
//! - `shmsync Listener/Client (Unix)`: a `Listener` on an abstract Unix
//!   name, authenticated, `send_bytes` / `recv_bytes`;
//! - `TcpStream (framed)`: a plain `TcpStream` pair carrying the same
//!   frames, the TCP floor;
//! - `shmsync Listener/Client (TCP)`: the same over 127.0.0.1;
//! - `Python connection.Listener/Client (Unix)` and `(TCP)`: Python's, run
//!   by `mp_connection.py` beside this file, when `python3` is on `PATH`.
//!
//! A sample is `benches/common/messages.rs`'s `stream` (a forked producer
//! to a forked consumer, every message checked and counted), as section 4's
//! are; connections are made and authenticated before the forks.

use std::time::Duration;

use crate::common::connections::{listener_pair, TcpFramed};
use crate::common::messages::{stream, Kind, Limits, Mechanism, Shared, StreamSpec};
use crate::common::Mapping;
use crate::model::{Key, PlotKind, Probe, Sample, Section, Setup, Unit};

pub static SECTION: Section = Section {
    slug: "connections",
    title: "Connections by address: Listener/Client",
    about: "Messages per second through connections made by address (`Listener`/`Client`, authenticated), \
            over an abstract Unix name and TCP loopback, beside the socketpair `Connection` and a plain framed \
            `TcpStream` carrying the same frames, and Python's `multiprocessing.connection` over the same \
            transports. A sample is a forked producer to a forked consumer, every message checked.",
    plot: PlotKind::Bars,
    baseline: None,
    setup,
};

const LIMITS: Limits = Limits { deadline: Duration::from_secs(30), grace: Duration::from_secs(5) };

/// Sizes, variant labels, and messages per sample in full and quick mode.
const SIZES: [(&str, usize, u64, u64); 2] = [("64 B", 64, 50_000, 2_000), ("4 KiB", 4096, 20_000, 1_000)];

struct RateProbe {
    mechanism: Box<dyn Mechanism>,
    name: &'static str,
    variant: &'static str,
    size: usize,
    count: (u64, u64),
    map: Mapping<Shared>,
    floor: bool,
}

impl Probe for RateProbe {
    fn key(&self) -> Key {
        Key { section: SECTION.slug, mechanism: self.name.into(), variant: self.variant.into() }
    }
    fn unit(&self) -> Unit {
        Unit::MsgsPerSec
    }
    fn is_floor(&self) -> bool {
        self.floor
    }
    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        let iters = if quick { self.count.1 } else { self.count.0 };
        let spec = StreamSpec { size: self.size, producers: 1, per_producer: iters };
        let out = stream(&*self.mechanism, self.map.shared(), spec, &LIMITS, "")?;
        if out.span.is_zero() {
            return Err("the consumer reported no time".into());
        }
        Ok(Sample::new(iters as f64 / out.span.as_secs_f64()))
    }
}

/// Python's `multiprocessing.connection`, one subprocess per sample.
struct PyProbe {
    family: &'static str,
    name: &'static str,
    variant: &'static str,
    size: usize,
}

impl Probe for PyProbe {
    fn counterpart(&self) -> Option<String> {
        Some(self.name.replace("Python connection.", "shmsync "))
    }
    fn key(&self) -> Key {
        Key { section: SECTION.slug, mechanism: self.name.into(), variant: self.variant.into() }
    }
    fn unit(&self) -> Unit {
        Unit::MsgsPerSec
    }
    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        let size = self.size.to_string();
        let mut args = vec![self.family, size.as_str()];
        if quick {
            args.push("quick");
        }
        let v = crate::python::run_json("mp_connection.py", &args)?;
        let value = v["value"].as_f64().filter(|x| x.is_finite() && *x > 0.0);
        let value = value.ok_or_else(|| format!("mp_connection.py gave no positive value: {v}"))?;
        Ok(Sample::new(value))
    }
}

/// The section's probes. Everything is made here, before any fork.
fn setup(_quick: bool) -> Setup {
    let (probes, notes) = probes();
    Setup { probes, notes }
}

fn probes() -> (Vec<Box<dyn Probe>>, Vec<String>) {
    let mut probes: Vec<Box<dyn Probe>> = Vec::new();
    let mut notes = Vec::new();
    let python = crate::python::available();
    if let Err(why) = &python {
        notes.push(format!("Python was not measured: {why}"));
    }
    for (i, (variant, size, full, quick)) in SIZES.into_iter().enumerate() {
        let name = format!("@shmsync-ipc-cost-{}-{i}", std::process::id());
        let rows: [(&'static str, Box<dyn Mechanism>, bool); 4] = [
            ("shmsync Connection (socketpair)", Kind::Connection.make(size), true),
            ("shmsync Listener/Client (Unix)", Box::new(listener_pair(&name)), false),
            ("TcpStream (framed)", Box::new(TcpFramed::new()), false),
            ("shmsync Listener/Client (TCP)", Box::new(listener_pair("127.0.0.1:0")), false),
        ];
        for (row, mechanism, floor) in rows {
            let probe =
                RateProbe { mechanism, name: row, variant, size, count: (full, quick), map: Mapping::new(), floor };
            probes.push(Box::new(probe));
        }
        if python.is_ok() {
            probes.push(Box::new(PyProbe {
                family: "unix",
                name: "Python connection.Listener/Client (Unix)",
                variant,
                size,
            }));
            probes.push(Box::new(PyProbe {
                family: "tcp",
                name: "Python connection.Listener/Client (TCP)",
                variant,
                size,
            }));
        }
    }
    (probes, notes)
}
