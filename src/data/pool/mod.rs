//! `Pool`: persistent forked workers that run `fn(T) -> R` over items
//! (Python's `multiprocessing.Pool`).
//!
//! Each worker is a daemon [`Process`] named `PoolWorker-N` with one socket
//! pair to the pool. The caller's thread dispatches chunks of encoded items
//! to idle workers and collects results; a worker whose socket reaches EOF
//! while it owed a result died, and its items come back as `WorkerDied`
//! while a fresh worker takes its place.

mod dispatch;
mod wire;
mod worker;

use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::data::{pipe, Connection};
use crate::error::{Error, Result};
use crate::process::Process;

pub use dispatch::Imap;

/// One worker, as the pool sees it.
struct Worker {
    process: Process,
    conn: Connection,
    /// Tasks sent to it so far.
    sent: usize,
    /// The chunk it is running: its first index and length.
    busy: Option<(usize, usize)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Open,
    Closed,
    Terminated,
    Joined,
}

struct Inner {
    workers: Vec<Worker>,
    state: State,
}

type Initializer = Arc<dyn Fn() + Send + Sync>;

/// A pool of worker processes (Python's `multiprocessing.Pool`), using the
/// fork start method; workers live as long as the pool.
///
/// Task functions are plain `fn(T) -> R` items (a closure that captures
/// nothing coerces to one), as Python needs top-level functions; `T` and `R`
/// are serde types, passed by value.
///
/// - A panic in a task is [`Error::TaskFailed`] for that item; the worker
///   survives.
/// - A worker that dies (killed, or calling `exit`) is replaced, and its
///   item is [`Error::WorkerDied`], never a hang.
/// - After [`join`](Self::join), [`terminate`](Self::terminate) or a drop, no
///   worker or zombie remains.
///
/// Workers are daemons: they get `PR_SET_PDEATHSIG`, which follows the
/// *thread* that forked them, so create the pool (and call `map`, which may
/// start replacements) from a thread that outlives it.
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
    inner: Mutex<Inner>,
    initializer: Option<Initializer>,
    max_tasks_per_child: usize,
    /// The process that made the pool: a copy inherited by a forked child
    /// must not stop its parent's workers when dropped there.
    owner: u32,
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
        let pool = Pool {
            inner: Mutex::new(Inner { workers: Vec::new(), state: State::Open }),
            initializer: self.initializer,
            max_tasks_per_child: self.max_tasks_per_child.unwrap_or(usize::MAX),
            owner: std::process::id(),
        };
        {
            let mut inner = pool.lock();
            for _ in 0..self.processes {
                let w = pool.start_worker(&inner.workers)?;
                inner.workers.push(w);
            }
        }
        Ok(pool)
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

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forks one worker. `others` are the live workers, whose pool-side
    /// descriptors the new worker must close.
    fn start_worker(&self, others: &[Worker]) -> Result<Worker> {
        let (ours, theirs) = pipe()?;
        let mut foreign: Vec<_> = others.iter().map(|w| w.conn.as_fd().as_raw_fd()).collect();
        foreign.push(ours.as_fd().as_raw_fd());
        let init = self.initializer.clone();
        let max = self.max_tasks_per_child;
        let process = Process::new(move || worker::main(theirs, foreign, init, max)).daemon(true);
        let name = process.name().replacen("Process", "PoolWorker", 1);
        let process = process.with_name(name);
        process.start()?;
        Ok(Worker { process, conn: ours, sent: 0, busy: None })
    }

    /// Starts a worker in slot `i` of `inner` (whose old worker is reaped);
    /// if that fails, the slot is removed.
    fn replace_worker(&self, inner: &mut Inner, i: usize) {
        match self.start_worker(&inner.workers) {
            Ok(w) => inner.workers[i] = w,
            Err(e) => {
                log::error!("shmsync: could not replace a pool worker: {e}");
                inner.workers.remove(i);
            }
        }
    }

    /// The workers' pids (a snapshot; replacements change it).
    pub fn pids(&self) -> Vec<u32> {
        self.lock().workers.iter().filter_map(|w| w.process.pid()).collect()
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
    /// setup error (a closed pool) comes as the first item. Dropping the
    /// iterator early waits for the chunks already running.
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
        Imap::new(self, self.lock(), f, items.into_iter(), chunk.max(1), ordered)
    }

    /// Stops taking tasks; the workers exit once they see it.
    pub fn close(&self) {
        let mut inner = self.lock();
        if inner.state == State::Open {
            inner.state = State::Closed;
            // Closing our ends is what tells each worker to finish.
            for w in &mut inner.workers {
                let _ = nix::sys::socket::shutdown(w.conn.as_fd().as_raw_fd(), nix::sys::socket::Shutdown::Both);
            }
        }
    }

    /// Stops the workers at once (`SIGTERM`) and reaps them.
    pub fn terminate(&self) {
        let mut inner = self.lock();
        for w in &inner.workers {
            let _ = w.process.terminate();
        }
        for w in &inner.workers {
            let _ = w.process.join();
        }
        inner.workers.clear();
        inner.state = State::Terminated;
    }

    /// Waits for every worker to exit and reaps it. `PoolNotClosed` before
    /// [`close`](Self::close) or [`terminate`](Self::terminate).
    pub fn join(&self) -> Result<()> {
        let mut inner = self.lock();
        if inner.state == State::Open {
            return Err(Error::PoolNotClosed);
        }
        for w in &inner.workers {
            w.process.join()?;
        }
        inner.workers.clear();
        inner.state = State::Joined;
        Ok(())
    }
}

impl Pool {
    /// As [`join`](Self::join), waiting at most `timeout` in all; `Ok(false)`
    /// if some worker is still running then (call it again, or `terminate`).
    pub fn join_timeout(&self, timeout: std::time::Duration) -> Result<bool> {
        let deadline = std::time::Instant::now() + timeout;
        let mut inner = self.lock();
        if inner.state == State::Open {
            return Err(Error::PoolNotClosed);
        }
        for w in &inner.workers {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if w.process.join_timeout(left)?.is_none() {
                return Ok(false);
            }
        }
        inner.workers.clear();
        inner.state = State::Joined;
        Ok(true)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            return;
        }
        let done = matches!(self.lock().state, State::Terminated | State::Joined);
        if !done {
            self.terminate();
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Pool").field("state", &inner.state).field("workers", &inner.workers.len()).finish()
    }
}
