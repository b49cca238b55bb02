//! The children this process started, their exit codes, and the exit hook
//! that, as Python's does, terminates daemon children and joins the others
//! when the process exits normally.
//!
//! Reaping happens only under the registry lock, after a pidfd said the child
//! ended, so a signal sent under the same lock never reaches a recycled pid.

use std::sync::{Mutex, MutexGuard, Once};

use nix::errno::Errno;
use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::sys::child;
use crate::sys::time::Deadline;

struct Entry {
    pid: u32,
    name: String,
    daemon: bool,
    /// The exit code once reaped.
    code: Option<i32>,
}

static CHILDREN: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

fn registry() -> MutexGuard<'static, Vec<Entry>> {
    // Poison here only means a panic elsewhere; the list itself stays whole.
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Holds the registry across a fork, so the child's copy is not left locked
/// by another thread; the child then forgets the parent's children.
pub struct ForkGuard(MutexGuard<'static, Vec<Entry>>);

impl ForkGuard {
    /// Locks the registry before forking.
    pub fn lock() -> ForkGuard {
        ForkGuard(registry())
    }

    /// In the parent: records the new child, then unlocks.
    pub fn parent(mut self, pid: u32, name: &str, daemon: bool) {
        self.0.push(Entry { pid, name: name.to_string(), daemon, code: None });
        drop(self);
        install_exit_hook();
    }

    /// In the child: the parent's children are not ours.
    pub fn child(mut self) {
        self.0.clear();
    }
}

/// Records a child started without fork (spawn).
pub fn register(pid: u32, name: &str, daemon: bool) {
    ForkGuard::lock().parent(pid, name, daemon)
}

fn install_exit_hook() {
    HOOK.call_once(|| {
        if !child::at_exit(at_exit) {
            log::warn!("shmsync: could not register the exit hook; children will not be joined at exit");
        }
    });
}

extern "C" fn at_exit() {
    // Never unwind into libc.
    let _ = std::panic::catch_unwind(shutdown);
}

/// Reaps `pid` if it has ended; its code, or `None` while it runs.
fn poll(entries: &mut [Entry], pid: u32) -> Result<Option<i32>> {
    let Some(e) = entries.iter_mut().find(|e| e.pid == pid) else {
        return Err(Error::os("waitpid", &pid.to_string(), Errno::ECHILD));
    };
    if e.code.is_none() {
        e.code = child::try_reap(pid).map_err(|err| Error::os("waitpid", &e.name, err))?;
    }
    Ok(e.code)
}

/// The exit code if the child has ended (reaping it), else `None`.
pub fn exit_code(pid: u32) -> Result<Option<i32>> {
    poll(&mut registry(), pid)
}

/// Waits for the child to end, until `deadline`; its code, or `None` if it
/// still runs then.
pub fn wait(pid: u32, deadline: Option<&Deadline>) -> Result<Option<i32>> {
    loop {
        if let Some(code) = exit_code(pid)? {
            return Ok(Some(code));
        }
        match child::await_exit(pid, deadline) {
            Ok(true) => continue,
            Ok(false) => return exit_code(pid),
            // No pidfd (old kernel) or the pid is already gone: fall back
            // to short sleeps between checks.
            Err(_) => {
                if deadline.is_some_and(|d| d.has_passed()) {
                    return exit_code(pid);
                }
                std::thread::sleep(child::FALLBACK_PAUSE);
            }
        }
    }
}

/// Sends `signal` to the child unless it has been reaped.
pub fn signal(pid: u32, signal: Signal) -> Result<()> {
    let mut entries = registry();
    if poll(&mut entries, pid)?.is_some() {
        return Ok(());
    }
    match child::signal(pid, signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(Error::os("kill", &pid.to_string(), e)),
    }
}

/// What Python does at exit: terminate daemon children, then join the rest.
/// Runs from the exit hook in the main process, and explicitly at the end of
/// every child shmsync started (which leaves with `_exit`).
pub fn shutdown() {
    log::info!("process shutting down");
    let pending: Vec<(u32, String, bool)> = {
        let mut entries = registry();
        for e in entries.iter_mut().filter(|e| e.code.is_none()) {
            e.code = child::try_reap(e.pid).ok().flatten();
        }
        entries.iter().filter(|e| e.code.is_none()).map(|e| (e.pid, e.name.clone(), e.daemon)).collect()
    };
    for (pid, name, _) in pending.iter().filter(|p| p.2) {
        log::debug!("calling terminate() for daemon {name}");
        let _ = signal(*pid, Signal::SIGTERM);
    }
    for (pid, name, daemon) in &pending {
        if !daemon {
            log::debug!("calling join() for process {name}");
        }
        let _ = wait(*pid, None);
    }
}
