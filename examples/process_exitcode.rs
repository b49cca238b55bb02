//! Process exit status: five children ending five ways, and the exit code the
//! parent sees for each: `exit(1)` gives 1, returning gives 0, a panic gives 1
//! (with `Process raises: ...` on stderr), `terminate()` gives -15 and
//! `kill()` gives -9 (the signal number, negated).
//!
//! Run: `cargo run --release --example process_exitcode`
//!
//! Expected output; the stderr line comes somewhere among the others:
//! ```text
//! Starting process for exit_error
//! Starting process for exit_ok
//! Starting process for raises
//! Starting process for terminated
//! Starting process for killed
//! Process raises: panicked at examples/process_exitcode.rs:37: There was an error!
//!      exit_error.exitcode = 1
//!         exit_ok.exitcode = 0
//!          raises.exitcode = 1
//!      terminated.exitcode = -15
//!          killed.exitcode = -9
//! ```

use std::error::Error;
use std::time::Duration;

use shmsync::Process;

const DEADLINE: Duration = Duration::from_secs(10);

fn exit_error() {
    shmsync::process::exit(1)
}

fn exit_ok() {}

fn raises() {
    panic!("There was an error!")
}

fn terminated() {
    std::thread::sleep(Duration::from_secs(3));
}

fn killed() {
    std::thread::sleep(Duration::from_secs(3));
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let funcs: [(&str, fn(), i32); 5] = [
        ("exit_error", exit_error, 1),
        ("exit_ok", exit_ok, 0),
        ("raises", raises, 1),
        ("terminated", terminated, -15),
        ("killed", killed, -9),
    ];
    let mut jobs = Vec::new();
    for (name, f, expected) in funcs {
        println!("Starting process for {name}");
        let j = Process::new(f).with_name(name);
        j.start()?;
        jobs.push((j, expected));
    }

    jobs[3].0.terminate()?;
    jobs[4].0.kill()?;

    for (j, expected) in &jobs {
        let Some(code) = j.join_timeout(DEADLINE)? else {
            j.kill()?;
            j.join()?;
            return Err(format!("{} did not end within {DEADLINE:?}", j.name()).into());
        };
        println!("{:>15}.exitcode = {code}", j.name());
        if code != *expected {
            return Err(format!("{}: exit code {code}, expected {expected}", j.name()).into());
        }
    }
    Ok(())
}
