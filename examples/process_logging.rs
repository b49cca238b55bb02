//! Logging: `log_to_stderr(Debug)` turns on shmsync's own lifecycle lines,
//! `[LEVEL/ProcessName] message` on stderr, as Python's `log_to_stderr` does.
//!
//! Run: `cargo run --release --example process_logging`
//!
//! Expected output (stdout and stderr together):
//! ```text
//! [INFO/Process-1] child process calling self.run()
//! Doing some work
//! [INFO/Process-1] process shutting down
//! [INFO/Process-1] process exiting with exitcode 0
//! [INFO/MainProcess] process shutting down
//! ```
//! The last line is printed by the exit hook, after `main` has returned.

use std::error::Error;
use std::time::Duration;

use shmsync::Process;

const DEADLINE: Duration = Duration::from_secs(10);

fn worker() {
    println!("Doing some work");
}

pub fn main() -> Result<(), Box<dyn Error>> {
    shmsync::log_to_stderr(log::LevelFilter::Debug);
    let p = Process::new(worker);
    p.start()?;
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
