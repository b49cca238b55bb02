//! Passing arguments: each child gets its number. With the fork start method
//! the closure carries it; with the spawn start method it travels as a
//! serialised argument to this binary started again.
//!
//! Run: `cargo run --release --example process_args`
//!
//! Expected output: the five lines twice, first from the forked children, then
//! from the spawned ones; within each round in any order:
//! ```text
//! Worker: 0
//! Worker: 1
//! Worker: 2
//! Worker: 3
//! Worker: 4
//! Worker: 0
//! Worker: 1
//! Worker: 2
//! Worker: 3
//! Worker: 4
//! ```

use std::error::Error;

use shmsync::process::{entry, Entry};
use shmsync::Process;

#[path = "support/mod.rs"]
mod support;
use support::join_ok;

fn worker(num: u32) {
    println!("Worker: {num}");
}

/// The functions this example starts with the spawn method.
pub fn spawn_entries() -> Vec<Entry> {
    vec![entry("process_args.worker", worker)]
}

pub fn main() -> Result<(), Box<dyn Error>> {
    // The entry guard: a spawned child runs its entry here and exits.
    shmsync::process::entries(&spawn_entries());

    // Fork: the closure moves `i` into the child.
    let forked: Vec<Process> = (0..5).map(|i| Process::new(move || worker(i))).collect();
    for p in &forked {
        p.start()?;
    }
    for p in &forked {
        join_ok(p)?;
    }

    // Spawn: `i` is encoded, passed to the new program, and decoded there.
    let spawned = (0..5u32).map(|i| Process::spawn("process_args.worker", &i)).collect::<Result<Vec<_>, _>>()?;
    for p in &spawned {
        p.start()?;
    }
    for p in &spawned {
        join_ok(p)?;
    }
    Ok(())
}
