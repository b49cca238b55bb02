//! How long `shmsync ls` takes over 1,000 objects (the target: under 1 s).
//!
//! Run: `cargo bench --features cli --bench ls` (`LS_BENCH_QUICK=1` for a
//! smoke run of 3 rounds, as CI makes). It creates 1,000 objects of nine
//! kinds with `K::new()` (this process maps them all, so the mapping scan
//! has a 1,000-line maps file to read), then times, round by round in the
//! same run:
//! - `shmsync ls` (plain rows) and `shmsync ls --json`, the binary;
//! - `shmsync::inspect::list()` in this process (no process start-up);
//! - `ls -l /dev/shm` from coreutils, the floor: it only stats the files.
//!
//! It prints the median, minimum and maximum of each, and the ratios to
//! `ls -l`. Every object is removed on exit (the handles unlink on drop).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const OBJECTS: usize = 1000;

type Handle = Box<dyn std::any::Any>;

fn make(i: usize) -> shmsync::Result<Handle> {
    Ok(match i % 9 {
        0 => Box::new(shmsync::Lock::new()?),
        1 => Box::new(shmsync::RLock::new()?),
        2 => Box::new(shmsync::Event::new()?),
        3 => Box::new(shmsync::Semaphore::new(3)?),
        4 => Box::new(shmsync::Barrier::new(2)?),
        5 => Box::new(shmsync::Condition::new()?),
        6 => Box::new(shmsync::Mutex::<[u64; 4]>::new([0; 4])?),
        7 => {
            let q = shmsync::Queue::<u32>::new(1024)?;
            q.put(&(i as u32))?;
            Box::new(q)
        }
        _ => {
            let d = shmsync::Dict::<u32, u32>::new(512)?;
            d.insert(&1, &(i as u32))?;
            Box::new(d)
        }
    })
}

/// Runs `cmd` to completion with its output discarded; its wall time.
fn time(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let status = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().expect("run");
    let took = start.elapsed();
    assert!(status.success(), "{cmd:?} failed: {status}");
    took
}

fn summary(name: &str, mut samples: Vec<Duration>, floor: Option<Duration>) -> Duration {
    samples.sort();
    let median = samples[samples.len() / 2];
    let ratio = floor.map(|f| format!("{:>8.1}x", median.as_secs_f64() / f.as_secs_f64())).unwrap_or_default();
    println!(
        "{name:<34}{:>10.1} ms{:>10.1} ms{:>10.1} ms{ratio}",
        median.as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
    );
    median
}

fn main() {
    let bin = env!("CARGO_BIN_EXE_shmsync");
    let rounds = if std::env::var_os("LS_BENCH_QUICK").is_some() { 3 } else { 15 };
    let start = Instant::now();
    let held: Vec<Handle> = (0..OBJECTS).map(|i| make(i).expect("create an object")).collect();
    println!("created {OBJECTS} objects in {:.0} ms", start.elapsed().as_secs_f64() * 1e3);
    let listed = shmsync::inspect::list().expect("list").objects.len();
    println!("/dev/shm holds {listed} shmsync objects (other processes' included); {rounds} rounds\n");

    let (mut ls, mut ls_json, mut lib, mut coreutils) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        ls.push(time(Command::new(bin).arg("ls")));
        ls_json.push(time(Command::new(bin).args(["ls", "--json"])));
        let t = Instant::now();
        let n = shmsync::inspect::list().expect("list").objects.len();
        lib.push(t.elapsed());
        assert!(n >= OBJECTS);
        coreutils.push(time(Command::new("ls").args(["-l", "/dev/shm"])));
    }
    println!("{:<34}{:>13}{:>13}{:>13}{:>9}", "", "median", "min", "max", "vs ls -l");
    let floor = summary("ls -l /dev/shm (coreutils)", coreutils, None);
    let median = summary("shmsync ls", ls, Some(floor));
    summary("shmsync ls --json", ls_json, Some(floor));
    summary("shmsync::inspect::list() in-process", lib, Some(floor));
    println!(
        "\nshmsync ls over {listed} objects: {:.0} ms median ({} the 1 s target)",
        median.as_secs_f64() * 1e3,
        if median < Duration::from_secs(1) { "within" } else { "OVER" }
    );
    drop(held);
}
