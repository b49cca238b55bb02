//! The pool's result thread, and how an async call reaches it: `submit`
//! queues the call's encoded chunks as an `AsyncJob`; the thread sends them
//! to idle workers, collects, and finishes each job whose outcomes have all
//! come: its [`Callbacks`] run, then its [`AsyncResult`] is filled.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, MutexGuard};

use serde::Serialize;

use super::async_result::AsyncResult;
use super::core::{AsyncJob, Core, Inner, Raw, State};
use super::dispatch::next_chunk;
use super::wire::TaskRef;
use super::Pool;
use crate::error::{Error, Result};

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

impl Pool {
    /// Queues an async call: encodes `items` now, in chunks of `chunk`;
    /// `assemble` turns the outcomes into the result.
    pub(super) fn submit<T, Out>(
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
        // Without the thread nothing would ever finish the job: fail it now.
        if let Err(e) = self.ensure_result_thread(&mut g) {
            core.close_call(&mut g, call);
            return AsyncResult::failed(e);
        }
        if let Some(m) = Core::mailbox(&mut g, call) {
            m.ready.extend(failed.into_iter().map(|(i, e)| (i, Raw::Err(e))));
        }
        g.jobs.push(AsyncJob { call, addresses, chunks, finish });
        core.notify(&g);
        if g.is_collecting() {
            core.wake();
        }
        result
    }

    /// Starts the result thread if it is not running; an error if it
    /// cannot be started (the process is out of threads).
    fn ensure_result_thread(&self, g: &mut Inner) -> Result<()> {
        let mut handle = self.results.lock().unwrap_or_else(|e| e.into_inner());
        if handle.is_some() {
            return Ok(());
        }
        g.stop = false;
        let core = Arc::clone(&self.core);
        let started =
            std::thread::Builder::new().name("shmsync-pool-results".to_string()).spawn(move || result_thread(&core));
        *handle = Some(started.map_err(|e| Error::os("start the pool's result thread", "Pool", e))?);
        Ok(())
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
        let task = TaskRef { first: first as u64, call: addresses.0, func: addresses.1, items: &items };
        let requeue;
        (g, requeue) = core.send_chunk(g, (id, &worker), call, &task);
        if let Some(job) = g.jobs.iter_mut().find(|job| job.call == call).filter(|_| requeue) {
            // The worker died while idle: the chunk goes out again.
            job.chunks.push_front((first, items));
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
