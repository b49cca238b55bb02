//! # What does IPC cost? The ipc_cost study
//!
//! One command measures what coordination between processes costs on this
//! machine, shmsync's primitives side by side with the alternatives, and
//! Python's `multiprocessing` beside each of ours where it has one:
//!
//! 1. uncontended acquire + release (ns per pair);
//! 2. handoff round trip between two processes (µs; cross-core, one core,
//!    unpinned; p50, p99, p99.9);
//! 3. contended throughput at 1, 2, 4 and 8 processes (total Mops/s), with
//!    each lock's fairness: the share of acquisitions each process got and
//!    the longest run of re-acquisitions by one process;
//! 4. message rate between two processes (msg/s), swept over payloads of
//!    64 B to 1 MiB: `Queue`, `Connection`, a tuned pipe, a framed Unix
//!    socket, ipc-channel; and the `Queue` with 3 producers and 3 consumers;
//! 5. message round trip (µs; p50, p99, p99.9) through the same mechanisms;
//! 6. `Pool::map` overhead per item (µs), against a plain loop;
//! 7. reader-writer locks: uncontended reads and writes, read scaling over
//!    1 and 2 processes, a writer among looping readers (`rwlock`);
//! 8. connections by address, `Listener`/`Client` (`connections`);
//! 9. across hosts: the etcd Lock's lock + unlock against one etcd put, with
//!    `--features etcd` and `etcd` on `PATH` (`etcd`).
//!
//! Every row also reports the CPU time per operation (user plus system,
//! every process involved), beside the wall-clock figure. The sections are
//! listed in `sections.rs`; a new one is one more module there.
//!
//! Python rows run the `mp_bench.py` script beside this file, one server
//! process per section, when `python3` is on `PATH` (the report says so when
//! it is not); each stands beside the shmsync row it compares with.
//!
//! Run: `cargo bench --bench ipc_cost` (a few minutes). One section only:
//! `cargo bench --bench ipc_cost -- handoff` (a filter matches a section's
//! short name — uncontended, handoff, contended, rwlock, messages, roundtrip,
//! pool, connections, etcd —
//! or part of its title). `IPC_COST_QUICK=1` makes a smoke run of every
//! measurement in under a minute, which CI runs so the study can't rot; its
//! numbers are not for quoting.
//!
//! Within a section the mechanisms take turns: each round runs every probe
//! once, starting one further along each round, so a noisy neighbour hurts
//! them all alike. A section runs rounds until it has enough (or its time
//! budget is spent); every probe gets the same number. Each probe checks its
//! own result (counts exact, every handoff answered, every message whole and
//! in order) and bounds every wait; a failed check or an overrun stops the
//! study with a non-zero exit, naming the probe. Nothing is left running or
//! in /dev/shm.
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
mod connections;
mod etcd;
mod messages;
mod model;
mod plot;
mod pool;
mod primitives;
mod python;
mod report;
mod roundtrip;
mod rwlock;
mod sections;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use model::{Section, Setup};
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

/// The sections the command line asks for: all without a filter; else those
/// whose short name equals a filter, or failing that contains it or whose
/// title does. Flags (cargo passes `--bench`) are ignored.
fn selected(args: &[String]) -> Result<Vec<&'static Section>, String> {
    let all = sections::ALL;
    let filters: Vec<String> = args.iter().filter(|a| !a.starts_with('-')).map(|a| a.to_lowercase()).collect();
    if filters.is_empty() {
        return Ok(all.to_vec());
    }
    let matches = |s: &Section, f: &str| {
        if all.iter().any(|t| t.slug == f) {
            s.slug == f
        } else {
            s.slug.contains(f) || s.title.to_lowercase().contains(f)
        }
    };
    let chosen: Vec<&'static Section> = all.iter().copied().filter(|s| filters.iter().any(|f| matches(s, f))).collect();
    if chosen.is_empty() {
        let names: Vec<&str> = all.iter().map(|s| s.slug).collect();
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

/// Makes a section's probes, with notes for the report. A panic while
/// making them is an error.
fn setup(section: &Section, quick: bool) -> Result<Setup, String> {
    catch_unwind(AssertUnwindSafe(|| (section.setup)(quick)))
        .map_err(|p| format!("setting up section \"{}\" panicked: {}", section.title, panic_message(&*p)))
}

/// Runs a section's rounds, its probes taking turns, and collects every
/// sample. The first failure ends the section with an error naming the
/// probe.
fn run_section(section: &'static Section, quick: bool, bar: &ProgressBar) -> Result<SectionData, String> {
    let started = Instant::now();
    let Setup { mut probes, mut notes } = setup(section, quick)?;
    let n = probes.len();
    if n == 0 && notes.is_empty() {
        notes.push("No probes in this build.".into());
    }
    let plan = rounds(quick);
    let mut samples = vec![Vec::new(); n];
    let mut seconds = vec![0.0; n];
    bar.set_length((plan.max * n) as u64);
    bar.set_position(0);
    let mut done = 0;
    while n > 0 && done < plan.max && (done < plan.min || started.elapsed() < plan.budget) {
        for j in 0..n {
            let i = (done + j) % n;
            let probe = &mut probes[i];
            let key = probe.key();
            bar.set_message(format!("round {}: {key}", done + 1));
            let t0 = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| probe.sample(quick)))
                .unwrap_or_else(|p| Err(format!("panicked: {}", panic_message(&*p))));
            seconds[i] += t0.elapsed().as_secs_f64();
            let sample = outcome.and_then(|s| {
                if s.value.is_finite() && s.value > 0.0 {
                    Ok(s)
                } else {
                    Err(format!("gave the value {}, not a positive number", s.value))
                }
            });
            let sample = sample.map_err(|e| {
                format!("probe \"{key}\" (section \"{}\") failed in round {}: {e}", section.title, done + 1)
            })?;
            samples[i].push(sample);
            bar.inc(1);
        }
        done += 1;
    }
    let rows = probes
        .iter()
        .zip(samples)
        .zip(seconds)
        .map(|((p, samples), seconds)| RowData {
            key: p.key(),
            unit: p.unit(),
            is_floor: p.is_floor(),
            counterpart: p.counterpart(),
            samples,
            seconds,
        })
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
        outer.set_message(sections::heading(section));
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
            eprintln!("ipc_cost: {}: {} rounds, {:.1} s", sections::heading(section), d.rounds, d.seconds);
        }
        data.push(d);
        outer.inc(1);
    }
    inner.finish_and_clear();
    outer.finish_and_clear();

    let filters: Vec<&str> = args.iter().filter(|a| !a.starts_with('-')).map(String::as_str).collect();
    let command = format!(
        "{}cargo bench --bench ipc_cost{}",
        if quick { "IPC_COST_QUICK=1 " } else { "" },
        if filters.is_empty() { String::new() } else { format!(" -- {}", filters.join(" ")) }
    );
    let report = Report::build(Machine::detect(), quick, command, started.elapsed().as_secs_f64(), &data);
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
