//! # What does IPC cost? The ipc_cost study
//!
//! One command measures what coordination between processes costs on this
//! machine, shmsync's primitives side by side with the alternatives:
//!
//! 1. uncontended acquire + release (ns per pair);
//! 2. handoff round trip between two processes (µs; cross-core, one core,
//!    unpinned; p50 and p99);
//! 3. contended throughput at 1, 2, 4 and 8 processes (total Mops/s);
//! 4. message rate between two processes at 64 B and 4 KiB (msg/s):
//!    `Queue`, `Connection`, a raw Unix socket, ipc-channel;
//! 5. `Pool::map` overhead per item (µs), against a plain loop;
//! 6. Python's `multiprocessing` `Lock`, `Event` round trip and `Pipe`, run
//!    by the `mp_bench.py` script beside this file, when `python3` is on
//!    `PATH` (the report says so when it is not);
//! 7. across hosts: the etcd Lock's lock + unlock against one etcd put,
//!    with `--features etcd` and `etcd` on `PATH` (see `etcd.rs`).
//!
//! Run: `cargo bench --bench ipc_cost` (about 5 to 8 minutes). One section
//! only: `cargo bench --bench ipc_cost -- handoff` (a filter matches a
//! section's short name — uncontended, handoff, contended, messages, pool,
//! python — or part of its title). `IPC_COST_QUICK=1` makes a smoke run of
//! every measurement in under a minute, which CI runs so the study can't
//! rot; its numbers are not for quoting.
//!
//! Within a section the mechanisms take turns: each round runs every probe
//! once, starting one further along each round, so a noisy neighbour hurts
//! them all alike. A section runs rounds until it has enough (or its time
//! budget is spent); every probe gets the same number. Each probe checks its
//! own result (counts exact, every handoff answered) and bounds every wait;
//! a failed check or an overrun stops the study with a non-zero exit, naming
//! the probe. Nothing is left running or in /dev/shm.
//!
//! The report goes to `target/ipc-cost/` (under `CARGO_TARGET_DIR` if set):
//! `report.md` (a header naming the machine, a "Python vs shmsync" table and
//! a table per section), `report.json` (the same figures and every run's
//! value) and one SVG plot per section.
//!
//! Reading it: the ratios are the headline, the absolute numbers are this
//! machine's. "× floor" is how many times worse a row is than the bare
//! mechanism at the bottom of its section, "× best" how many times worse
//! than the best row of the same variant; both are 1.00 at best and larger
//! is always worse, whichever way the unit points.

#![warn(clippy::undocumented_unsafe_blocks)]

#[path = "../common/mod.rs"]
mod common;
mod etcd;
mod messages;
mod model;
mod plot;
mod primitives;
mod python;
mod report;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use model::{Probe, Section};
use report::{Machine, Report, RowData, SectionData};

/// How many rounds a section runs: at least `min`, then more while its
/// time budget lasts, at most `max`.
struct Rounds {
    min: usize,
    max: usize,
    budget: Duration,
}

fn rounds(quick: bool) -> Rounds {
    if quick {
        Rounds { min: 5, max: 5, budget: Duration::ZERO }
    } else {
        Rounds { min: 7, max: 31, budget: Duration::from_secs(50) }
    }
}

/// A section's short name, for filters and file names.
pub fn slug(section: Section) -> &'static str {
    match section {
        Section::Uncontended => "uncontended",
        Section::Handoff => "handoff",
        Section::Contended => "contended",
        Section::Messages => "messages",
        Section::PoolOverhead => "pool",
        Section::Python => "python",
        Section::Etcd => "etcd",
    }
}

/// The sections the command line asks for: all without a filter; else those
/// whose short name equals a filter, or failing that contains it or whose
/// title does. Flags (cargo passes `--bench`) are ignored.
fn selected(args: &[String]) -> Result<Vec<Section>, String> {
    let filters: Vec<String> = args.iter().filter(|a| !a.starts_with('-')).map(|a| a.to_lowercase()).collect();
    if filters.is_empty() {
        return Ok(Section::ALL.to_vec());
    }
    let matches = |s: Section, f: &str| {
        if Section::ALL.iter().any(|&t| slug(t) == f) {
            slug(s) == f
        } else {
            slug(s).contains(f) || s.title().to_lowercase().contains(f)
        }
    };
    let chosen: Vec<Section> = Section::ALL.into_iter().filter(|&s| filters.iter().any(|f| matches(s, f))).collect();
    if chosen.is_empty() {
        let names: Vec<&str> = Section::ALL.iter().map(|&s| slug(s)).collect();
        return Err(format!("no section matches {filters:?}; the sections are {}", names.join(", ")));
    }
    Ok(chosen)
}

/// Turns a panic's payload into its message.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

/// A section's probes.
type Probes = Vec<Box<dyn Probe>>;

/// Makes a section's probes, with notes for the report. A panic while
/// making them is an error.
fn probes(section: Section) -> Result<(Probes, Vec<String>), String> {
    let make = || -> (Probes, Vec<String>) {
        match section {
            Section::Uncontended => (primitives::uncontended_probes(), vec![]),
            Section::Handoff => (primitives::handoff_probes(), vec![]),
            Section::Contended => (primitives::contended_probes(), vec![]),
            Section::Messages => (messages::message_probes(), vec![]),
            Section::PoolOverhead => (messages::pool_probes(), vec![]),
            Section::Python => match python::available() {
                Ok(()) => (python::probes(), vec![]),
                Err(why) => (vec![], vec![format!("Python was not measured: {why}")]),
            },
            Section::Etcd => etcd::probes(),
        }
    };
    catch_unwind(AssertUnwindSafe(make))
        .map_err(|p| format!("setting up section \"{}\" panicked: {}", section.title(), panic_message(&*p)))
}

/// Runs a section's rounds, its probes taking turns, and collects every
/// sample. The first failure ends the section with an error naming the
/// probe.
fn run_section(section: Section, quick: bool, bar: &ProgressBar) -> Result<SectionData, String> {
    let started = Instant::now();
    let (mut probes, mut notes) = probes(section)?;
    let n = probes.len();
    if n == 0 && notes.is_empty() {
        notes.push("No probes in this build.".into());
    }
    let plan = rounds(quick);
    let mut samples = vec![Vec::new(); n];
    bar.set_length((plan.max * n) as u64);
    bar.set_position(0);
    let mut done = 0;
    while n > 0 && done < plan.max && (done < plan.min || started.elapsed() < plan.budget) {
        for j in 0..n {
            let i = (done + j) % n;
            let probe = &mut probes[i];
            let key = probe.key();
            bar.set_message(format!("round {}: {key}", done + 1));
            let outcome = catch_unwind(AssertUnwindSafe(|| probe.sample(quick)))
                .unwrap_or_else(|p| Err(format!("panicked: {}", panic_message(&*p))));
            let sample = outcome.and_then(|s| {
                if s.value.is_finite() && s.value > 0.0 {
                    Ok(s)
                } else {
                    Err(format!("gave the value {}, not a positive number", s.value))
                }
            });
            let sample = sample.map_err(|e| {
                format!("probe \"{key}\" (section \"{}\") failed in round {}: {e}", section.title(), done + 1)
            })?;
            samples[i].push(sample);
            bar.inc(1);
        }
        done += 1;
    }
    let rows = probes
        .iter()
        .zip(samples)
        .map(|(p, samples)| RowData { key: p.key(), unit: p.unit(), is_floor: p.is_floor(), samples })
        .collect();
    // The probes drop here, before the section's time is taken: their
    // teardown (joining pools, unlinking segments) is part of it.
    drop(probes);
    Ok(SectionData { section, rounds: done, seconds: started.elapsed().as_secs_f64(), rows, notes })
}

/// Where the report goes: `$CARGO_TARGET_DIR/ipc-cost`, else
/// `<manifest dir>/target/ipc-cost`.
fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("ipc-cost")
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sections = selected(&args)?;
    let quick = std::env::var("IPC_COST_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let started = Instant::now();

    // No steady tick: indicatif then starts no thread, and the probes fork
    // from a process with one thread.
    let multi = MultiProgress::new();
    let style = |t: &str| ProgressStyle::with_template(t).expect("a valid progress template");
    let outer = multi.add(ProgressBar::new(sections.len() as u64));
    outer.set_style(style("{prefix:>8} [{bar:30}] {pos}/{len} sections {wide_msg}").progress_chars("=> "));
    outer.set_prefix("ipc_cost");
    let inner = multi.add(ProgressBar::new(0));
    inner.set_style(style("{prefix:>8} [{bar:30}] {pos}/{len} {wide_msg}").progress_chars("=> "));
    inner.set_prefix("section");
    let plain = outer.is_hidden();
    if plain {
        eprintln!("ipc_cost: {} mode, {} section(s)", if quick { "quick" } else { "full" }, sections.len());
    }

    let mut data = Vec::new();
    for &section in &sections {
        outer.set_message(section.title());
        let result = run_section(section, quick, &inner);
        let d = match result {
            Ok(d) => d,
            Err(e) => {
                inner.abandon();
                outer.abandon();
                return Err(e);
            }
        };
        if plain {
            eprintln!("ipc_cost: {}: {} rounds, {:.1} s", section.title(), d.rounds, d.seconds);
        }
        data.push(d);
        outer.inc(1);
    }
    inner.finish_and_clear();
    outer.finish_and_clear();

    let report = Report::build(Machine::detect(), quick, started.elapsed().as_secs_f64(), &data);
    let dir = out_dir();
    report.write(&dir)?;
    for section in &report.sections {
        plot::write(&dir, section)?;
    }
    println!("{}", report.markdown());
    println!("ipc_cost: report in {} ({:.0} s)", dir.display(), started.elapsed().as_secs_f64());
    Ok(())
}

fn main() {
    // `run` returns only after every probe has dropped, so exiting here
    // leaves nothing behind.
    if let Err(e) = run() {
        eprintln!("ipc_cost: FAILED: {e}");
        std::process::exit(1);
    }
}
