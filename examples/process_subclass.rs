//! Subclassing Process: a type implementing `shmsync::Run` (the Rust form of
//! overriding `Process.run`), started five times with `Process::from_run`.
//! Each child is named after the type: `Worker-1` to `Worker-5`.
//!
//! Run: `cargo run --release --example process_subclass`
//!
//! Expected output (in any order):
//! ```text
//! In Worker-1
//! In Worker-2
//! In Worker-3
//! In Worker-4
//! In Worker-5
//! ```
//! The number counts every `Process` this process has constructed, as in
//! Python; run after other processes were made, it would start higher.

use std::error::Error;
use std::time::Duration;

use shmsync::{current, Process, Run};

const DEADLINE: Duration = Duration::from_secs(10);

struct Worker;

impl Run for Worker {
    fn run(self) {
        println!("In {}", current().name());
    }
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let jobs: Vec<Process> = (0..5).map(|_| Process::from_run(Worker)).collect();
    for p in &jobs {
        p.start()?;
    }
    for p in &jobs {
        match p.join_timeout(DEADLINE)? {
            Some(0) => {}
            Some(code) => return Err(format!("{} exited with {code}", p.name()).into()),
            None => {
                p.kill()?;
                p.join()?;
                return Err(format!("{} did not end within {DEADLINE:?}", p.name()).into());
            }
        }
    }
    Ok(())
}
