//! The shared vocabulary of the IPC-cost study: what a section is, what a
//! measurement is, and the `Probe` every mechanism implements. The harness
//! (`main.rs`) runs the probes of a section round by round, interleaved, so
//! a noisy neighbour hurts them all alike; the probes only know how to take
//! one sample.

use std::fmt;

use crate::common::CpuTimes;

/// A section of the study: one table, one plot, one module that makes its
/// probes. The sections and their order are [`crate::sections::ALL`].
pub struct Section {
    /// The short name, for filters, file names and the JSON report.
    pub slug: &'static str,
    /// The heading, without its number (the number is the position).
    pub title: &'static str,
    /// What the section measures and how, for the report (markdown).
    pub about: &'static str,
    /// How its plot draws it.
    pub plot: PlotKind,
    /// The mechanism every row is also compared with, in a column of its
    /// own ("× tuned pipe"), when the section has one.
    pub baseline: Option<&'static str>,
    /// Makes its probes, once per run, before any of them samples; the
    /// argument is the quick mode. Notes go under the heading (say why a row
    /// is missing: "Python was not measured: ..."). A panic here fails the
    /// study, naming the section.
    pub setup: fn(bool) -> Setup,
}

/// What a section's `setup` made.
#[derive(Default)]
pub struct Setup {
    pub probes: Vec<Box<dyn Probe>>,
    pub notes: Vec<String>,
}

/// How a section's plot draws its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlotKind {
    /// A horizontal bar per row, grouped by variant.
    Bars,
    /// A line per mechanism over its variants, which are payload sizes
    /// (as [`size_label`] writes them), on log–log axes.
    SizeSweep,
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

    /// The wall time of one operation, in ns, that `value` in this unit means.
    pub fn wall_ns_per_op(self, value: f64) -> f64 {
        match self {
            Unit::NanosPerOp => value,
            Unit::MicrosPerOp => value * 1e3,
            Unit::MopsPerSec => 1e3 / value,
            Unit::MsgsPerSec => 1e9 / value,
        }
    }
}

/// A payload size as the report writes it: `64 B`, `16 KiB`, `1 MiB`.
pub fn size_label(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// The bytes a [`size_label`] names, if it is one.
pub fn parse_size(label: &str) -> Option<usize> {
    let (n, unit) = label.split_once(' ')?;
    let n: usize = n.parse().ok()?;
    match unit {
        "B" => Some(n),
        "KiB" => Some(n << 10),
        "MiB" => Some(n << 20),
        _ => None,
    }
}

/// Identifies one row of a section's table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Key {
    /// The section's slug.
    pub section: &'static str,
    /// The mechanism, e.g. "shmsync Semaphore", "tuned pipe".
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

/// Per-operation percentiles of one sample, in the probe's unit.
#[derive(Clone, Copy, Debug)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

impl Percentiles {
    /// The percentiles of `ns` (sorted in place), converted by `scale`
    /// (e.g. 1e-3 for µs). Nearest rank: the smallest value with at least
    /// that share of the values at or below it.
    pub fn of(ns: &mut [u64], scale: f64) -> Percentiles {
        assert!(!ns.is_empty(), "percentiles of nothing");
        ns.sort_unstable();
        let n = ns.len();
        let at = |p: f64| ns[((p * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 * scale;
        Percentiles { p50: at(0.50), p99: at(0.99), p999: at(0.999) }
    }
}

/// The CPU time one sample cost per operation.
#[derive(Clone, Copy, Debug)]
pub struct Cpu {
    /// User plus system time per operation, all processes together, ns.
    pub ns_per_op: f64,
    /// The share of it spent in the kernel, when known.
    pub sys_share: Option<f64>,
}

impl Cpu {
    /// From the CPU time of the timed windows of all the processes
    /// involved, for `ops` operations.
    pub fn per_op(window: CpuTimes, ops: u64) -> Cpu {
        let total = window.total_ns();
        let sys_share = (total > 0).then(|| window.sys_ns as f64 / total as f64);
        Cpu { ns_per_op: total as f64 / ops.max(1) as f64, sys_share }
    }

    /// From a total whose split into user and system time is not known.
    pub fn total_per_op(total_ns: u64, ops: u64) -> Cpu {
        Cpu { ns_per_op: total_ns as f64 / ops.max(1) as f64, sys_share: None }
    }

    /// Checks `window_ns`, the CPU time the children reported for their
    /// timed windows, against their whole lives as the parent's
    /// `getrusage(RUSAGE_CHILDREN)` saw them: a window longer than its
    /// process's life means a child reported nonsense.
    pub fn check_within(window_ns: u64, lifetime: CpuTimes) -> Result<(), String> {
        let l = lifetime.total_ns();
        // Slack for getrusage's microsecond rounding, a few readings' worth.
        if window_ns > l + l / 50 + 2_000_000 {
            return Err(format!(
                "the children's timed windows add up to {:.3} ms of CPU, more than their whole lives' {:.3} ms",
                window_ns as f64 / 1e6,
                l as f64 / 1e6
            ));
        }
        Ok(())
    }

    /// [`Cpu::per_op`] after [`Cpu::check_within`].
    pub fn checked(window: CpuTimes, lifetime: CpuTimes, ops: u64) -> Result<Cpu, String> {
        Cpu::check_within(window.total_ns(), lifetime)?;
        Ok(Cpu::per_op(window, ops))
    }
}

/// How evenly a contended lock served its processes, from the order of its
/// acquisitions in one sample.
#[derive(Clone, Copy, Debug)]
pub struct Fairness {
    /// The smallest and largest share of all acquisitions that one process
    /// took (1/P each if fair).
    pub share_min: f64,
    pub share_max: f64,
    /// The most consecutive acquisitions by one process.
    pub longest_run: u64,
    /// Acquisitions per change of holder, on average.
    pub mean_run: f64,
}

impl Fairness {
    /// From the holder of every acquisition, in order, among `procs` processes.
    pub fn of(order: &[u8], procs: usize) -> Fairness {
        let mut counts = vec![0u64; procs];
        let (mut longest, mut run, mut runs) = (0u64, 0u64, 0u64);
        let mut prev = None;
        for &who in order {
            counts[who as usize] += 1;
            if prev == Some(who) {
                run += 1;
            } else {
                runs += 1;
                run = 1;
                prev = Some(who);
            }
            longest = longest.max(run);
        }
        let total = order.len().max(1) as f64;
        let share = |c: &u64| *c as f64 / total;
        Fairness {
            share_min: counts.iter().map(share).fold(f64::INFINITY, f64::min),
            share_max: counts.iter().map(share).fold(0.0, f64::max),
            longest_run: longest,
            mean_run: order.len() as f64 / runs.max(1) as f64,
        }
    }
}

/// One sample of one probe: a number in the probe's unit, and what else the
/// probe measured in the same run.
#[derive(Clone, Debug)]
pub struct Sample {
    pub value: f64,
    /// Per-operation percentiles, for probes that time each operation.
    pub percentiles: Option<Percentiles>,
    /// CPU time per operation.
    pub cpu: Option<Cpu>,
    /// For contended locks.
    pub fairness: Option<Fairness>,
}

impl Sample {
    pub fn new(value: f64) -> Sample {
        Sample { value, percentiles: None, cpu: None, fairness: None }
    }

    pub fn with_cpu(mut self, cpu: Cpu) -> Sample {
        self.cpu = Some(cpu);
        self
    }

    pub fn with_percentiles(mut self, p: Percentiles) -> Sample {
        self.percentiles = Some(p);
        self
    }

    pub fn with_fairness(mut self, f: Fairness) -> Sample {
        self.fairness = Some(f);
        self
    }
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
    /// The mechanism of the shmsync row of the same section and variant that
    /// this row is the counterpart of, for the report's "Python vs shmsync"
    /// table (a Python row names ours).
    fn counterpart(&self) -> Option<String> {
        None
    }
    /// Takes one sample. `quick` asks for a short round (IPC_COST_QUICK=1):
    /// the whole study must then finish in under 60 s.
    fn sample(&mut self, quick: bool) -> Result<Sample, String>;
}
