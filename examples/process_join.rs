//! Waiting for processes: `join()` on both the daemon and the non-daemon, so
//! the daemon's `Exiting` line now appears; then `join_timeout(1 s)` on a
//! daemon that sleeps 2 s returns while it is still alive.
//!
//! Run: `cargo run --release --example process_join`
//!
//! Expected output (pids vary), in about 3 s. In the second part the two
//! `Starting` lines may come in either order.
//! ```text
//! Starting: daemon 4101
//! Starting: non-daemon 4102
//! Exiting : non-daemon 4102
//! Exiting : daemon 4101
//! Starting: daemon 4103
//! Starting: non-daemon 4104
//! Exiting : non-daemon 4104
//! d.is_alive() true
//! ```
//! The still-running daemon is then terminated and joined quietly (what the
//! exit hook would do at exit), so nothing outlives the example.

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

/// Joins `p` within the deadline and returns its exit code.
fn join(p: &Process) -> Result<i32, Box<dyn Error>> {
    match p.join_timeout(DEADLINE)? {
        Some(code) => Ok(code),
        None => {
            p.kill()?;
            p.join()?;
            Err(format!("{} did not end within {DEADLINE:?}", p.name()).into())
        }
    }
}

fn expect(p: &Process, want: i32) -> Result<(), Box<dyn Error>> {
    match join(p)? {
        code if code == want => Ok(()),
        code => Err(format!("{} exited with {code}, not {want}", p.name()).into()),
    }
}

pub fn main() -> Result<(), Box<dyn Error>> {
    // join() on both: the parent waits for the daemon too.
    let d = Process::new(daemon).with_name("daemon").daemon(true);
    let n = Process::new(non_daemon).with_name("non-daemon");
    d.start()?;
    std::thread::sleep(Duration::from_secs(1));
    n.start()?;
    expect(&d, 0)?;
    expect(&n, 0)?;

    // join_timeout(1 s) on a daemon that needs 2 s.
    let d = Process::new(daemon).with_name("daemon").daemon(true);
    let n = Process::new(non_daemon).with_name("non-daemon");
    d.start()?;
    n.start()?;
    if d.join_timeout(Duration::from_secs(1))?.is_some() {
        return Err("the daemon ended within 1 s".into());
    }
    println!("d.is_alive() {}", d.is_alive());
    expect(&n, 0)?;

    d.terminate()?;
    expect(&d, -15)?;
    Ok(())
}
