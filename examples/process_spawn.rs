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
use std::time::Duration;

use shmsync::process::{entry, Entry};
use shmsync::Process;

const DEADLINE: Duration = Duration::from_secs(10);

fn worker(_: ()) {
    println!("Worker");
}

/// The functions this example starts with the spawn method.
pub fn spawn_entries() -> Vec<Entry> {
    vec![entry("process_spawn.worker", worker)]
}

/// Joins `p` within the deadline and checks that it exited with 0.
fn join_ok(p: &Process) -> Result<(), Box<dyn Error>> {
    match p.join_timeout(DEADLINE)? {
        Some(0) => Ok(()),
        Some(code) => Err(format!("{} exited with {code}", p.name()).into()),
        None => {
            p.kill()?;
            p.join()?;
            Err(format!("{} did not end within {DEADLINE:?}", p.name()).into())
        }
    }
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
