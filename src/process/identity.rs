//! Who this process is: its name, whether shmsync started it, and the
//! counters that name the children it starts.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

/// The name of a process shmsync did not start.
pub const MAIN_NAME: &str = "MainProcess";

/// This process's name; null means [`MAIN_NAME`]. Set once in each child
/// right after fork (or at the spawn entry), and leaked, so that reading it
/// takes no lock — a lock could be held by a parent thread at fork time.
static NAME: AtomicPtr<String> = AtomicPtr::new(std::ptr::null_mut());
/// Whether shmsync started this process (fork or spawn).
static IS_CHILD: AtomicBool = AtomicBool::new(false);
/// Constructions so far in this process, for `Process-N` and `TypeName-N`.
static CONSTRUCTED: AtomicU32 = AtomicU32::new(0);

/// The current process's name.
pub fn name() -> &'static str {
    let p = NAME.load(Ordering::Acquire);
    if p.is_null() {
        MAIN_NAME
    } else {
        // SAFETY: non-null values are leaked `Box<String>`s, never freed.
        unsafe { (*p).as_str() }
    }
}

/// Whether shmsync started this process.
pub fn is_child() -> bool {
    IS_CHILD.load(Ordering::Relaxed)
}

/// Becomes the child called `name`: a fresh counter for its own children.
pub fn become_child(name: &str) {
    let leaked = Box::into_raw(Box::new(name.to_string()));
    NAME.store(leaked, Ordering::Release);
    IS_CHILD.store(true, Ordering::Relaxed);
    CONSTRUCTED.store(0, Ordering::Relaxed);
}

/// The default name of the next process constructed here: `Prefix-N` in the
/// main process, `<this name>:N` in a child (N counts from 1 in each process,
/// advancing on every construction, as in Python).
pub fn next_default_name(prefix: &str) -> String {
    let n = CONSTRUCTED.fetch_add(1, Ordering::Relaxed) + 1;
    if is_child() {
        format!("{}:{n}", name())
    } else {
        format!("{prefix}-{n}")
    }
}
