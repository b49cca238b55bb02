//! Process objects: five child processes, each printing `Worker`.
//!
//! Run: `cargo run --release --example process_simple`
//!
//! Expected output:
//! ```text
//! Worker
//! Worker
//! Worker
//! Worker
//! Worker
//! ```
//! As in Python, `main` does not join the children: non-daemon children are
//! joined by shmsync's exit hook when the parent exits, so all five lines are
//! printed before the program ends.

use shmsync::Process;

fn worker() {
    println!("Worker");
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    for _ in 0..5 {
        // Dropping the handle neither kills nor joins: the exit hook joins it.
        Process::new(worker).start()?;
    }
    Ok(())
}
