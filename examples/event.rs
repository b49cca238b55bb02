//! Signaling with Event: one process waits for the event with no timeout,
//! another waits 2 s and gives up; the parent sets the event at 3 s, and the
//! first waiter then sees it set. Timings are the Python original's.
//!
//! Run: `cargo run --release --example event`
//!
//! Expected output, in about 3 s:
//! ```text
//! main: waiting before calling Event.set()
//! wait_for_event: starting
//! wait_for_event_timeout: starting
//! wait_for_event_timeout: e.is_set()-> false
//! main: event is set
//! wait_for_event: e.is_set()-> true
//! ```
//! The first three lines come at the same moment, in any order. The last two
//! would race too (the waiter wakes as soon as `set` returns), so main sets
//! the event and reports it while holding a shared print `Lock`, which the
//! woken waiter takes before it prints. The blocking waiter's wait has a 10 s
//! deadline, so that a bug fails the example instead of hanging it.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use shmsync::{Event, Lock, Process};

#[path = "support/mod.rs"]
mod support;
use support::join_ok;

const DEADLINE: Duration = Duration::from_secs(10);

/// Waits for the event to be set before doing anything.
fn wait_for_event(e: &Event, print: &Lock) -> Result<(), String> {
    println!("wait_for_event: starting");
    if !e.wait_timeout(DEADLINE) {
        return Err(format!("the event was not set within {DEADLINE:?}"));
    }
    let _print = print.try_lock_for(DEADLINE).map_err(|err| err.to_string())?;
    println!("wait_for_event: e.is_set()-> {}", e.is_set());
    Ok(())
}

/// Waits `t`, then gives up.
fn wait_for_event_timeout(e: &Event, t: Duration) {
    println!("wait_for_event_timeout: starting");
    e.wait_timeout(t);
    println!("wait_for_event_timeout: e.is_set()-> {}", e.is_set());
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let e = Arc::new(Event::new()?);
    let print = Arc::new(Lock::new()?);
    let w1 = Process::new({
        let (e, print) = (Arc::clone(&e), Arc::clone(&print));
        move || wait_for_event(&e, &print)
    })
    .with_name("block");
    w1.start()?;

    let w2 = Process::new({
        let e = Arc::clone(&e);
        move || wait_for_event_timeout(&e, Duration::from_secs(2))
    })
    .with_name("nonblock");
    w2.start()?;

    println!("main: waiting before calling Event.set()");
    std::thread::sleep(Duration::from_secs(3));
    {
        let _print = print.try_lock_for(DEADLINE).map_err(|err| err.to_string())?;
        e.set();
        println!("main: event is set");
    }

    join_ok(&w1)?;
    join_ok(&w2)?;
    Ok(())
}
