//! Process ID / current process: three children, two named and one left with
//! its default name `Process-3` (the third `Process` constructed). Each asks
//! `shmsync::current()` for its name and pid.
//!
//! Run: `cargo run --release --example process_names`
//!
//! Expected output (pids vary). The three `Starting` lines come at once, in
//! any order; the workers' `Exiting` lines 2 s later, in either order; the
//! service's at 3 s. (Python prints each child's lines together because its
//! children buffer stdout; these flush per line.)
//! ```text
//! worker 1 Starting (pid 4101)
//! Process-3 Starting (pid 4102)
//! my_service Starting (pid 4103)
//! worker 1 Exiting (pid 4101)
//! Process-3 Exiting (pid 4102)
//! my_service Exiting (pid 4103)
//! ```

use std::error::Error;
use std::time::Duration;

use shmsync::{current, Process};

#[path = "support/mod.rs"]
mod support;
use support::join_ok;

fn worker() {
    let me = current();
    println!("{} Starting (pid {})", me.name(), me.pid());
    std::thread::sleep(Duration::from_secs(2));
    println!("{} Exiting (pid {})", me.name(), me.pid());
}

fn my_service() {
    let me = current();
    println!("{} Starting (pid {})", me.name(), me.pid());
    std::thread::sleep(Duration::from_secs(3));
    println!("{} Exiting (pid {})", me.name(), me.pid());
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let service = Process::new(my_service).with_name("my_service");
    let worker_1 = Process::new(worker).with_name("worker 1");
    let worker_2 = Process::new(worker); // default name: Process-3

    worker_1.start()?;
    worker_2.start()?;
    service.start()?;

    for p in [&worker_1, &worker_2, &service] {
        join_ok(p)?;
    }
    Ok(())
}
