//! The tour: every section of the module outline (sections 1 to 14), in
//! order, each under a heading. This is the README's "see it work" command.
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
//! ```
//!
//! Each section runs in a process of its own: this binary started again with
//! `--section N`, which calls that section's `main`. A section so behaves
//! exactly as its standalone example, which it could not if they all shared
//! one process: default names count every `Process` a process constructs
//! (`Process-3`, `Worker-1`, `Process-1` in sections 4, 9 and 10 would come
//! out higher), `log_to_stderr` would stay on for every later section, and
//! the exit hook that terminates section 5's daemon and prints section 9's
//! last line runs only when the process exits.
//!
//! `cargo run --release --example outline -- --section 11` runs one section.

#[path = "condition.rs"]
mod condition;
#[path = "event.rs"]
mod event;
#[path = "lock.rs"]
mod lock;
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
#[path = "semaphore.rs"]
mod semaphore;

use std::error::Error;
use std::process::Command;
use std::time::{Duration, Instant};

/// One section's entry point.
type Section = fn() -> Result<(), Box<dyn Error>>;

/// The sections, in the outline's order.
const SECTIONS: [(&str, Section); 14] = [
    ("Process objects", process_simple::main),
    ("Passing arguments", process_args::main),
    ("Importable target functions", process_spawn::main),
    ("Process ID / current process", process_names::main),
    ("Daemon processes", process_daemon::main),
    ("Waiting for processes", process_join::main),
    ("Terminating processes", process_terminate::main),
    ("Process exit status", process_exitcode::main),
    ("Logging", process_logging::main),
    ("Subclassing Process", process_subclass::main),
    ("Signaling with Event", event::main),
    ("Controlling access with Lock", lock::main),
    ("Synchronizing with Condition", condition::main),
    ("Concurrent access with Semaphore", semaphore::main),
];

/// How long one section may take before the tour gives up on it.
const SECTION_DEADLINE: Duration = Duration::from_secs(30);

/// Runs section `n` (1-based) in a new process: this binary with `--section n`.
fn run_section(n: usize) -> Result<(), Box<dyn Error>> {
    let mut child = Command::new(std::env::current_exe()?).args(["--section", &n.to_string()]).spawn()?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return if status.success() { Ok(()) } else { Err(format!("section {n} failed: {status}").into()) };
        }
        if started.elapsed() > SECTION_DEADLINE {
            child.kill()?;
            child.wait()?;
            return Err(format!("section {n} did not finish within {SECTION_DEADLINE:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    // The entry guard, with every entry any section spawns: a spawned child is
    // this binary started again, so it must find its entry here.
    let mut entries = process_args::spawn_entries();
    entries.extend(process_spawn::spawn_entries());
    shmsync::process::entries(&entries);

    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, n] = args.as_slice() {
        if flag == "--section" {
            let n: usize = n.parse()?;
            let (_, section) = SECTIONS.get(n.wrapping_sub(1)).ok_or_else(|| format!("no section {n}"))?;
            return section();
        }
    }

    for (i, (title, _)) in SECTIONS.iter().enumerate() {
        println!("\n== {}. {title} ==", i + 1);
        run_section(i + 1)?;
    }
    Ok(())
}
