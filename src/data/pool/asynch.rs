//! Async pool calls (Python's `apply_async`, `map_async`, `starmap_async`):
//! an [`AsyncResult`] to wait on, optional callbacks, and the pool's result
//! thread.
//!
//! An async call encodes its items in the caller's thread, in chunks, and
//! queues them as an `AsyncJob`. The result thread, started with the first
//! async call and ended with the pool, sends the chunks to idle workers,
//! collects (as any waiting thread does, see `collector.rs`), and once a job has
//! every outcome decodes them, runs the callbacks and fills the
//! `AsyncResult`. Outcomes are routed by call, so a worker that dies fails
//! only the items it held: only its `AsyncResult` sees `WorkerDied`.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::core::{AsyncJob, Core, Inner, Raw, State};
use super::dispatch::{decode, next_chunk};
use super::wire::{self, StarFn, TaskRef};
use super::Pool;
use crate::error::{Error, Result};
use crate::sys::time::Deadline;

/// The outcome of an async pool call (Python's `AsyncResult`), filled by the
/// pool's result thread.
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let pool = shmsync::Pool::new(2)?;
/// let one = pool.apply_async(square, 7);
/// let all = pool.map_async(square, 0..4);
/// // ... the caller keeps working while the pool computes ...
/// assert_eq!(one.get()?, 49);
/// assert_eq!(all.get_timeout(std::time::Duration::from_secs(10))?, Some(vec![0, 1, 4, 9]));
/// pool.close();
/// pool.join()?;
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct AsyncResult<R> {
    slot: Arc<Slot<R>>,
}

enum State2<R> {
    Pending,
    Ready(Result<R>),
    /// `get_timeout` handed the outcome out.
    Taken,
}

struct Slot<R> {
    state: Mutex<State2<R>>,
    filled: Condvar,
}

impl<R> Slot<R> {
    fn lock(&self) -> MutexGuard<'_, State2<R>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, outcome: Result<R>) {
        *self.lock() = State2::Ready(outcome);
        self.filled.notify_all();
    }
}

impl<R> AsyncResult<R> {
    fn pending() -> AsyncResult<R> {
        AsyncResult { slot: Arc::new(Slot { state: Mutex::new(State2::Pending), filled: Condvar::new() }) }
    }

    fn failed(e: Error) -> AsyncResult<R> {
        let r = AsyncResult::pending();
        r.slot.set(Err(e));
        r
    }

    /// Whether the call has finished (with a result or an error).
    pub fn ready(&self) -> bool {
        !matches!(*self.slot.lock(), State2::Pending)
    }

    /// Whether the call finished without error; `None` while it runs
    /// (Python raises `ValueError` then).
    pub fn successful(&self) -> Option<bool> {
        match &*self.slot.lock() {
            State2::Pending => None,
            State2::Ready(r) => Some(r.is_ok()),
            State2::Taken => Some(true),
        }
    }

    /// Waits until the call has finished.
    pub fn wait(&self) {
        let mut s = self.slot.lock();
        while matches!(*s, State2::Pending) {
            s = self.slot.filled.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits at most `timeout`; whether the call has finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Deadline::after(timeout);
        let mut s = self.slot.lock();
        while matches!(*s, State2::Pending) {
            let left = deadline.remaining();
            if left.is_zero() {
                return false;
            }
            s = self.slot.filled.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    /// Waits for the call and returns its outcome: the result, or the
    /// error of the lowest-index item that failed.
    pub fn get(self) -> Result<R> {
        self.wait();
        self.take().unwrap_or_else(|| unreachable!("wait returned, so the outcome is there"))
    }

    /// Waits at most `timeout`: `Ok(None)` if the call is still running
    /// then. Once it returns the outcome, this handle has none left: a later
    /// `get` is `InvalidArgument`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<Option<R>> {
        if !self.wait_timeout(timeout) {
            return Ok(None);
        }
        self.take().unwrap_or_else(|| unreachable!("wait_timeout said it is ready")).map(Some)
    }

    fn take(&self) -> Option<Result<R>> {
        let mut s = self.slot.lock();
        match std::mem::replace(&mut *s, State2::Taken) {
            State2::Pending => {
                *s = State2::Pending;
                None
            }
            State2::Ready(r) => Some(r),
            State2::Taken => Some(Err(Error::InvalidArgument {
                name: "AsyncResult".to_string(),
                detail: "its outcome was already taken by get_timeout".to_string(),
            })),
        }
    }
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult").field("ready", &self.ready()).finish()
    }
}

/// What an async call runs when it finishes (Python's `callback` and
/// `error_callback`), on the pool's result thread, before its
/// [`AsyncResult`] becomes ready. Keep them short: while one runs, no other
/// async result is delivered. A panic in one is caught and logged.
pub struct Callbacks<R> {
    on_success: Option<OnSuccess<R>>,
    on_error: Option<OnError>,
}

type OnSuccess<R> = Box<dyn FnOnce(&R) + Send>;
type OnError = Box<dyn FnOnce(&Error) + Send>;

impl<R> Default for Callbacks<R> {
    fn default() -> Self {
        Callbacks { on_success: None, on_error: None }
    }
}

impl<R> Callbacks<R> {
    /// No callbacks yet.
    pub fn new() -> Self {
        Callbacks::default()
    }

    /// Runs with the result when the call succeeds.
    pub fn callback(mut self, f: impl FnOnce(&R) + Send + 'static) -> Self {
        self.on_success = Some(Box::new(f));
        self
    }

    /// Runs with the error when the call fails (for a map, the error of
    /// the lowest-index item that failed).
    pub fn error_callback(mut self, f: impl FnOnce(&Error) + Send + 'static) -> Self {
        self.on_error = Some(Box::new(f));
        self
    }

    fn run(self, outcome: &Result<R>) {
        let ran = catch_unwind(AssertUnwindSafe(|| match outcome {
            Ok(r) => self.on_success.map(|f| f(r)),
            Err(e) => self.on_error.map(|f| f(e)),
        }));
        if ran.is_err() {
            log::error!("shmsync: a pool callback panicked; the result is still delivered");
        }
    }
}

impl<R> std::fmt::Debug for Callbacks<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("callback", &self.on_success.is_some())
            .field("error_callback", &self.on_error.is_some())
            .finish()
    }
}

/// The outcome of item `index`, decoded; `PoolClosed` if none came.
fn outcome_of<R: DeserializeOwned>(ready: &mut BTreeMap<usize, Raw>, index: usize) -> Result<R> {
    ready.remove(&index).map_or(Err(Error::PoolClosed), decode)
}

/// Every item's outcome in order, or the lowest-index error.
fn all<R: DeserializeOwned>(mut ready: BTreeMap<usize, Raw>, total: usize) -> Result<Vec<R>> {
    let mut out = Vec::with_capacity(total.min(1 << 16));
    let mut first_error = None;
    for index in 0..total {
        match outcome_of(&mut ready, index) {
            Ok(r) => out.push(r),
            Err(e) if first_error.is_none() => first_error = Some(e),
            Err(_) => {}
        }
    }
    first_error.map_or(Ok(out), Err)
}

/// Python's default chunk size for `map_async`: about four chunks per
/// worker.
fn default_chunk(items: usize, workers: usize) -> usize {
    items.div_ceil(workers.max(1) * 4).max(1)
}

impl Pool {
    /// Runs `f(item)` in a worker without waiting (Python's `apply_async`).
    /// A setup error (a closed pool, a forked child) is the result's
    /// outcome at once.
    pub fn apply_async<T, R>(&self, f: fn(T) -> R, item: T) -> AsyncResult<R>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async_with(f, item, Callbacks::new())
    }

    /// As [`apply_async`](Self::apply_async), with callbacks run on the
    /// result thread when it finishes.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// fn halve(x: u32) -> u32 {
    ///     assert!(x % 2 == 0, "odd");
    ///     x / 2
    /// }
    /// let pool = shmsync::Pool::new(1)?;
    /// let (tx, rx) = mpsc::channel();
    /// let (tx2, tx3) = (tx.clone(), tx);
    /// let cb = shmsync::Callbacks::new()
    ///     .callback(move |r: &u32| tx2.send(format!("ok {r}")).unwrap())
    ///     .error_callback(move |e| tx3.send(format!("failed: {e}")).unwrap());
    /// let r = pool.apply_async_with(halve, 7, cb);
    /// assert!(r.get().is_err());
    /// assert!(rx.recv()?.starts_with("failed: task 0 failed: odd"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_async_with<T, R>(&self, f: fn(T) -> R, item: T, callbacks: Callbacks<R>) -> AsyncResult<R>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit(wire::addresses(f), [item], 1, callbacks, |mut ready, _| outcome_of(&mut ready, 0))
    }

    /// `map` without waiting (Python's `map_async`): the result is every
    /// item's result in input order, or the lowest-index error. Items are
    /// encoded now, in chunks of about a quarter of the items per worker.
    pub fn map_async<T, R>(&self, f: fn(T) -> R, items: impl IntoIterator<Item = T>) -> AsyncResult<Vec<R>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async_with(f, items, Callbacks::new())
    }

    /// As [`map_async`](Self::map_async), with callbacks (run once, with
    /// the whole list or the error).
    pub fn map_async_with<T, R>(
        &self,
        f: fn(T) -> R,
        items: impl IntoIterator<Item = T>,
        callbacks: Callbacks<Vec<R>>,
    ) -> AsyncResult<Vec<R>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items: Vec<T> = items.into_iter().collect();
        let chunk = default_chunk(items.len(), self.pids().len());
        self.submit(wire::addresses(f), items, chunk, callbacks, all)
    }

    /// `map` for functions of several arguments (Python's `starmap`): each
    /// item is a tuple of the arguments. `f` is a function item (or a
    /// closure that captures nothing) of one to four arguments.
    ///
    /// ```
    /// fn add(a: u32, b: u32) -> u32 {
    ///     a + b
    /// }
    /// let pool = shmsync::Pool::new(2)?;
    /// assert_eq!(pool.starmap(add, [(1, 2), (3, 4)])?, vec![3, 7]);
    /// # Ok::<(), shmsync::Error>(())
    /// ```
    pub fn starmap<F, Args, R>(&self, f: F, items: impl IntoIterator<Item = Args>) -> Result<Vec<R>>
    where
        F: StarFn<Args, R>,
        Args: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let mut results = Vec::new();
        let mut first_error = None;
        for outcome in super::Imap::new(self, wire::star_addresses(f), items.into_iter(), 1, true) {
            match outcome {
                Ok(r) => results.push(r),
                Err(e) if first_error.is_none() => first_error = Some(e),
                Err(_) => {}
            }
        }
        first_error.map_or(Ok(results), Err)
    }

    /// [`starmap`](Self::starmap) without waiting (Python's
    /// `starmap_async`).
    pub fn starmap_async<F, Args, R>(&self, f: F, items: impl IntoIterator<Item = Args>) -> AsyncResult<Vec<R>>
    where
        F: StarFn<Args, R>,
        Args: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.starmap_async_with(f, items, Callbacks::new())
    }

    /// As [`starmap_async`](Self::starmap_async), with callbacks.
    pub fn starmap_async_with<F, Args, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = Args>,
        callbacks: Callbacks<Vec<R>>,
    ) -> AsyncResult<Vec<R>>
    where
        F: StarFn<Args, R>,
        Args: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items: Vec<Args> = items.into_iter().collect();
        let chunk = default_chunk(items.len(), self.pids().len());
        self.submit(wire::star_addresses(f), items, chunk, callbacks, all)
    }

    /// Queues an async call: encodes `items` now, in chunks of `chunk`;
    /// `assemble` turns the outcomes into the result.
    fn submit<T, Out>(
        &self,
        addresses: (u64, u64),
        items: impl IntoIterator<Item = T>,
        chunk: usize,
        callbacks: Callbacks<Out>,
        assemble: fn(BTreeMap<usize, Raw>, usize) -> Result<Out>,
    ) -> AsyncResult<Out>
    where
        T: Serialize,
        Out: Send + 'static,
    {
        let core = &self.core;
        if core.is_foreign() {
            return AsyncResult::failed(Error::ForeignPool { owner: core.owner });
        }
        let call = {
            let mut g = core.lock();
            if g.state != State::Open {
                return AsyncResult::failed(Error::PoolClosed);
            }
            if let Err(e) = core.ensure_workers(&mut g) {
                return AsyncResult::failed(e);
            }
            core.open_call(&mut g)
        };
        // Encode without the lock: serde impls are user code.
        let (mut items, mut pulled, mut exhausted) = (items.into_iter(), 0, false);
        let mut chunks = std::collections::VecDeque::new();
        let mut failed = Vec::new();
        while !exhausted {
            let (c, f) = next_chunk(&mut items, &mut pulled, &mut exhausted, chunk);
            chunks.extend(c);
            failed.extend(f);
        }
        let total = pulled;
        let result = AsyncResult::pending();
        let slot = Arc::clone(&result.slot);
        let finish = Box::new(move |ready: BTreeMap<usize, Raw>| {
            let outcome = assemble(ready, total);
            callbacks.run(&outcome);
            slot.set(outcome);
        });
        let mut g = core.lock();
        if let Some(m) = Core::mailbox(&mut g, call) {
            m.ready.extend(failed.into_iter().map(|(i, e)| (i, Raw::Err(e))));
        }
        g.jobs.push(AsyncJob { call, addresses, chunks, finish });
        self.ensure_result_thread(&mut g);
        core.notify(&g);
        if g.is_collecting() {
            core.wake();
        }
        result
    }

    /// Starts the result thread if it is not running.
    fn ensure_result_thread(&self, g: &mut Inner) {
        let mut handle = self.results.lock().unwrap_or_else(|e| e.into_inner());
        if handle.is_some() {
            return;
        }
        g.stop = false;
        let core = Arc::clone(&self.core);
        match std::thread::Builder::new().name("shmsync-pool-results".to_string()).spawn(move || result_thread(&core)) {
            Ok(h) => *handle = Some(h),
            Err(e) => log::error!("shmsync: could not start the pool's result thread: {e}"),
        }
    }

    /// Ends the result thread once its jobs are done (they are, or have
    /// failed, by the time the pool is joined or terminated).
    pub(super) fn stop_result_thread(&self) {
        let Some(handle) = self.results.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        {
            let mut g = self.core.lock();
            g.stop = true;
            self.core.notify(&g);
        }
        self.core.wake();
        // A callback that drops the pool runs on that very thread.
        if handle.thread().id() != std::thread::current().id() {
            let _ = handle.join();
        }
    }
}

/// The result thread: dispatches async jobs, collects, finishes them.
fn result_thread(core: &Core) {
    let mut g = core.lock();
    loop {
        if g.state == State::Terminated {
            // What was never sent fails; what was in flight failed already.
            fail_unsent(&mut g, |_| Error::PoolClosed);
        }
        if let Some(i) = (0..g.jobs.len()).find(|&i| {
            let job = &g.jobs[i];
            job.chunks.is_empty() && g.in_flight(job.call) == 0
        }) {
            let job = g.jobs.remove(i);
            let ready = core.take_call(&mut g, job.call);
            drop(g);
            (job.finish)(ready);
            g = core.lock();
            continue;
        }
        if g.jobs.is_empty() {
            if g.stop {
                return;
            }
            g = core.sleep(g);
            continue;
        }
        g = dispatch(core, g);
        g = core.wait(g, None);
    }
}

/// Sends queued chunks, oldest job first, to idle workers.
fn dispatch<'g>(core: &'g Core, mut g: MutexGuard<'g, Inner>) -> MutexGuard<'g, Inner> {
    loop {
        if g.state == State::Terminated {
            return g;
        }
        let Some(j) = g.jobs.iter().position(|job| !job.chunks.is_empty()) else { return g };
        if let Err(e) = core.ensure_workers(&mut g) {
            // Nothing can run: every chunk not yet sent fails.
            let reason = match e {
                Error::NoWorkers { reason } => reason,
                e => e.to_string(),
            };
            fail_unsent(&mut g, |_| Error::NoWorkers { reason: reason.clone() });
            return g;
        }
        let Some((id, worker)) = Core::idle(&g, core.max_tasks) else { return g };
        let job = &mut g.jobs[j];
        let (call, addresses) = (job.call, job.addresses);
        let Some((first, items)) = job.chunks.pop_front() else { return g };
        core.assign(&mut g, id, call, first, items.len());
        drop(g);
        let task = TaskRef { first: first as u64, call: addresses.0, func: addresses.1, items: &items };
        let sent = worker.conn.send(&task);
        crash_point!("pool.dispatch.sent");
        g = core.lock();
        if sent.is_err() {
            // The worker died while idle: the chunk never ran; requeue it.
            g = core.send_failed(g, id);
            if let Some(job) = g.jobs.iter_mut().find(|job| job.call == call) {
                job.chunks.push_front((first, items));
            }
        }
    }
}

/// Every chunk of every job not yet sent fails with `error(index)`.
fn fail_unsent(g: &mut Inner, error: impl Fn(usize) -> Error) {
    let unsent: Vec<_> = g.jobs.iter_mut().map(|job| (job.call, std::mem::take(&mut job.chunks))).collect();
    for (call, chunks) in unsent {
        if let Some(m) = Core::mailbox(g, call) {
            for (first, items) in chunks {
                m.ready.extend((first..first + items.len()).map(|i| (i, Raw::Err(error(i)))));
            }
        }
    }
}
