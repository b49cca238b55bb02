//! Process and thread identity.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

/// This process's id.
pub fn pid() -> u32 {
    std::process::id()
}

/// The calling thread's kernel id, the value a robust mutex records as owner.
#[cfg(test)]
pub fn tid() -> u32 {
    u32::try_from(nix::unistd::gettid().as_raw()).unwrap_or(0)
}

/// Whether a process with this pid is running. A zombie (dead, not yet reaped)
/// is not; a pid we may not signal (`EPERM`) is.
pub fn is_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => !is_zombie(pid),
        Err(_) => false,
    }
}

fn is_zombie(pid: u32) -> bool {
    // The state letter follows the last ')' of /proc/<pid>/stat; the command
    // name before it may itself contain ')'.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])))
        .unwrap_or(false)
}

/// Bumped in the child after every fork (a `pthread_atfork` handler), so
/// per-thread caches copied by fork can tell; reading it costs one load, not
/// the `getpid` syscall.
static FORK_GENERATION: AtomicU32 = AtomicU32::new(1);
static AT_FORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// The current fork generation; registers the handler on first use (before
/// any cache it guards is filled).
fn fork_generation() -> u32 {
    AT_FORK.call_once(|| {
        // SAFETY: the handler is a plain function that only bumps an atomic,
        // which is async-signal-safe and valid in the child after fork.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Whether the calling thread may run on more than one CPU (its affinity
/// mask), i.e. whether a peer could be running at the same moment, which is
/// when spinning can pay. Cached per thread, and checked again in a forked
/// child; a change of affinity after the first check is not seen.
pub fn can_run_in_parallel() -> bool {
    use std::cell::Cell;
    thread_local! {
        // (fork generation the answer was computed in, answer)
        static CACHE: Cell<(u32, bool)> = const { Cell::new((0, true)) };
    }
    let generation = fork_generation();
    CACHE.with(|c| {
        let (cached, answer) = c.get();
        if cached == generation {
            return answer;
        }
        let answer = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .map(|set| (0..nix::sched::CpuSet::count()).filter(|&i| set.is_set(i).unwrap_or(false)).nth(1).is_some())
            .unwrap_or(true);
        c.set((generation, answer));
        answer
    })
}
