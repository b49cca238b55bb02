//! The shared vocabulary of the IPC-cost study: what a measurement is, and
//! the `Probe` every mechanism implements. The harness (`main.rs`) runs the
//! probes of a section round by round, interleaved, so a noisy neighbour
//! hurts them all alike; the probes (`primitives.rs`, `messages.rs`) only
//! know how to take one sample.

use std::fmt;

/// The study's sections, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Section {
    /// 1. Uncontended acquire+release, ns per pair.
    Uncontended,
    /// 2. Handoff round trip between two processes, µs.
    Handoff,
    /// 3. Contended throughput, total Mops/s, at 1, 2, 4 and 8 processes.
    Contended,
    /// 4. Message rate between two processes, messages/s, at 64 B and 4 KiB.
    Messages,
    /// 5. `Pool::map` overhead per item, µs, against a plain loop.
    PoolOverhead,
    /// 6. Python's multiprocessing, same measurements where they exist.
    Python,
    /// 7. Across hosts: the etcd Lock against one etcd put (`etcd` feature).
    Etcd,
}

impl Section {
    /// Every section, in order.
    pub const ALL: [Section; 7] = [
        Section::Uncontended,
        Section::Handoff,
        Section::Contended,
        Section::Messages,
        Section::PoolOverhead,
        Section::Python,
        Section::Etcd,
    ];

    /// The heading in the report.
    pub fn title(self) -> &'static str {
        match self {
            Section::Uncontended => "1. Uncontended acquire + release",
            Section::Handoff => "2. Handoff round trip between two processes",
            Section::Contended => "3. Contended throughput",
            Section::Messages => "4. Message rate between two processes",
            Section::PoolOverhead => "5. Pool.map overhead per item",
            Section::Python => "6. Python multiprocessing, for comparison",
            Section::Etcd => "7. Across hosts: the etcd Lock",
        }
    }
}

/// What a sample's number means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Unit {
    /// Nanoseconds per operation (lower is better).
    NanosPerOp,
    /// Microseconds per operation (lower is better).
    MicrosPerOp,
    /// Millions of operations per second, all processes together (higher is better).
    MopsPerSec,
    /// Messages per second (higher is better).
    MsgsPerSec,
}

impl Unit {
    /// Whether a larger number is better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Unit::MopsPerSec | Unit::MsgsPerSec)
    }

    /// The unit's label in tables.
    pub fn label(self) -> &'static str {
        match self {
            Unit::NanosPerOp => "ns/op",
            Unit::MicrosPerOp => "µs/op",
            Unit::MopsPerSec => "Mops/s",
            Unit::MsgsPerSec => "msg/s",
        }
    }
}

/// Identifies one row of a section's table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Key {
    pub section: Section,
    /// The mechanism, e.g. "shmsync Semaphore", "pipe", "raw_sync Mutex".
    pub mechanism: String,
    /// The condition, e.g. "cross-core", "4 procs", "64 B"; empty if none.
    pub variant: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.variant.is_empty() {
            write!(f, "{}", self.mechanism)
        } else {
            write!(f, "{} [{}]", self.mechanism, self.variant)
        }
    }
}

/// One sample of one probe: a number in the probe's unit, and, for
/// latencies measured per operation, the per-operation percentiles if the
/// probe recorded them (p50, p99 in the same unit).
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub value: f64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// A mechanism under test in one condition. `sample` runs one round of it
/// (forking what it needs, waiting for everything it started) and returns
/// one number; it must check its own result (counts exact, every handoff
/// answered) and return `Err` with a clear message if a check fails. Every
/// wait inside is bounded, so a bug gives `Err` (or a panic), never a hang.
/// Nothing may be left behind: no process, nothing in /dev/shm.
pub trait Probe {
    /// The row this probe fills.
    fn key(&self) -> Key;
    /// The unit of its samples.
    fn unit(&self) -> Unit;
    /// Whether this is the floor of its section (the bare atomic), used for
    /// the "× floor" column.
    fn is_floor(&self) -> bool {
        false
    }
    /// Takes one sample. `quick` asks for a short round (IPC_COST_QUICK=1):
    /// the whole study must then finish in under 60 s.
    fn sample(&mut self, quick: bool) -> Result<Sample, String>;
}
