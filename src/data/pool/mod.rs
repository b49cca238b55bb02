//! `Pool`: persistent forked workers that run `fn(T) -> R` over items
//! (Python's `multiprocessing.Pool`).
//!
//! Each worker is a daemon [`Process`](crate::Process) named `PoolWorker-N`
//! with one socket pair to the pool. Calls send chunks of encoded items to
//! idle workers and take their outcomes from a mailbox of their own; the
//! state machine is in `core.rs`, and how one thread at a time collects for
//! all in `collector.rs`. A worker whose socket reaches EOF while it owed
//! results died: those items come back as `WorkerDied` while a fresh worker
//! takes its place.

mod async_result;
mod asynch;
mod collector;
mod core;
mod dispatch;
mod lifecycle;
mod result_thread;
mod shutdown;
mod wire;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use self::core::{Core, Initializer, State};
use crate::error::{Error, Result};
use crate::sys::time::Deadline;

pub use self::shutdown::TERMINATE_GRACE;
pub use async_result::AsyncResult;
pub use dispatch::Imap;
pub use result_thread::Callbacks;
pub use wire::StarFn;

/// The crash points of the pool's dispatch, in the order a task meets them.
pub(crate) const CRASH_POINTS: &[&str] = &[
    "pool.dispatch.sent",
    "pool.worker.received",
    "pool.worker.replied",
    "pool.collect.received",
    "pool.worker.replaced",
];

/// A pool of worker processes (Python's `multiprocessing.Pool`), using the
/// fork start method; workers live as long as the pool.
///
/// Task functions are plain `fn(T) -> R` items (a closure that captures
/// nothing coerces to one), as Python needs top-level functions; `T` and `R`
/// are serde types, passed by value.
///
/// - A panic in a task is [`Error::TaskFailed`] for that item; the worker
///   survives.
/// - An item or a result too large for a frame (64 MiB) is
///   [`Error::TooLarge`] for that item; the worker survives.
/// - A worker that dies (killed, or calling `exit`) is replaced, and its
///   items are [`Error::WorkerDied`], never a hang. If no replacement can
///   be started (a failed fork) and none is left, calls fail with
///   [`Error::NoWorkers`].
/// - Every method may be called from any thread, during an `imap` on the
///   same thread too; [`terminate`](Self::terminate) from another thread
///   stops a call whose task hangs.
/// - After [`join`](Self::join), [`terminate`](Self::terminate) or a drop, no
///   worker or zombie remains.
///
/// # Fork notes
/// - Workers are daemons: they get `PR_SET_PDEATHSIG`, which follows the
///   *thread* that forked them, so create the pool (and call `map`, which
///   may start replacements) from a thread that outlives it.
/// - A forked child holds a copy of the pool but not its workers: every
///   call there is [`Error::ForeignPool`] (`close`, `terminate` and drop do
///   nothing there), so the child can never take its parent's results.
/// - Workers inherit every descriptor the parent holds when they are
///   forked, as Python's do under fork. A [`pipe`](crate::pipe) end made
///   before the pool (or before a replacement worker starts) stays open in
///   them, so its peer reads `Disconnected` only once the pool is joined or
///   terminated. Make pipes whose end of file matters after the pool, and
///   before any replacement can be forked: with `max_tasks_per_child`, or
///   if a worker may die, send an explicit last message instead.
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let pool = shmsync::Pool::new(2)?;
/// assert_eq!(pool.map(square, 0..5)?, vec![0, 1, 4, 9, 16]);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct Pool {
    core: Arc<Core>,
    /// The result thread of async calls, started by the first one.
    results: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Builds a [`Pool`]: `Pool::builder().processes(4).initializer(f).build()`.
#[must_use = "a builder does nothing until build"]
pub struct PoolBuilder {
    processes: usize,
    initializer: Option<Initializer>,
    max_tasks_per_child: Option<usize>,
}

impl PoolBuilder {
    /// How many workers (default: the number of CPUs this process may use).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = n;
        self
    }

    /// A function every worker runs before its first task, replacements
    /// included; never in the caller.
    pub fn initializer(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.initializer = Some(Arc::new(f));
        self
    }

    /// Replace each worker after it has run `k` tasks (chunks).
    pub fn max_tasks_per_child(mut self, k: usize) -> Self {
        self.max_tasks_per_child = Some(k);
        self
    }

    /// Starts the workers. `InvalidArgument` for 0 processes or
    /// `max_tasks_per_child(0)`.
    pub fn build(self) -> Result<Pool> {
        if self.processes == 0 || self.max_tasks_per_child == Some(0) {
            return Err(Error::InvalidArgument {
                name: "Pool".to_string(),
                detail: "processes and max_tasks_per_child must be at least 1".to_string(),
            });
        }
        let core = Core::new(self.processes, self.initializer, self.max_tasks_per_child.unwrap_or(usize::MAX))?;
        Ok(Pool { core: Arc::new(core), results: std::sync::Mutex::new(None) })
    }
}

impl Pool {
    /// A pool of `processes` workers.
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A [`PoolBuilder`], with one worker per CPU by default.
    pub fn builder() -> PoolBuilder {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        PoolBuilder { processes: cpus, initializer: None, max_tasks_per_child: None }
    }

    /// The workers' pids (a snapshot; replacements change it).
    /// Empty in a forked child, which has none of its parent's workers.
    pub fn pids(&self) -> Vec<u32> {
        if self.core.is_foreign() {
            return Vec::new();
        }
        self.core.pids()
    }

    /// Runs `f` on every item, in the workers, and returns the results in
    /// input order — or the error of the lowest-index item that failed. The
    /// other items still run, and the pool stays usable.
    pub fn map<T, R>(&self, f: fn(T) -> R, items: impl IntoIterator<Item = T>) -> Result<Vec<R>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map_chunked(f, items, 1)
    }

    /// As [`map`](Self::map), sending items to workers `chunksize` at a time.
    pub fn map_chunked<T, R>(
        &self,
        f: fn(T) -> R,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<Vec<R>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        // Every item runs; the lowest-index error wins.
        let mut results = Vec::new();
        let mut first_error = None;
        for outcome in self.run(f, items, chunksize, true) {
            match outcome {
                Ok(r) => results.push(r),
                Err(e) if first_error.is_none() => first_error = Some(e),
                Err(_) => {}
            }
        }
        first_error.map_or(Ok(results), Err)
    }

    /// Streams each item's outcome, in input order, as results arrive. A
    /// setup error (a closed pool) comes as the first item; a pool
    /// terminated meanwhile ends the stream with `PoolClosed`. Dropping the
    /// iterator early waits for nothing: the chunks already running finish
    /// in their workers, and their results are thrown away.
    pub fn imap<T, R, I>(&self, f: fn(T) -> R, items: I) -> Imap<'_, I::IntoIter, R>
    where
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.run(f, items, 1, true)
    }

    /// As [`imap`](Self::imap), in completion order.
    pub fn imap_unordered<T, R, I>(&self, f: fn(T) -> R, items: I) -> Imap<'_, I::IntoIter, R>
    where
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.run(f, items, 1, false)
    }

    /// Runs `f(item)` in a worker and returns its result.
    pub fn apply<T, R>(&self, f: fn(T) -> R, item: T) -> Result<R>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.run(f, [item], 1, true).next().unwrap_or(Err(Error::PoolClosed))
    }

    fn run<T, R, I>(&self, f: fn(T) -> R, items: I, chunk: usize, ordered: bool) -> Imap<'_, I::IntoIter, R>
    where
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        Imap::new(self, wire::addresses(f), items.into_iter(), chunk, ordered)
    }

    /// Stops taking new calls. Calls already made run to the end; then the
    /// workers exit. Does nothing in a forked child.
    pub fn close(&self) {
        if !self.core.is_foreign() {
            self.core.close();
        }
    }

    /// Stops the workers now: `SIGTERM`, then `SIGKILL` for any still
    /// running after [`TERMINATE_GRACE`] (half a second, for all workers
    /// together), and reaps them. Items still outstanding in any call are
    /// `PoolClosed`. Does nothing in a forked child.
    pub fn terminate(&self) {
        if !self.core.is_foreign() {
            self.core.terminate();
            self.stop_result_thread();
        }
    }

    /// Waits for every worker to exit and reaps it. `PoolNotClosed` before
    /// [`close`](Self::close) or [`terminate`](Self::terminate). While it
    /// waits it still collects the results of calls in flight.
    pub fn join(&self) -> Result<()> {
        self.check_owner()?;
        self.core.join(None)?;
        self.stop_result_thread();
        Ok(())
    }

    /// As [`join`](Self::join), waiting at most `timeout` in all; `Ok(false)`
    /// if some worker is still running then (call it again, or `terminate`).
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.check_owner()?;
        let joined = self.core.join(Some(&Deadline::after(timeout)))?;
        if joined {
            self.stop_result_thread();
        }
        Ok(joined)
    }

    fn check_owner(&self) -> Result<()> {
        if self.core.is_foreign() {
            return Err(Error::ForeignPool { owner: self.core.owner });
        }
        Ok(())
    }
}

impl Drop for Pool {
    /// Terminates the workers unless the pool was joined; in a forked
    /// child, does nothing.
    fn drop(&mut self) {
        if self.core.is_foreign() {
            return;
        }
        let done = matches!(self.core.lock().state, State::Terminated | State::Joined);
        if !done {
            self.core.terminate();
        }
        self.stop_result_thread();
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.core.is_foreign() {
            return f.debug_struct("Pool").field("owner", &self.core.owner).field("foreign", &true).finish();
        }
        let g = self.core.lock();
        f.debug_struct("Pool").field("state", &g.state).field("workers", &Core::workers(&g)).finish()
    }
}
