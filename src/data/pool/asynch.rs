//! Async pool calls (Python's `apply_async`, `map_async`, `starmap_async`):
//! an [`AsyncResult`] to wait on, optional callbacks, and the pool's result
//! thread.
//!
//! An async call encodes its items in the caller's thread, in chunks, and
//! queues them as an `AsyncJob`. The result thread, started with the first
//! async call and ended with the pool, sends the chunks to idle workers,
//! collects (as any waiting thread does, see `collector.rs`), and once a job
//! has every outcome decodes them, runs the callbacks and fills the
//! `AsyncResult`. Outcomes are routed by call, so a worker that dies fails
//! only the items it held: only its `AsyncResult` sees `WorkerDied`.
//!
//! This file holds the calls (and the synchronous `starmap`, beside its
//! async forms). [`AsyncResult`] is in `async_result.rs`; the callbacks,
//! the queueing and the result thread are in `result_thread.rs`.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::async_result::AsyncResult;
use super::core::Raw;
use super::dispatch::decode;
use super::result_thread::Callbacks;
use super::wire::{self, StarFn};
use super::Pool;
use crate::error::{Error, Result};

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
}
