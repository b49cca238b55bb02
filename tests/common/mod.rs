//! Support for tests that run across real processes.
//!
//! - [`serial`]: a lock that every test in a fork-based binary holds, so no
//!   other test thread holds a libc or std lock while one forks (nix's
//!   `FORK_MTX` habit).
//! - [`fork`]: runs a closure in a child process that leaves with `_exit`;
//!   [`Child::wait`] has a deadline and kills the child when it passes.
//! - [`Shared`]: zeroed anonymous `MAP_SHARED` memory that forked children see.
//! - [`Names`]: unique segment names for a test, and a check on drop that the
//!   test left nothing in `/dev/shm`.
#![allow(dead_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

/// The default deadline for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(30);

static FORK_MTX: Mutex<()> = Mutex::new(());

/// How long one test may run before its watchdog ends the test binary.
pub const WATCHDOG: Duration = Duration::from_secs(120);

/// Held for the whole of a test: serialises the tests of one binary, and
/// bounds the test in time.
pub struct Serial {
    _lock: MutexGuard<'static, ()>,
    _watchdog: Watchdog,
}

/// Serialises the tests of one binary (nix's `FORK_MTX` habit), and arms a
/// watchdog: every blocking call in the test, with or without its own
/// deadline, is then bounded, and a hang fails the run instead of stalling
/// CI.
pub fn serial() -> Serial {
    let lock = FORK_MTX.lock().unwrap_or_else(|e| e.into_inner());
    Serial { _lock: lock, _watchdog: Watchdog::arm(WATCHDOG) }
}

/// Aborts the process if not dropped within its time. Its thread sleeps in
/// a channel wait, holding no lock a forked child could need.
pub struct Watchdog {
    done: Option<std::sync::mpsc::Sender<()>>,
}

impl Watchdog {
    fn arm(limit: Duration) -> Watchdog {
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let test = std::thread::current().name().unwrap_or("?").to_string();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
                eprintln!("watchdog: test '{test}' ran longer than {limit:?}; aborting the test binary");
                std::process::abort();
            }
        });
        Watchdog { done: Some(done) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Dropping the sender wakes the watchdog thread with `Disconnected`.
        self.done.take();
    }
}

/// A forked child process.
pub struct Child {
    pid: Pid,
    reaped: bool,
}

/// How a child ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// `_exit(code)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(Signal),
}

/// Runs `f` in a forked child, which exits with `f`'s return value (101 if it
/// panics). The child never returns into the test harness.
pub fn fork<F: FnOnce() -> i32>(f: F) -> Child {
    // SAFETY: the caller holds `serial()`, so no other test thread is inside
    // a lock the child could need; the child runs `f` and leaves with _exit.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        ForkResult::Child => {
            let code = catch_unwind(AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: _exit ends the process without running the parent's
            // exit handlers or destructors, which belong to the parent.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Child { pid: child, reaped: false },
    }
}

impl Child {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Waits for the child to end, at most `deadline`; kills it and panics
    /// if it does not.
    pub fn wait_for(&mut self, deadline: Duration) -> End {
        let start = Instant::now();
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
                WaitStatus::Exited(_, code) => {
                    self.reaped = true;
                    return End::Exited(code);
                }
                WaitStatus::Signaled(_, sig, _) => {
                    self.reaped = true;
                    return End::Signaled(sig);
                }
                _ => {}
            }
            if start.elapsed() > deadline {
                self.kill();
                panic!("child {} did not finish within {deadline:?}; killed it", self.pid);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// How the child ended, if it has (reaping it); `None` while it runs.
    pub fn try_end(&mut self) -> Option<End> {
        if self.reaped {
            return None;
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
            WaitStatus::Exited(_, code) => {
                self.reaped = true;
                Some(End::Exited(code))
            }
            WaitStatus::Signaled(_, sig, _) => {
                self.reaped = true;
                Some(End::Signaled(sig))
            }
            _ => None,
        }
    }

    /// Waits with the default deadline.
    pub fn wait(&mut self) -> End {
        self.wait_for(DEADLINE)
    }

    /// Waits and asserts the child exited 0.
    pub fn expect_success(mut self) {
        let end = self.wait();
        assert_eq!(end, End::Exited(0), "child {} failed", self.pid);
    }

    /// Sends SIGKILL and reaps the child.
    pub fn kill(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
            self.reaped = true;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // A failing test must not leave processes behind.
        self.kill();
    }
}

/// Zeroed shared anonymous memory holding a `T`, inherited by forked
/// children. `T` must be valid when all-zero (atomics, integers).
pub struct Shared<T> {
    ptr: *mut T,
}

// SAFETY: the memory is shared by design; tests put only atomics in it, or
// fields written under a lock.
unsafe impl<T> Sync for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Send for Shared<T> {}

impl<T> Shared<T> {
    /// Maps a zeroed `T`.
    pub fn new() -> Shared<T> {
        let len = std::mem::size_of::<T>().max(1);
        // SAFETY: an anonymous shared mapping with no address hint; the kernel
        // returns zeroed, page-aligned memory or MAP_FAILED.
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
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        Shared { ptr: ptr.cast() }
    }

    /// A raw pointer, for non-atomic fields written under a lock.
    pub fn as_ptr(&self) -> *mut T {
        self.ptr
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the mapping is valid, aligned and zeroed, which the caller
        // promised is a valid T, and lives until drop.
        unsafe { &*self.ptr }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no reference
        // outlives `self`.
        unsafe { libc::munmap(self.ptr.cast(), std::mem::size_of::<T>().max(1)) };
    }
}

/// Spins (with yields) until `flag` reaches `value`, or panics at the deadline.
pub fn await_value(flag: &AtomicU32, value: u32, what: &str) {
    let start = Instant::now();
    while flag.load(Ordering::Acquire) < value {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Polls `cond` until it holds, or panics at the deadline.
pub fn await_true(mut cond: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Unique segment names for one test, and a leak check: on drop it fails the
/// test if any segment with its prefix is left in /dev/shm (and removes it).
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names for the test called `test`.
    pub fn new(test: &str) -> Names {
        Names { prefix: format!("shmsync-test.{}.{test}", std::process::id()) }
    }

    /// The name of segment `what`.
    pub fn get(&self, what: &str) -> String {
        format!("{}.{what}", self.prefix)
    }

    /// Segments with this test's prefix currently in /dev/shm.
    pub fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir("/dev/shm")
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&self.prefix))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        let left = self.leftovers();
        for name in &left {
            let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
        }
        if !left.is_empty() && !std::thread::panicking() {
            panic!("test left segments in /dev/shm: {left:?}");
        }
    }
}

/// Whether the process has a thread sleeping in a futex wait (from
/// /proc/<pid>/task/*/wchan), so tests of exact wake counts can let every
/// waiter fall asleep first.
pub fn is_futex_sleeping(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks
        .filter_map(|t| t.ok())
        .any(|t| std::fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w.starts_with("futex")))
}

/// Waits until each of `pids` has a thread asleep in a futex wait.
pub fn await_futex_sleep(pids: &[u32]) {
    let start = Instant::now();
    while !pids.iter().all(|&p| is_futex_sleeping(p)) {
        assert!(start.elapsed() < DEADLINE, "waiters never fell asleep");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// In a forked child: SIGKILL this process the moment it reaches the crash
/// point `name` (a `failpoints` build only).
#[cfg(feature = "failpoints")]
pub fn die_at(name: &'static str) {
    shmsync::__private::fail::cfg_callback(name, || {
        let _ = kill(nix::unistd::Pid::this(), Signal::SIGKILL);
    })
    .expect("configure crash point");
}

/// The temporary files (`.shmsync-init.<pid>.*`) that a creator killed
/// mid-create left in /dev/shm; removes them, and returns their names.
pub fn remove_init_debris(pid: u32) -> Vec<String> {
    let prefix = format!(".shmsync-init.{pid}.");
    let names: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    for name in &names {
        let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
    }
    names
}

/// Writes `bytes` at `offset` of segment `name`'s file, as a buggy or
/// hostile peer could.
pub fn scribble(name: &str, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/{name}")).expect("open segment file");
    file.write_all_at(bytes, offset).expect("write segment file");
}

/// Runs `ops` in a fresh single-threaded child and returns how many
/// `FUTEX_WAKE` syscalls they made (at most 255).
pub fn futex_wakes_in_child(ops: impl FnOnce()) -> u64 {
    let mut child = fork(|| {
        let before = shmsync::__private::futex_wake_calls();
        ops();
        (shmsync::__private::futex_wake_calls() - before).min(255) as i32
    });
    match child.wait() {
        End::Exited(n) => n as u64,
        other => panic!("the counting child ended with {other:?}"),
    }
}

/// SIGKILLs each child and reaps it.
pub fn kill_all(children: Vec<Child>) {
    for mut child in children {
        child.kill();
    }
}

/// The tid of a thread that has exited: a lock word naming it names nobody.
pub fn dead_tid() -> u32 {
    let mut child = fork(|| 0);
    let pid = child.pid();
    assert_eq!(child.wait(), End::Exited(0));
    pid
}

/// Where a segment's object starts (the header's size).
pub const OBJECT_OFFSET: u64 = 128;

/// Every crash point the crate declares.
pub fn crash_points() -> Vec<&'static str> {
    shmsync::__private::CRASH_POINTS.iter().flat_map(|group| group.iter().copied()).collect()
}

/// Whether process `pid` is stopped (by SIGSTOP).
pub fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| t.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('T')))
        .unwrap_or(false)
}
