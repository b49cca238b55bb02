//! A process launcher in the manner of Python's `multiprocessing`.
//!
//! - [`Process`]: fork start method ([`Process::new`], [`Process::from_run`])
//!   and spawn start method ([`Process::spawn`] with [`entries`]).
//! - [`current`]: this process's name and pid (`MainProcess` at the top).
//! - [`exit`]: leave a child with a given exit code.
//! - [`log_to_stderr`]: `[LEVEL/ProcessName] message` lines, with the
//!   lifecycle lines Python prints.
//!
//! # Child-side rules
//! A forked child flushes stdout and stderr and leaves with `_exit`: it never
//! runs the parent's exit handlers or destructors. Before leaving it joins its
//! own children, as a Python child does.

/// Writes one line to this process's stderr (fd 2) in one call. Unlike
/// `eprintln!`, it is never redirected by a test harness's output capture,
/// which a forked child would otherwise inherit.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!("{}\n", format_args!($($arg)*));
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

mod children;
mod identity;
mod launch;
mod logging;
mod spawn;

use std::io::Write;

pub use launch::{Outcome, Process, Run};
pub use logging::log_to_stderr;
pub use spawn::{entries, entry, Entry};

/// The current process, as [`current`] returns it.
#[derive(Clone, Copy, Debug)]
pub struct Current {
    name: &'static str,
    pid: u32,
}

impl Current {
    /// Its name: `MainProcess`, or the name it was started with.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// The current process (Python's `multiprocessing.current_process()`).
///
/// ```
/// assert_eq!(shmsync::current().name(), "MainProcess");
/// assert_eq!(shmsync::current().pid(), std::process::id());
/// ```
pub fn current() -> Current {
    Current { name: identity::name(), pid: std::process::id() }
}

/// Ends the current process with exit code `code`. In a child started by
/// shmsync, it flushes output, joins its own children and leaves with
/// `_exit`, so its parent's `join` returns `code`; in any other process it is
/// `std::process::exit`.
pub fn exit(code: i32) -> ! {
    if identity::is_child() {
        exit_child(code)
    } else {
        std::process::exit(code)
    }
}

/// Runs a child's target: logs as Python does, turns a panic into exit code
/// 1 with `Process <name>: <message>` on stderr.
fn run_as_child(target: impl FnOnce() -> i32) -> i32 {
    let name = identity::name();
    log::info!("child process calling self.run()");
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        report!("Process {name}: panicked{at}: {msg}");
    }));
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(target)).unwrap_or(1)
}

/// A child's way out: join its own children, log, flush, `_exit`.
fn exit_child(code: i32) -> ! {
    children::shutdown();
    log::info!("process exiting with exitcode {code}");
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    crate::sys::child::exit_now(code)
}
