//! Process and thread identity: pids, tids, start times and liveness.
//!
//! A pid or tid alone does not name a process for long: the kernel recycles
//! them. Where the crate records who waits or who created something, it also
//! records the start time (`/proc/<id>/stat` field 22, clock ticks since
//! boot), and the pair names one process or thread for the life of the
//! machine. All processes that share a segment must share one pid namespace
//! (tids in the robust mutex words are in the owner's namespace).

/// This process's id.
pub fn pid() -> u32 {
    std::process::id()
}

/// The calling thread's kernel id, the value a robust mutex records as owner
/// (cached per thread without a syscall: see [`super::thread`]).
pub fn tid() -> u32 {
    super::thread::this_thread().id
}

/// A thread or process as the kernel knows it now: its id and start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The pid or tid.
    pub id: u32,
    /// Its start time in clock ticks since boot; 0 if unknown.
    pub start: u64,
}

impl Identity {
    /// The calling thread (read from /proc once per thread, then cached;
    /// see [`super::thread`]).
    pub fn this_thread() -> Identity {
        super::thread::this_thread()
    }

    /// This process (its main thread's identity).
    pub fn this_process() -> Identity {
        let id = pid();
        Identity { id, start: start_time(id).unwrap_or(0) }
    }

    /// Whether this thread or process still runs: the id exists, is not a
    /// zombie, and (when a start time was recorded) started at that time, so
    /// a recycled id does not pass for the one recorded. When `/proc` hides
    /// the id from us (`hidepid`), an id the kernel says exists counts as
    /// alive: callers act on "dead" only, so doubt must read as alive.
    pub fn is_alive(&self) -> bool {
        let Ok(raw) = i32::try_from(self.id) else { return false };
        if raw <= 0 {
            return false;
        }
        // kill(2) with signal 0 finds any pid or tid; ESRCH means no such task.
        if let Err(nix::errno::Errno::ESRCH) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
            return false;
        }
        match stat(self.id) {
            None => true,
            Some(stat) => !stat.zombie && (self.start == 0 || stat.start == self.start),
        }
    }
}

/// What `/proc/<id>/stat` says that the crate needs.
struct Stat {
    zombie: bool,
    start: u64,
}

/// Reads `/proc/<id>/stat`, which exists for every live pid and tid (a
/// thread's entry is not listed in `/proc` but can be opened by path).
fn stat(id: u32) -> Option<Stat> {
    if id == 0 || i32::try_from(id).is_err() {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{id}/stat")).ok()?;
    // Fields follow the last ')': the command name before it may contain
    // spaces and parentheses. After it: state (field 3), ..., starttime (22).
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some(Stat { zombie: state.starts_with(['Z', 'X']), start })
}

/// The start time of process or thread `id`, in clock ticks since boot.
pub fn start_time(id: u32) -> Option<u64> {
    stat(id).map(|s| s.start)
}

/// Whether `tid` is a thread of this process.
pub fn is_thread_of_this_process(tid: u32) -> bool {
    tid != 0 && std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_is_alive_and_a_recycled_id_is_not() {
        let me = Identity::this_thread();
        assert_eq!(me.id, tid());
        assert!(me.start > 0);
        assert!(me.is_alive());
        assert!(!Identity { start: me.start + 1, ..me }.is_alive());
        assert!(is_thread_of_this_process(me.id));
        assert!(Identity::this_process().is_alive());
    }

    #[test]
    fn a_finished_thread_is_dead() {
        let other = std::thread::spawn(Identity::this_thread).join().unwrap();
        assert!(!other.is_alive());
        assert!(!is_thread_of_this_process(other.id));
        assert!(!Identity { id: 0, start: 0 }.is_alive());
        assert!(!Identity { id: u32::MAX, start: 0 }.is_alive());
    }
}
