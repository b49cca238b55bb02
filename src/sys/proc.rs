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
