//! `Process`: start a function in a child process, in the manner of Python's
//! `multiprocessing.Process`.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{children, identity, spawn};
use crate::error::{Error, Result};
use crate::sys::child::{self, Forked};
use crate::sys::time::Deadline;

/// What a process target may return: `()`, or a `Result` whose error is
/// printed as `Process <name>: <error>` and gives exit code 1.
pub trait Outcome {
    /// The exit code, printing the error if there is one.
    fn exit_code(self, name: &str) -> i32;
}

impl Outcome for () {
    fn exit_code(self, _: &str) -> i32 {
        0
    }
}

impl<E: std::fmt::Debug> Outcome for std::result::Result<(), E> {
    fn exit_code(self, name: &str) -> i32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                report!("Process {name}: {e:?}");
                1
            }
        }
    }
}

/// A worker type with a `run` method: the Rust form of subclassing
/// `multiprocessing.Process`. Started with [`Process::from_run`], it is named
/// `TypeName-N`.
///
/// ```
/// use shmsync::{Process, Run};
/// struct Worker;
/// impl Run for Worker {
///     fn run(self) {
///         println!("In {}", shmsync::current().name());
///     }
/// }
/// let p = Process::from_run(Worker);
/// p.start()?;
/// p.join()?;
/// # Ok::<(), shmsync::Error>(())
/// ```
pub trait Run: Send + 'static {
    /// The work, run in the child.
    fn run(self);
}

type Target = Box<dyn FnOnce(&str) -> i32 + Send>;

/// How the child is started.
enum Method {
    Fork(Target),
    Spawn { entry: String, args: Vec<u8> },
}

/// A child process running a function (Python's `multiprocessing.Process`).
///
/// Build it with [`new`](Self::new) (fork), [`from_run`](Self::from_run) or
/// [`spawn`](Self::spawn) (re-execute this binary), then [`start`](Self::start)
/// and [`join`](Self::join). Exit codes follow Python: 0 when the target
/// returns, `N` for [`exit(N)`](crate::process::exit), 1 for a panic or an
/// `Err`, and `-signal` when a signal killed it.
///
/// At the parent's normal exit, daemon children are terminated and the others
/// joined. Dropping a handle neither kills nor joins.
///
/// # Notes
/// The fork start method copies the whole process. In the child, the target
/// runs with only the forking thread; if other threads held a lock at that
/// moment (for instance inside a library), the child may deadlock on it.
/// shmsync logs a warning when it forks a multi-threaded process, as Python
/// 3.12 does; the spawn start method has no such hazard. The locks shmsync
/// itself needs in the child (its child registry, and std's stdout and
/// stderr, for logging and the exit flush) are taken across the fork, so
/// `start` waits for another thread that holds stdout or stderr.
///
/// ```
/// use shmsync::Process;
/// let p = Process::new(|| println!("Worker"));
/// p.start()?;
/// assert_eq!(p.join()?, 0);
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct Process {
    name: String,
    daemon: bool,
    method: Mutex<Option<Method>>,
    pid: OnceLock<u32>,
    /// A pidfd for the child, opened at `start`.
    pidfd: OnceLock<std::os::fd::OwnedFd>,
}

impl Process {
    fn with_method(name: String, method: Method) -> Process {
        Process { name, daemon: false, method: Mutex::new(Some(method)), pid: OnceLock::new(), pidfd: OnceLock::new() }
    }

    /// A process that will run `target` in a forked child. It is named
    /// `Process-N` (or `<parent name>:N` inside a child).
    ///
    /// A target that never returns (it always calls [`exit`](crate::process::exit)
    /// or panics) has the type `!`, which cannot choose an [`Outcome`] on
    /// stable Rust; name it `()`: `Process::new::<_, ()>(|| shmsync::process::exit(1))`.
    pub fn new<F, R>(target: F) -> Process
    where
        F: FnOnce() -> R + Send + 'static,
        R: Outcome,
    {
        let target: Target = Box::new(move |name| target().exit_code(name));
        Process::with_method(identity::next_default_name("Process"), Method::Fork(target))
    }

    /// A process that will call `worker.run()` in a forked child, named
    /// `TypeName-N` after the worker's type.
    pub fn from_run<W: Run>(worker: W) -> Process {
        let full = std::any::type_name::<W>();
        let short = full.split('<').next().unwrap_or(full).rsplit("::").next().unwrap_or(full);
        let target: Target = Box::new(move |_| {
            worker.run();
            0
        });
        Process::with_method(identity::next_default_name(short), Method::Fork(target))
    }

    /// A process that will re-execute this binary and run the entry called
    /// `entry` with `args`: the spawn start method. The entry must be
    /// registered with [`process::entries`](crate::process::entries) at the
    /// top of `main`. Safe to use from a multi-threaded parent.
    ///
    /// `Err(InvalidArgument)` if `args` cannot be encoded.
    pub fn spawn<A: serde::Serialize>(entry: &str, args: &A) -> Result<Process> {
        let args = postcard::to_allocvec(args).map_err(|e| Error::InvalidArgument {
            name: entry.to_string(),
            detail: format!("the arguments cannot be encoded: {e}"),
        })?;
        Ok(Process::with_method(
            identity::next_default_name("Process"),
            Method::Spawn { entry: entry.to_string(), args },
        ))
    }

    /// Names the process (builder style).
    pub fn with_name(mut self, name: impl Into<String>) -> Process {
        self.name = name.into();
        self
    }

    /// Makes the process a daemon (builder style): it is terminated when the
    /// parent exits normally, and killed (`PR_SET_PDEATHSIG`) if the parent
    /// dies — precisely, when the thread that started it dies.
    pub fn daemon(mut self, daemon: bool) -> Process {
        self.daemon = daemon;
        self
    }

    /// The process's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is a daemon.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// The child's pid; `None` before `start`.
    pub fn pid(&self) -> Option<u32> {
        self.pid.get().copied()
    }

    fn started_pid(&self, what: &str) -> Result<u32> {
        self.pid().ok_or_else(|| Error::ProcessNotStarted { name: self.name.clone(), action: what.to_string() })
    }

    /// Starts the child. `Err(ProcessAlreadyStarted)` the second time.
    pub fn start(&self) -> Result<()> {
        let method = self
            .method
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| Error::ProcessAlreadyStarted { name: self.name.clone() })?;
        let pid = match method {
            Method::Fork(target) => self.start_fork(target)?,
            Method::Spawn { entry, args } => spawn::start(&entry, &args, &self.name, self.daemon)?,
        };
        let _ = self.pid.set(pid);
        match child::pidfd(pid) {
            Ok(fd) => {
                let _ = self.pidfd.set(fd);
            }
            Err(e) => {
                log::warn!("shmsync: no pidfd for process '{}' ({e}); its as_fd() will not signal its end", self.name)
            }
        }
        Ok(())
    }

    fn start_fork(&self, target: Target) -> Result<u32> {
        if child::thread_count() > 1 {
            log::warn!(
                "This process (pid={}) is multi-threaded, use of fork() may lead to deadlocks in the child.",
                std::process::id()
            );
        }
        // Hold the stdout and stderr locks across the fork, as the registry
        // lock: a copy of a lock another thread held at the fork would stay
        // locked in the child forever, and the child's logging and its exit
        // flush would hang on it. Held by this thread, the child's copies
        // are its own to release. The order (stdout, stderr, registry) is
        // the one `println!("{process}")` takes them in.
        let mut stdout = std::io::stdout().lock();
        let mut stderr = std::io::stderr().lock();
        // Unflushed output would otherwise be printed twice, once by each side.
        let _ = stdout.flush();
        let _ = stderr.flush();
        let parent = std::process::id();
        let registry = children::ForkGuard::lock();
        // The segment registry too: the child must not inherit it mid-change.
        let segments = crate::segment::fork_guard();
        // SAFETY: the child runs only `run_child`, which follows the rules in
        // the type's `# Notes`: it takes no lock a parent thread may hold
        // (the registry, segment registry, stdout and stderr locks are held
        // by this very thread across the fork).
        let forked = unsafe { child::fork() };
        match forked {
            Err(e) => {
                drop(segments);
                Err(Error::os("fork", &self.name, e))
            }
            Ok(Forked::Parent(pid)) => {
                drop(segments);
                registry.parent(pid, &self.name, self.daemon);
                drop((stdout, stderr));
                Ok(pid)
            }
            Ok(Forked::Child) => {
                drop(segments);
                registry.child();
                drop((stdout, stderr));
                run_child(&self.name, self.daemon, parent, target)
            }
        }
    }

    /// Waits for the child to end and returns its exit code. A second `join`
    /// returns the same code. `Err(ProcessNotStarted)` before `start`.
    pub fn join(&self) -> Result<i32> {
        let pid = self.started_pid("join")?;
        // Without a deadline the wait ends only when the child has ended.
        loop {
            if let Some(code) = children::wait(pid, None)? {
                return Ok(code);
            }
        }
    }

    /// Waits at most `timeout`; `Ok(None)` if the child still runs.
    pub fn join_timeout(&self, timeout: Duration) -> Result<Option<i32>> {
        let pid = self.started_pid("join")?;
        children::wait(pid, Some(&Deadline::after(timeout)))
    }

    /// Whether the child has started and not yet ended.
    pub fn is_alive(&self) -> bool {
        self.pid().is_some_and(|pid| matches!(children::exit_code(pid), Ok(None)))
    }

    /// The exit code, once the child has ended; `None` before that.
    pub fn exitcode(&self) -> Option<i32> {
        self.pid().and_then(|pid| children::exit_code(pid).ok().flatten())
    }

    /// Sends `SIGTERM` (Python's `terminate`). Its exit code becomes -15.
    pub fn terminate(&self) -> Result<()> {
        children::signal(self.started_pid("terminate")?, Signal::SIGTERM)
    }

    /// Sends `SIGKILL`. Its exit code becomes -9.
    pub fn kill(&self) -> Result<()> {
        children::signal(self.started_pid("kill")?, Signal::SIGKILL)
    }
}

impl std::os::fd::AsFd for Process {
    /// A pidfd for the child, readable (`POLLIN`) once it has ended: wait for
    /// it with `poll`, epoll, mio or tokio's `AsyncFd`, then `join` (which
    /// returns at once). Before `start` (or if the kernel gave no pidfd), one
    /// shared descriptor that never becomes readable: ask after starting.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        static NEVER: OnceLock<std::os::fd::OwnedFd> = OnceLock::new();
        let fd = self.pidfd.get().unwrap_or_else(|| {
            NEVER.get_or_init(|| child::eventfd().unwrap_or_else(|e| panic!("shmsync: cannot make an eventfd: {e}")))
        });
        std::os::fd::AsFd::as_fd(fd)
    }
}

/// Python's `repr` of a process: `<Process name='Process-1' pid=4242
/// parent=4241 started daemon>`; the state is `initial`, `started`, or
/// `stopped exitcode=N` (`exitcode=-SIGTERM` for a signal).
impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<Process name='{}'", self.name)?;
        if let Some(pid) = self.pid() {
            write!(f, " pid={pid}")?;
        }
        write!(f, " parent={}", std::process::id())?;
        match (self.pid(), self.exitcode()) {
            (None, _) => write!(f, " initial")?,
            (Some(_), None) => write!(f, " started")?,
            (Some(_), Some(code)) => match Signal::try_from(-code) {
                Ok(sig) if code < 0 => write!(f, " stopped exitcode=-{}", sig.as_str())?,
                _ => write!(f, " stopped exitcode={code}")?,
            },
        }
        if self.daemon {
            write!(f, " daemon")?;
        }
        write!(f, ">")
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("daemon", &self.daemon)
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

/// The life of a forked child: become the named process, run the target,
/// shut down like Python, flush, and `_exit`. Never returns.
fn run_child(name: &str, daemon: bool, parent: u32, target: Target) -> ! {
    identity::become_child(name);
    if daemon && !child::die_with_parent(Signal::SIGKILL, parent) {
        child::exit_now(1);
    }
    let code = super::run_as_child(|| target(name));
    super::exit_child(code)
}
