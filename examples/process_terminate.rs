//! Terminating processes: a process's state before `start`, while it runs,
//! right after `terminate`, and after `join`, which shows exit code -15
//! (SIGTERM) and `is_alive() == false`. A `Process` displays as Python's
//! repr does.
//!
//! Run: `cargo run --release --example process_terminate`
//!
//! Expected output (pids vary):
//! ```text
//! BEFORE: <Process name='Process-1' parent=4100 initial> false
//! Starting worker
//! DURING: <Process name='Process-1' pid=4101 parent=4100 started> true
//! TERMINATED: <Process name='Process-1' pid=4101 parent=4100 started> true
//! JOINED: <Process name='Process-1' pid=4101 parent=4100 stopped exitcode=-SIGTERM> false
//! ```
//! Unlike the Python original, the parent waits until the worker has printed
//! `Starting worker` before it prints `DURING`, so that line does not depend
//! on who runs first; `Finished worker` never comes.
//!
//! `TERMINATED` is a race, in Python too: the signal is asynchronous, and
//! `is_alive()` right after `terminate()` finds the worker either still alive
//! (`exitcode: None`, `true`, as above and in Python's output) or already gone
//! (`exitcode: Some(-15)`, `false`); both are common.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use shmsync::{Event, Process};

const DEADLINE: Duration = Duration::from_secs(10);

fn slow_worker(started: &Event) {
    println!("Starting worker");
    started.set();
    std::thread::sleep(Duration::from_millis(100));
    println!("Finished worker");
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let started = Arc::new(Event::new()?);
    let p = Process::new({
        let started = Arc::clone(&started);
        move || slow_worker(&started)
    });
    println!("BEFORE: {} {}", p, p.is_alive());

    p.start()?;
    if !started.wait_timeout(DEADLINE) {
        p.kill()?;
        p.join()?;
        return Err("the worker did not start".into());
    }
    println!("DURING: {} {}", p, p.is_alive());

    p.terminate()?;
    println!("TERMINATED: {} {}", p, p.is_alive());

    let code = p.join_timeout(DEADLINE)?;
    println!("JOINED: {} {}", p, p.is_alive());
    if code != Some(-15) {
        return Err(format!("exit code {code:?}, not -15").into());
    }
    Ok(())
}
