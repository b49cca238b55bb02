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

    /// Whether this thread could hold something in the shared memory at
    /// `addr` (a lock, a reader's share, a waiter's slot): it is alive, and
    /// its process maps the file behind `addr`. A task that does not map the
    /// memory holds nothing in it, whatever a word there says: garbage that
    /// names a live stranger (a kernel thread, say), or an id the kernel
    /// recycled for an unrelated process. Where that cannot be told (private
    /// memory, maps we may not read), alive is enough: callers act on "cannot
    /// hold" only, so doubt must read as "could". Reads `/proc`: for slow
    /// paths only.
    pub fn could_hold(&self, addr: usize) -> bool {
        if !self.is_alive() {
            return false;
        }
        let Some(file) = backing_file(addr) else { return true };
        maps_file(self.id, &file) != Some(false)
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

/// The file (device and inode, as `/proc/*/maps` writes them) behind this
/// process's mapping of `addr`; `None` for private anonymous memory (inode
/// 0), an address no mapping holds, or an unreadable `/proc/self/maps`.
/// Shared anonymous memory has an inode of its own, shared across `fork`.
pub fn backing_file(addr: usize) -> Option<(String, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let (range, dev, inode) = maps_fields(line)?;
        let (start, end) = range.split_once('-')?;
        let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
        ((start..end).contains(&addr) && inode != 0).then(|| (dev.to_string(), inode))
    })
}

/// Whether process or thread `id` maps the file `(dev, inode)`: `None` when
/// its maps cannot be read (gone, another user's, not dumpable).
pub fn maps_file(id: u32, file: &(String, u64)) -> Option<bool> {
    if id == 0 || i32::try_from(id).is_err() {
        return None;
    }
    // Empty for a kernel thread (no user memory at all) and a zombie: neither
    // maps anything. (An exec drops the robust locks a task held, so a task
    // between exec and its first mapping holds none either.)
    let maps = std::fs::read_to_string(format!("/proc/{id}/maps")).ok()?;
    Some(maps_contain(&maps, file))
}

/// Whether the text of a `/proc/*/maps` file names `(dev, inode)`.
fn maps_contain(maps: &str, file: &(String, u64)) -> bool {
    maps.lines().filter_map(maps_fields).any(|(_, dev, inode)| dev == file.0 && inode == file.1)
}

/// The address range, device and inode of a `/proc/*/maps` line.
fn maps_fields(line: &str) -> Option<(&str, &str, u64)> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let dev = fields.nth(2)?;
    let inode = fields.next()?.parse().ok()?;
    Some((range, dev, inode))
}

/// Whether `tid` is a thread of this process.
pub fn is_thread_of_this_process(tid: u32) -> bool {
    tid != 0 && std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_memory_is_traced_to_its_file_and_its_mappers() {
        let len = 4096;
        // SAFETY: an anonymous shared mapping with no address hint; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        let file = backing_file(ptr as usize + 8).expect("shared memory has an inode");
        assert_eq!(maps_file(pid(), &file), Some(true));
        assert_eq!(maps_file(tid(), &file), Some(true), "a thread's maps are its process's");
        // Another process that exists but never mapped it.
        assert!(!maps_file(1, &file).unwrap_or(false));
        assert!(!maps_contain("", &file), "a kernel thread's empty maps hold nothing");
        let at = ptr as usize + 8;
        assert!(Identity::this_thread().could_hold(at));
        assert!(!Identity { id: 1, start: 0 }.could_hold(at) || maps_file(1, &file).is_none());
        assert!(!Identity { id: 0x3fff_fff0, start: 0 }.could_hold(at));
        // Private memory (a heap box) has no file to trace.
        let boxed = Box::new(0u64);
        assert_eq!(backing_file(&*boxed as *const u64 as usize), None);
        // SAFETY: unmapping what was mapped above, which nothing uses any more.
        unsafe { libc::munmap(ptr, len) };
    }

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
