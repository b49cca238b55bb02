//! The tour: every section of the module outline (sections 1 to 17, then
//! the pipes and queues of its `+` row), in order, each under a heading, with
//! readers and writers on an `RwLock` (which Python lacks) after the Lock
//! section, and to close it what connects programs that share no parent:
//! listeners and clients by address, and passing handles to pool workers.
//! This is the README's "see it work" command.
//!
//! Run: `cargo run --release --example outline`
//!
//! Each section prints what its own example prints; see the `//!` header of
//! each file in `examples/`. The output starts:
//! ```text
//!
//! == 1. Process objects ==
//! Worker
//! Worker
//! Worker
//! Worker
//! Worker
//!
//! == 2. Passing arguments ==
//! Worker: 0
//! ...
//!
//! == 17. Parallel evaluation of a list comprehension ==
//! ...
//!
//! == + Pipes ==
//! (42, None, "hello")
//!
//! == + Queues ==
//! ...
//!
//! == + Listeners and Clients ==
//! server: 2 clients authenticated, 1 refused (wrong authkey)
//! ...
//!
//! == + Passing handles ==
//! acceptor: handed 4 connections to 2 pool workers
//! ...
//! ```
//!
//! Each section runs in a process of its own: this binary started again with
//! `--section KEY` (the section's number, or `rwlock`, `pipe`, `queue`,
//! `listener` or `handles` for the sections beyond Python's), which calls that section's `main`. A section so behaves exactly as
//! its standalone example, which it could not if they all shared one
//! process: default names count every `Process` a process constructs
//! (`Process-3`, `Worker-1`, `Process-1` in sections 4, 9 and 10, and the
//! `PoolWorker-N` and `Consumer-N` of sections 15 and `queue`, would come out
//! higher), `log_to_stderr` would stay on for every later section, and the
//! exit hook that terminates section 5's daemon and prints section 9's last
//! line runs only when the process exits.
//!
//! `cargo run --release --example outline -- --section 11` runs one section;
//! `-- --section pipe` runs the pipes.

// Each section file is also a standalone example, so each declares the
// shared `support` module itself; here they are compiled together.
#![allow(clippy::duplicate_mod)]

#[path = "condition.rs"]
mod condition;
#[path = "event.rs"]
mod event;
#[path = "handle_passing.rs"]
mod handle_passing;
#[path = "listener_client.rs"]
mod listener_client;
#[path = "lock.rs"]
mod lock;
#[path = "manager.rs"]
mod manager;
#[path = "mapreduce.rs"]
mod mapreduce;
#[path = "pipe.rs"]
mod pipe;
#[path = "pool.rs"]
mod pool;
#[path = "process_args.rs"]
mod process_args;
#[path = "process_daemon.rs"]
mod process_daemon;
#[path = "process_exitcode.rs"]
mod process_exitcode;
#[path = "process_join.rs"]
mod process_join;
#[path = "process_logging.rs"]
mod process_logging;
#[path = "process_names.rs"]
mod process_names;
#[path = "process_simple.rs"]
mod process_simple;
#[path = "process_spawn.rs"]
mod process_spawn;
#[path = "process_subclass.rs"]
mod process_subclass;
#[path = "process_terminate.rs"]
mod process_terminate;
#[path = "queue.rs"]
mod queue;
#[path = "rwlock.rs"]
mod rwlock;
#[path = "semaphore.rs"]
mod semaphore;

use std::error::Error;
use std::process::Command;
use std::time::{Duration, Instant};

/// One section's entry point.
type Section = fn() -> Result<(), Box<dyn Error>>;

/// The sections, in the outline's order: the key `--section` takes, the
/// heading, and the entry point.
const SECTIONS: [(&str, &str, Section); 22] = [
    ("1", "1. Process objects", process_simple::main),
    ("2", "2. Passing arguments", process_args::main),
    ("3", "3. Importable target functions", process_spawn::main),
    ("4", "4. Process ID / current process", process_names::main),
    ("5", "5. Daemon processes", process_daemon::main),
    ("6", "6. Waiting for processes", process_join::main),
    ("7", "7. Terminating processes", process_terminate::main),
    ("8", "8. Process exit status", process_exitcode::main),
    ("9", "9. Logging", process_logging::main),
    ("10", "10. Subclassing Process", process_subclass::main),
    ("11", "11. Signaling with Event", event::main),
    ("12", "12. Controlling access with Lock", lock::main),
    ("rwlock", "+ Readers and writers with RwLock", rwlock::main),
    ("13", "13. Synchronizing with Condition", condition::main),
    ("14", "14. Concurrent access with Semaphore", semaphore::main),
    ("15", "15. Pool.map", pool::main),
    ("16", "16. Manager", manager::main),
    ("17", "17. Parallel evaluation of a list comprehension", mapreduce::main),
    ("pipe", "+ Pipes", pipe::main),
    ("queue", "+ Queues", queue::main),
    ("listener", "+ Listeners and Clients", listener_client::main),
    ("handles", "+ Passing handles", handle_passing::main),
];

/// How long one section may take before the tour gives up on it.
const SECTION_DEADLINE: Duration = Duration::from_secs(30);

/// Runs section `key` in a new process: this binary with `--section key`.
fn run_section(key: &str) -> Result<(), Box<dyn Error>> {
    let mut child = Command::new(std::env::current_exe()?).args(["--section", key]).spawn()?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return if status.success() { Ok(()) } else { Err(format!("section {key} failed: {status}").into()) };
        }
        if started.elapsed() > SECTION_DEADLINE {
            child.kill()?;
            child.wait()?;
            return Err(format!("section {key} did not finish within {SECTION_DEADLINE:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    // The entry guard, with every entry any section spawns: a spawned child is
    // this binary started again, so it must find its entry here.
    let mut entries = process_args::spawn_entries();
    entries.extend(process_spawn::spawn_entries());
    entries.extend(listener_client::spawn_entries());
    shmsync::process::entries(&entries);

    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, key] = args.as_slice() {
        if flag == "--section" {
            let (_, _, section) =
                SECTIONS.iter().find(|(k, _, _)| k == key).ok_or_else(|| format!("no section {key}"))?;
            return section();
        }
    }

    for (key, heading, _) in &SECTIONS {
        println!("\n== {heading} ==");
        run_section(key)?;
    }
    Ok(())
}
