//! Section 6: what `Pool::map` adds per item: `map` of a trivial
//! `fn(u64) -> u64` on 2 workers, in chunks of 1 and of 64, against the same
//! loop in one process (the floor), and Python's `Pool.map` with the same
//! chunk sizes, items and workers beside ours. Each result is checked. µs
//! per item.
//!
//! The pools are long-lived (forked once, as a real pool is), so their
//! workers cannot be reaped between samples for `getrusage`; their CPU time
//! comes from each worker's CPU-time clock (`clock_getcpuclockid`; Python
//! reads `/proc/PID/schedstat`, the same counter), added to the calling
//! process's own.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::common::{process_cpu_ns, CpuTimes};
use crate::model::{Cpu, Key, PlotKind, Probe, Sample, Section, Setup, Unit};
use crate::python;

pub static SECTION: Section = Section {
    slug: "pool",
    title: "Pool.map overhead per item",
    about: "`map` of a trivial function over N items on a pool of 2 workers, forked once (not timed), in \
            chunks of 1 and of 64, against the same loop in one process (the floor); µs per item. Python's \
            `Pool(2).map` runs the same items in the same chunk sizes. CPU/op is the calling process's CPU \
            time plus the workers' per item.",
    plot: PlotKind::Bars,
    baseline: None,
    setup,
};

/// Items per `map` (or loop) in full and quick mode.
const ITEMS: [u64; 2] = [2_000, 200];
const CHUNKS: [usize; 2] = [1, 64];
const WORKERS: usize = 2;

/// How often the floor's loop runs per sample, so that its time is well
/// above the clock's resolution.
const LOOP_REPEATS: u32 = 200;

/// How long one `Pool::map` may take before the study gives up: an `alarm`
/// ends the whole study (the workers die with it, by `PR_SET_PDEATHSIG`).
const MAP_DEADLINE: Duration = Duration::from_secs(60);

/// The trivial task.
fn double(x: u64) -> u64 {
    x.wrapping_mul(2)
}

/// Checks that `out` is `double` of `0..items`, in order.
fn check_doubled(out: &[u64], items: u64) -> Result<(), String> {
    if out.len() as u64 != items {
        return Err(format!("got {} results for {items} items", out.len()));
    }
    match out.iter().enumerate().find(|&(i, &r)| r != double(i as u64)) {
        Some((i, r)) => Err(format!("item {i}: got {r}, expected {}", double(i as u64))),
        None => Ok(()),
    }
}

/// The floor: the same function over the same items in a loop, in one
/// process.
struct LoopProbe;

impl Probe for LoopProbe {
    fn key(&self) -> Key {
        Key { section: SECTION.slug, mechanism: "plain loop".into(), variant: "1 process".into() }
    }
    fn unit(&self) -> Unit {
        Unit::MicrosPerOp
    }
    fn is_floor(&self) -> bool {
        true
    }
    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        let items = ITEMS[usize::from(quick)];
        let cpu0 = CpuTimes::this_process();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for _ in 0..LOOP_REPEATS {
            out = (0..items).map(|x| double(black_box(x))).collect::<Vec<_>>();
            black_box(&out);
        }
        let span = t0.elapsed();
        let cpu = CpuTimes::this_process().since(cpu0);
        check_doubled(&out, items)?;
        let ops = items * u64::from(LOOP_REPEATS);
        Ok(Sample::new(span.as_secs_f64() * 1e6 / ops as f64).with_cpu(Cpu::per_op(cpu, ops)))
    }
}

/// `Pool::map` with a given chunk size on a pool of [`WORKERS`] workers,
/// forked once when the probe is made, as a long-lived pool is.
struct PoolProbe {
    pool: shmsync::Pool,
    chunk: usize,
}

impl PoolProbe {
    /// The CPU time so far of the workers `pids`, ns.
    fn workers_cpu(pids: &[u32]) -> Result<u64, String> {
        pids.iter().map(|&p| process_cpu_ns(p as libc::pid_t)).sum()
    }
}

impl Probe for PoolProbe {
    fn key(&self) -> Key {
        Key {
            section: SECTION.slug,
            mechanism: format!("shmsync Pool::map, chunk {}", self.chunk),
            variant: format!("{WORKERS} workers"),
        }
    }
    fn unit(&self) -> Unit {
        Unit::MicrosPerOp
    }
    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        let items = ITEMS[usize::from(quick)];
        let pids = self.pool.pids();
        if pids.len() != WORKERS {
            return Err(format!("the pool has {} workers, expected {WORKERS}", pids.len()));
        }
        let workers0 = PoolProbe::workers_cpu(&pids)?;
        let cpu0 = CpuTimes::this_process();
        // SAFETY: alarm only arms this process's timer; its default action
        // ends the study, loudly, if `map` ever hangs.
        unsafe { libc::alarm(MAP_DEADLINE.as_secs() as libc::c_uint) };
        let t0 = Instant::now();
        let out = self.pool.map_chunked(double, 0..items, self.chunk);
        let span = t0.elapsed();
        // SAFETY: as above; 0 disarms the timer.
        unsafe { libc::alarm(0) };
        let own = CpuTimes::this_process().since(cpu0).total_ns();
        let workers = PoolProbe::workers_cpu(&pids)?.saturating_sub(workers0);
        if self.pool.pids() != pids {
            return Err("a worker was replaced during the map".into());
        }
        let out = out.map_err(|e| format!("Pool::map: {e}"))?;
        check_doubled(&out, items)?;
        Ok(Sample::new(span.as_secs_f64() * 1e6 / items as f64).with_cpu(Cpu::total_per_op(own + workers, items)))
    }
}

impl Drop for PoolProbe {
    fn drop(&mut self) {
        self.pool.close();
        if !matches!(self.pool.join_timeout(Duration::from_secs(10)), Ok(true)) {
            self.pool.terminate();
        }
    }
}

fn setup(quick: bool) -> Setup {
    let mut out = Setup::default();
    out.probes.push(Box::new(LoopProbe));
    for chunk in CHUNKS {
        let pool = shmsync::Pool::new(WORKERS).expect("Pool::new");
        out.probes.push(Box::new(PoolProbe { pool, chunk }));
    }
    if let Some(py) = python::session(&mut out.notes) {
        for chunk in CHUNKS {
            let items = ITEMS[usize::from(quick)];
            let args = ["pool".to_string(), WORKERS.to_string(), chunk.to_string(), items.to_string()];
            let name = format!("Python Pool.map, chunk {chunk}");
            let ours = format!("shmsync Pool::map, chunk {chunk}");
            let variant = format!("{WORKERS} workers");
            out.probes.push(py.probe(SECTION.slug, &name, &variant, Unit::MicrosPerOp, &ours, &args));
        }
    }
    out
}
