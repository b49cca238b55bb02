//! Scaffolding shared by the criterion benches and the ipc_cost study: a
//! cache-line wrapper, an anonymous `MAP_SHARED` mapping that forked children
//! inherit, forking children that `_exit` and are reaped with a bounded
//! pidfd wait, CPU-time readings ([`CpuTimes`]) and the criterion settings
//! the benches' groups share ([`in_process_config`], [`forking_config`]);
//! and, in submodules, the mechanisms and samples that `benches/queue.rs`
//! ([`messages`]) and `benches/handoff.rs` ([`handoff`]) share with the
//! study.

// Each bench compiles this module into its own crate and uses only part of
// it; the rest would warn as dead code there.
#![allow(dead_code)]

#[cfg(feature = "connection")]
pub mod connections;
pub mod handoff;
pub mod messages;
pub mod rwlock;

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::io::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;

/// How long a child, or a wait on or in one, may take before the bench gives
/// up: `lock` bounds its waits with it, `handoff`'s children arm `alarm`
/// with it.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The criterion settings of a group whose samples run in this process
/// (lock+unlock pairs, flag reads): a short warm-up and window, 20 samples.
pub fn in_process_config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

/// The criterion settings of a group whose every sample forks: fewer and
/// longer samples than [`in_process_config`]'s, so fewer forks.
pub fn forking_config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(10)
}

/// One cache line, so neighbouring fields of a shared struct do not
/// false-share.
#[repr(C, align(64))]
pub struct Line<T>(pub T);

/// The smallest page size on Linux; every mapping is aligned to at least it.
const MIN_PAGE: usize = 4096;

/// Types a fresh anonymous mapping holds a valid value of.
///
/// # Safety
/// All-zero bytes must be a valid value of the type.
pub unsafe trait ZeroValid {}

/// An anonymous `MAP_SHARED` mapping holding one `T`, inherited across `fork`
/// at the same address and unmapped on drop.
pub struct Mapping<T: ZeroValid>(NonNull<T>);

impl<T: ZeroValid> Mapping<T> {
    pub fn new() -> Mapping<T> {
        assert!(std::mem::align_of::<T>() <= MIN_PAGE, "a page does not align the mapped type");
        let len = std::mem::size_of::<T>();
        // SAFETY: an anonymous mapping with a null hint touches no existing
        // memory; the result is checked before use.
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
        assert_ne!(ptr, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        Mapping(NonNull::new(ptr.cast()).expect("mmap returned null"))
    }

    pub fn shared(&self) -> &T {
        // SAFETY: the mapping is page-aligned (enough for `T`, checked in
        // `new`), zero-filled (a valid `T`, as `T: ZeroValid` promises) and
        // stays mapped until `self` drops.
        unsafe { self.0.as_ref() }
    }
}

impl<T: ZeroValid> Drop for Mapping<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `Mapping::new` with this length, and
        // every borrow of it (from `shared`) has ended with `self`'s borrow.
        unsafe { libc::munmap(self.0.as_ptr().cast(), std::mem::size_of::<T>()) };
    }
}

/// A forked child, killed and reaped on drop unless already reaped, so no
/// path out of a sample (a panic included) leaves one behind.
pub struct Child {
    /// What the child does, for messages.
    pub role: &'static str,
    pub pid: libc::pid_t,
    pidfd: OwnedFd,
    reaped: bool,
}

impl Child {
    /// Reaps the child, which must have exited, and returns its wait status.
    fn reap(&mut self) -> libc::c_int {
        let mut status = 0;
        // SAFETY: `pid` is our unreaped child; `status` is writable.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(rc, self.pid, "waitpid: {}", std::io::Error::last_os_error());
        self.reaped = true;
        status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: `pid` is our child and not yet reaped, so it still names
            // that process (or its zombie), never a reused pid.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// True if a wait status says the process exited with code 0.
pub fn exited_cleanly(status: libc::c_int) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// The body of a forked child: arm `SIGKILL` on the parent's death, run
/// `body`, and `_exit` with its code, never returning into criterion. Exit
/// code 3 means the parent was gone, 101 that `body` panicked.
fn child_main(parent: libc::pid_t, body: &dyn Fn() -> i32) -> ! {
    let code = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on this process.
        let armed = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == 0;
        // SAFETY: getppid has no preconditions. The check catches a parent
        // that died before the flag was set.
        if !armed || unsafe { libc::getppid() } != parent {
            return 3;
        }
        body()
    }))
    .unwrap_or(101);
    // SAFETY: _exit ends the process at once, without running the parent's
    // destructors or atexit handlers in this copy of it.
    unsafe { libc::_exit(code) }
}

/// Forks a child running [`child_main`] with `body` and opens a pidfd for it.
///
/// # Safety
/// The calling process must have only one thread, so that the child inherits
/// no lock held by another thread; and `body` may touch only what stays
/// usable in a forked copy of it (the inherited mapping, the primitives under
/// test), as `child_main` touches nothing else but `_exit`.
pub unsafe fn spawn(role: &'static str, body: &dyn Fn() -> i32) -> Child {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the caller vouches that this process has one thread and for
    // what `body` touches in the child.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => child_main(parent, body),
        _ => {}
    }
    // SAFETY: pidfd_open takes a pid and flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        // SAFETY: `pid` is our unreaped child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        panic!("pidfd_open (Linux >= 5.3 needed): {err}");
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    Child { role, pid, pidfd, reaped: false }
}

/// Blocks until every child has exited and reaps each, passing it and its
/// wait status to `check` (which panics on a failure; the drops kill the
/// rest). Returns false, with the unreaped children still alive, if
/// `deadline` passes first.
#[must_use]
pub fn reap_all(children: &mut [Child], deadline: Instant, mut check: impl FnMut(&Child, libc::c_int)) -> bool {
    while children.iter().any(|c| !c.reaped) {
        let mut fds: Vec<libc::pollfd> = children
            .iter()
            .filter(|c| !c.reaped)
            .map(|c| libc::pollfd { fd: c.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a live array of `fds.len()` pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "poll: {err}");
            continue;
        }
        if n == 0 {
            return false;
        }
        for fd in fds.iter().filter(|fd| fd.revents != 0) {
            let child = children.iter_mut().find(|c| c.pidfd.as_raw_fd() == fd.fd);
            let child = child.expect("pidfd of a live child");
            let status = child.reap();
            check(child, status);
        }
    }
    true
}

/// Spins (yielding every 64 spins) until `done` holds; false if `deadline`
/// passes first.
pub fn spin_until(deadline: Instant, done: impl Fn() -> bool) -> bool {
    let mut spins = 0u32;
    while !done() {
        spins = spins.wrapping_add(1);
        if spins & 63 == 0 {
            if Instant::now() >= deadline {
                return false;
            }
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        } else {
            std::hint::spin_loop();
        }
    }
    true
}

/// Panics with the OS error if a pthread-style return code is not 0.
pub fn check_rc(call: &str, rc: i32) {
    if rc != 0 {
        panic!("{call} failed: {}", std::io::Error::from_raw_os_error(rc));
    }
}

/// Initialises a process-shared pthread mutex at `mutex`: robust and
/// error-checking as shmsync's `RawLock` is, or a plain `NORMAL` one.
///
/// # Safety
/// `mutex` must be valid for writes and aligned, and no thread in any process
/// may use it until this returns.
pub unsafe fn init_pthread(mutex: *mut libc::pthread_mutex_t, robust: bool) {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    let attr = attr.as_mut_ptr();
    let kind = if robust { libc::PTHREAD_MUTEX_ERRORCHECK } else { libc::PTHREAD_MUTEX_NORMAL };
    // SAFETY: `attr` is writable storage, initialised by the first call before
    // the others use it and destroyed last; the caller vouches for `mutex`.
    unsafe {
        check_rc("pthread_mutexattr_init", libc::pthread_mutexattr_init(attr));
        check_rc("pthread_mutexattr_settype", libc::pthread_mutexattr_settype(attr, kind));
        check_rc(
            "pthread_mutexattr_setpshared",
            libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED),
        );
        if robust {
            check_rc(
                "pthread_mutexattr_setrobust",
                libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST),
            );
        }
        check_rc("pthread_mutex_init", libc::pthread_mutex_init(mutex, attr));
        libc::pthread_mutexattr_destroy(attr);
    }
}

/// Initialises the process-shared POSIX semaphore at `sem` with `value`.
///
/// # Safety
/// `sem` must be valid for writes, aligned, and unused by anyone until this
/// returns.
pub unsafe fn sem_init_shared(sem: *mut libc::sem_t, value: u32) {
    // SAFETY: forwarded from the caller; pshared = 1 because the semaphore
    // lives in a MAP_SHARED mapping used across fork.
    let rc = unsafe { libc::sem_init(sem, 1, value) };
    assert_eq!(rc, 0, "sem_init: {}", std::io::Error::last_os_error());
}

/// `sem_post`, checked.
///
/// # Safety
/// `sem` must be an initialised semaphore that stays mapped for the call.
pub unsafe fn sem_post(sem: *mut libc::sem_t) {
    // SAFETY: forwarded from the caller.
    let rc = unsafe { libc::sem_post(sem) };
    assert_eq!(rc, 0, "sem_post: {}", std::io::Error::last_os_error());
}

/// `sem_wait`, checked and retried on `EINTR`.
///
/// # Safety
/// As for [`sem_post`].
pub unsafe fn sem_wait(sem: *mut libc::sem_t) {
    // SAFETY: forwarded from the caller.
    while unsafe { libc::sem_wait(sem) } != 0 {
        let err = std::io::Error::last_os_error();
        assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "sem_wait: {err}");
    }
}

/// After a run: reads the semaphore at `sem`, destroys it, and says whether
/// its value was `expected`.
///
/// # Safety
/// `sem` must be an initialised semaphore that nobody else uses now (no
/// child alive), so it can be read and then destroyed; it is not used again.
pub unsafe fn sem_destroy_expecting(sem: *mut libc::sem_t, expected: i32) -> Result<(), String> {
    let mut value = -1;
    // SAFETY: forwarded from the caller.
    unsafe {
        libc::sem_getvalue(sem, &mut value);
        libc::sem_destroy(sem);
    }
    if value != expected {
        return Err(format!("after the run the semaphore's value is {value}, expected {expected}"));
    }
    Ok(())
}

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    let set = sched_getaffinity(nix::unistd::Pid::from_raw(0)).expect("sched_getaffinity");
    (0..CpuSet::count()).filter(|&i| set.is_set(i).unwrap_or(false)).collect()
}

/// Pins the calling thread (of a single-threaded process: the process) to `cpu`.
pub fn pin_to(cpu: usize) -> nix::Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

/// Forks a child that arms a `SIGALRM` after [`DEADLINE`], pins itself to
/// `cpu` (if any; exit code 2 if that fails) and exits with `body`'s code.
/// Pinning comes before `body` first touches a primitive: shmsync decides
/// once per thread and pid whether spinning can help.
///
/// # Safety
/// As for [`spawn`].
pub unsafe fn spawn_pinned(role: &'static str, cpu: Option<usize>, body: &dyn Fn() -> i32) -> Child {
    // SAFETY: forwarded from the caller.
    unsafe { spawn_deadline(role, DEADLINE, cpu, body) }
}

/// As [`spawn_pinned`], with the `SIGALRM` after `deadline` (whole seconds).
///
/// # Safety
/// As for [`spawn`].
pub unsafe fn spawn_deadline(
    role: &'static str,
    deadline: Duration,
    cpu: Option<usize>,
    body: &dyn Fn() -> i32,
) -> Child {
    let child_body = || {
        // SAFETY: alarm only arms this process's timer; SIGALRM keeps its
        // default action (terminate), which is the deadline.
        unsafe { libc::alarm(deadline.as_secs() as libc::c_uint) };
        if let Some(cpu) = cpu {
            if pin_to(cpu).is_err() {
                return 2;
            }
        }
        body()
    };
    // SAFETY: forwarded from the caller; `alarm` and the pinning touch only
    // the child's own timer and affinity.
    unsafe { spawn(role, &child_body) }
}

/// `None` if the wait `status` says the child exited 0, else how it failed.
pub fn exit_problem(child: &Child, status: libc::c_int) -> Option<String> {
    if exited_cleanly(status) {
        return None;
    }
    let codes = "2: pinning failed, 3: parent gone, 4: no start signal, 101: panic";
    Some(describe_exit(child, status, DEADLINE, codes))
}

/// Says how a child that did not exit 0, reaped with wait `status`, failed:
/// `deadline` is its `alarm`, `codes` what its exit codes mean.
pub fn describe_exit(child: &Child, status: libc::c_int, deadline: Duration, codes: &str) -> String {
    let how = if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM {
        format!("still running after {deadline:?} (killed by its SIGALRM deadline)")
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("exited with code {} ({codes})", libc::WEXITSTATUS(status))
    };
    format!("the {} (pid {}) {how}", child.role, child.pid)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process, so a
/// child can stamp a time the parent compares with its own.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is writable; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User and system CPU time, in nanoseconds, as `getrusage(2)` reports it
/// (microsecond resolution).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user_ns: u64,
    pub sys_ns: u64,
}

impl CpuTimes {
    /// User plus system time.
    pub fn total_ns(self) -> u64 {
        self.user_ns + self.sys_ns
    }

    /// What was spent between `earlier` and `self` (zero, not a wrap, if a
    /// reading went backwards).
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user_ns: self.user_ns.saturating_sub(earlier.user_ns),
            sys_ns: self.sys_ns.saturating_sub(earlier.sys_ns),
        }
    }

    /// The sum of two spans.
    pub fn plus(self, other: CpuTimes) -> CpuTimes {
        CpuTimes { user_ns: self.user_ns + other.user_ns, sys_ns: self.sys_ns + other.sys_ns }
    }

    fn of(who: libc::c_int) -> CpuTimes {
        // SAFETY: an all-zero rusage is a valid value to be overwritten.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is writable; RUSAGE_SELF and RUSAGE_CHILDREN always exist.
        let rc = unsafe { libc::getrusage(who, &mut ru) };
        assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
        let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
        CpuTimes { user_ns: ns(ru.ru_utime), sys_ns: ns(ru.ru_stime) }
    }

    /// This process's CPU time so far, all its threads together.
    pub fn this_process() -> CpuTimes {
        CpuTimes::of(libc::RUSAGE_SELF)
    }

    /// The CPU time of every child (and their descendants) that this
    /// process has reaped so far, over their whole lives.
    pub fn reaped_children() -> CpuTimes {
        CpuTimes::of(libc::RUSAGE_CHILDREN)
    }
}

/// Where a forked child leaves the CPU time of its timed window for the
/// parent, in a shared mapping. All-zero bytes are a valid value.
#[repr(C)]
#[derive(Default)]
pub struct CpuSlot {
    user_ns: AtomicU64,
    sys_ns: AtomicU64,
}

impl CpuSlot {
    pub fn store(&self, t: CpuTimes) {
        self.user_ns.store(t.user_ns, Ordering::Relaxed);
        self.sys_ns.store(t.sys_ns, Ordering::Relaxed);
    }

    /// The stored times; the parent reads them after reaping the child,
    /// which orders them (waitpid synchronises with the child's exit).
    pub fn load(&self) -> CpuTimes {
        CpuTimes { user_ns: self.user_ns.load(Ordering::Relaxed), sys_ns: self.sys_ns.load(Ordering::Relaxed) }
    }
}

/// The CPU time a running process `pid` (all its threads) has used so far,
/// in nanoseconds, from its CPU-time clock (`clock_getcpuclockid(3)`): for
/// long-lived children, such as a pool's workers, that this process cannot
/// reap between samples.
pub fn process_cpu_ns(pid: libc::pid_t) -> Result<u64, String> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is writable; the call only looks the pid up.
    let rc = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    if rc != 0 {
        return Err(format!("clock_getcpuclockid({pid}): {}", std::io::Error::from_raw_os_error(rc)));
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is writable and `clock` a CPU-time clock id from above.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(format!("clock_gettime(CPU clock of {pid}): {}", std::io::Error::last_os_error()));
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}
