//! Synchronizing with Condition: two stage-2 processes wait on a condition
//! until stage 1 has done its work; stage 1 says so and notifies them all.
//! The "stage 1 is done" flag is an `Event` in shared memory, set and read
//! under the condition's lock; the waiters use `wait_timeout_while` (the
//! deadline form of `wait_while`) on it, so the example cannot hang if the
//! notify comes before a wait. Timings are the Python original's: the
//! processes start 1 s apart.
//!
//! Run: `cargo run --release --example condition`
//!
//! Expected output, in about 2 s (the last two lines in either order):
//! ```text
//! Starting stage_2[1]
//! Starting stage_2[2]
//! Starting s1
//! s1 done and ready for stage 2
//! stage_2[1] running
//! stage_2[2] running
//! ```

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use shmsync::{current, Condition, Event, Process};

#[path = "support/mod.rs"]
mod support;
use support::join_ok;

const DEADLINE: Duration = Duration::from_secs(10);

/// Performs the first stage of work, then notifies stage 2 to continue.
fn stage_1(cond: &Condition, done: &Event) -> Result<(), String> {
    let name = current().name();
    println!("Starting {name}");
    let _guard = cond.lock().map_err(|e| e.to_string())?;
    println!("{name} done and ready for stage 2");
    done.set();
    cond.notify_all();
    Ok(())
}

/// Waits for the condition telling us stage 1 is done.
fn stage_2(cond: &Condition, done: &Event) -> Result<(), String> {
    let name = current().name();
    println!("Starting {name}");
    let guard = cond.lock().map_err(|e| e.to_string())?;
    let (_guard, res) = cond.wait_timeout_while(guard, DEADLINE, || !done.is_set()).map_err(|e| e.to_string())?;
    if res.timed_out() {
        return Err(format!("stage 1 did not finish within {DEADLINE:?}"));
    }
    println!("{name} running");
    Ok(())
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let condition = Arc::new(Condition::new()?);
    let done = Arc::new(Event::new()?);
    let process = |stage: fn(&Condition, &Event) -> Result<(), String>, name: String| {
        let (condition, done) = (Arc::clone(&condition), Arc::clone(&done));
        Process::new(move || stage(&condition, &done)).with_name(name)
    };
    let s1 = process(stage_1, "s1".to_string());
    let s2_clients: Vec<Process> = (1..3).map(|i| process(stage_2, format!("stage_2[{i}]"))).collect();

    for c in &s2_clients {
        c.start()?;
        std::thread::sleep(Duration::from_secs(1));
    }
    s1.start()?;

    join_ok(&s1)?;
    for c in &s2_clients {
        join_ok(c)?;
    }
    Ok(())
}
