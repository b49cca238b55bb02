//! [`AsyncResult`]: what an async pool call hands back at once, filled
//! later, once, by the pool's result thread (`result_thread.rs`).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

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
    pub(super) slot: Arc<Slot<R>>,
}

enum State2<R> {
    Pending,
    Ready(Result<R>),
    /// `get_timeout` handed the outcome out; whether it was a result.
    Taken {
        ok: bool,
    },
}

pub(super) struct Slot<R> {
    state: Mutex<State2<R>>,
    filled: Condvar,
}

impl<R> Slot<R> {
    fn lock(&self) -> MutexGuard<'_, State2<R>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set(&self, outcome: Result<R>) {
        *self.lock() = State2::Ready(outcome);
        self.filled.notify_all();
    }
}

impl<R> AsyncResult<R> {
    pub(super) fn pending() -> AsyncResult<R> {
        AsyncResult { slot: Arc::new(Slot { state: Mutex::new(State2::Pending), filled: Condvar::new() }) }
    }

    pub(super) fn failed(e: Error) -> AsyncResult<R> {
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
            State2::Taken { ok } => Some(*ok),
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
        match std::mem::replace(&mut *s, State2::Pending) {
            State2::Pending => None,
            State2::Ready(r) => {
                *s = State2::Taken { ok: r.is_ok() };
                Some(r)
            }
            State2::Taken { ok } => {
                *s = State2::Taken { ok };
                Some(Err(Error::InvalidArgument {
                    name: "AsyncResult".to_string(),
                    detail: "its outcome was already taken by get_timeout".to_string(),
                }))
            }
        }
    }
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult").field("ready", &self.ready()).finish()
    }
}
