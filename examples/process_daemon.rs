//! Daemon processes: the daemon starts, the non-daemon starts and ends, and
//! the parent exits while the daemon still sleeps. shmsync's exit hook then
//! terminates the daemon, as Python does, so its `Exiting` line never comes.
//!
//! Run: `cargo run --release --example process_daemon`
//!
//! Expected output (pids vary), after about 1 s:
//! ```text
//! Starting: daemon 4101
//! Starting: non-daemon 4102
//! Exiting : non-daemon 4102
//! ```
//! `main` returns with the daemon still running; it is the exit hook, when
//! this process exits, that terminates it. Called from another program (not
//! as this example's `main`), the daemon would live on until that program
//! exits, or until its 2 s sleep ends. `examples/outline.rs` runs each section
//! in a process of its own, so there too the parent really exits first.

use std::error::Error;
use std::time::Duration;

use shmsync::{current, Process};

const DEADLINE: Duration = Duration::from_secs(10);

fn daemon() {
    let p = current();
    println!("Starting: {} {}", p.name(), p.pid());
    std::thread::sleep(Duration::from_secs(2));
    println!("Exiting : {} {}", p.name(), p.pid());
}

fn non_daemon() {
    let p = current();
    println!("Starting: {} {}", p.name(), p.pid());
    println!("Exiting : {} {}", p.name(), p.pid());
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let d = Process::new(daemon).with_name("daemon").daemon(true);
    let n = Process::new(non_daemon).with_name("non-daemon");

    d.start()?;
    std::thread::sleep(Duration::from_secs(1));
    n.start()?;

    // Python leaves this join to the exit hook too; joining here, within a
    // deadline, only lets the example check the exit code.
    match n.join_timeout(DEADLINE)? {
        Some(0) => {}
        Some(code) => return Err(format!("non-daemon exited with {code}").into()),
        None => {
            n.kill()?;
            n.join()?;
            return Err("the non-daemon did not end".into());
        }
    }
    if !d.is_alive() {
        return Err("the daemon ended before the parent".into());
    }
    // The daemon still sleeps: the exit hook terminates it when we exit.
    Ok(())
}
