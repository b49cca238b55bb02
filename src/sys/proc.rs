//! Process and thread identity.

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

/// Whether the calling thread may run on more than one CPU (its affinity
/// mask), i.e. whether a peer could be running at the same moment, which is
/// when spinning can pay. Cached per thread and process: a forked child
/// checks again.
pub fn can_run_in_parallel() -> bool {
    use std::cell::Cell;
    thread_local! {
        // (pid the answer was computed in, answer)
        static CACHE: Cell<(u32, bool)> = const { Cell::new((0, true)) };
    }
    let me = pid();
    CACHE.with(|c| {
        let (cached_pid, answer) = c.get();
        if cached_pid == me {
            return answer;
        }
        let answer = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .map(|set| (0..nix::sched::CpuSet::count()).filter(|&i| set.is_set(i).unwrap_or(false)).nth(1).is_some())
            .unwrap_or(true);
        c.set((me, answer));
        answer
    })
}
