//! Importable target functions: the output of `process_simple`, but with the
//! spawn start method. Each child is this binary executed again; the entry
//! guard at the top of `main` (what `if __name__ == '__main__':` is in
//! Python) finds the registered entry `process_spawn.worker`, runs it, and
//! exits before the rest of `main`.
//!
//! Run: `cargo run --release --example process_spawn`
//!
//! Expected output:
//! ```text
//! Worker
//! Worker
//! Worker
//! Worker
//! Worker
//! ```

use std::error::Error;

use shmsync::process::{entry, Entry};
use shmsync::Process;

#[path = "support/mod.rs"]
mod support;
use support::join_ok;

fn worker(_: ()) {
    println!("Worker");
}

/// The functions this example starts with the spawn method.
pub fn spawn_entries() -> Vec<Entry> {
    vec![entry("process_spawn.worker", worker)]
}

pub fn main() -> Result<(), Box<dyn Error>> {
    // The entry guard. In a spawned child it runs the requested entry and
    // exits; in the parent it returns at once.
    shmsync::process::entries(&spawn_entries());

    let jobs = (0..5).map(|_| Process::spawn("process_spawn.worker", &())).collect::<Result<Vec<_>, _>>()?;
    for p in &jobs {
        p.start()?;
    }
    for p in &jobs {
        join_ok(p)?;
    }
    Ok(())
}
