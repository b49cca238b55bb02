//! The crate's futures: one generic [`Pending`] over an [`Op`], and the
//! async methods of Event, Semaphore, BoundedSemaphore and Barrier (the
//! queue's are in `data::queue`, the process's in `pidfds`).
//!
//! Polling tries the operation without blocking (a `try_` call); if it
//! cannot complete, the op *arms* (marks a sleeper on the word it waits on,
//! exactly as a blocking wait would) and the future registers that word with
//! the watcher, then returns `Pending`. The watcher wakes the task when the
//! word changes. An op only ever takes something (a unit, a message) in the
//! poll that returns it, so dropping a pending future loses nothing; its
//! `cancel` hands on a wake it may have absorbed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU32;
use std::task::{Context, Poll};

pub(crate) use super::watcher::Watch;
use super::watcher::{self, Check, Registration};
use crate::error::Result;
use crate::raw::{Arrival, BarrierWaitResult, RawBarrier};
use crate::{Barrier, BoundedSemaphore, Event, Permit, Semaphore};

/// One asynchronous operation, for [`Pending`].
pub(crate) trait Op: Unpin {
    /// What the future returns.
    type Output;

    /// Tries to complete now, without blocking.
    fn attempt(&mut self) -> Poll<Self::Output>;

    /// Marks a sleeper and says what to watch; `None` if the operation may
    /// complete now (the future attempts again at once).
    fn arm(&mut self) -> Option<Watch>;

    /// The future is dropped after it armed, without completing.
    fn cancel(&mut self) {}
}

/// A future that completes when its op does.
pub(crate) struct Pending<O: Op> {
    op: O,
    registration: Option<Registration>,
    armed: bool,
    done: bool,
}

impl<O: Op> Pending<O> {
    pub(crate) fn new(op: O) -> Pending<O> {
        Pending { op, registration: None, armed: false, done: false }
    }
}

impl<O: Op> Future for Pending<O> {
    type Output = O::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O::Output> {
        let this = self.get_mut();
        assert!(!this.done, "a shmsync future was polled after it completed");
        loop {
            if let Poll::Ready(out) = this.op.attempt() {
                this.registration = None;
                this.done = true;
                return Poll::Ready(out);
            }
            if let Some(watch) = this.op.arm() {
                this.registration = Some(watcher::register(watch, cx.waker(), this.registration.take()));
                this.armed = true;
                return Poll::Pending;
            }
        }
    }
}

impl<O: Op> Drop for Pending<O> {
    fn drop(&mut self) {
        self.registration = None;
        if self.armed && !self.done {
            self.op.cancel();
        }
    }
}

/// A watch on `word` with no readiness check beyond the word's change.
fn watch(word: &AtomicU32, expected: u32) -> Watch {
    Watch { word, expected, check: None }
}

/// A pointer that a readiness check carries into the watcher thread.
struct Shared<T>(*const T);

// SAFETY: the pointee is a raw primitive in shared memory, made for use
// from any thread; the watcher calls a check only while the future that
// registered it lives, and so while the mapping does (watcher module docs).
unsafe impl<T> Send for Shared<T> {}

impl<T> Shared<T> {
    /// # Safety
    /// Only within a readiness check, while its registration lives.
    unsafe fn get(&self) -> &T {
        // SAFETY: forwarded from the caller.
        unsafe { &*self.0 }
    }
}

/// A readiness check over a raw object and some context of the wait.
pub(crate) fn check<T: 'static, C: Send + 'static>(object: &T, context: C, ready: fn(&T, &C) -> bool) -> Check {
    let object = Shared(object as *const T);
    // SAFETY: the watcher calls checks only while the registration lives.
    Box::new(move || ready(unsafe { object.get() }, &context))
}

struct EventWait<'a> {
    event: &'a Event,
    gen: Option<u32>,
}

impl Op for EventWait<'_> {
    type Output = ();

    fn attempt(&mut self) -> Poll<()> {
        let raw = self.event.raw();
        let gen = *self.gen.get_or_insert_with(|| raw.generation());
        if raw.signalled_since(gen) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn arm(&mut self) -> Option<Watch> {
        let (word, expected) = self.event.raw().arm(self.gen)?;
        Some(watch(word, expected))
    }
}

impl Event {
    /// Waits, asynchronously, until the flag is set: the future completes
    /// at once if it is, and (as [`wait`](Self::wait)) also for a `set`
    /// that was followed by a `clear` before the task ran. Works with any
    /// runtime; see [`wait`](crate::wait) for how.
    ///
    /// ```
    /// # async fn demo() -> shmsync::Result<()> {
    /// let ev = shmsync::Event::new()?;
    /// ev.set();
    /// ev.wait_async().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_async(&self) -> impl Future<Output = ()> + Send + '_ {
        Pending::new(EventWait { event: self, gen: None })
    }
}

struct Acquire<'a, S> {
    sem: &'a S,
}

macro_rules! async_semaphore {
    ($ty:ty) => {
        impl<'a> Op for Acquire<'a, $ty> {
            type Output = Permit<'a>;

            fn attempt(&mut self) -> Poll<Permit<'a>> {
                match self.sem.try_acquire() {
                    Some(permit) => Poll::Ready(permit),
                    None => Poll::Pending,
                }
            }

            fn arm(&mut self) -> Option<Watch> {
                let (word, expected) = self.sem.raw().arm()?;
                Some(watch(word, expected))
            }

            fn cancel(&mut self) {
                self.sem.raw().pass_on();
            }
        }

        impl $ty {
            /// Takes a unit, asynchronously: the future completes with a
            /// [`Permit`] once one is free. Dropping the future before that
            /// takes nothing.
            pub fn acquire_async(&self) -> impl Future<Output = Permit<'_>> + Send + '_ {
                Pending::new(Acquire { sem: self })
            }
        }
    };
}
async_semaphore!(Semaphore);
async_semaphore!(BoundedSemaphore);

enum BarrierState {
    NotArrived,
    Waiting { gen: u64, index: u32, breaks_seen: u64 },
}

struct BarrierWait<'a> {
    barrier: &'a Barrier,
    state: BarrierState,
}

impl Op for BarrierWait<'_> {
    type Output = Result<BarrierWaitResult>;

    fn attempt(&mut self) -> Poll<Result<BarrierWaitResult>> {
        let raw = self.barrier.raw();
        if let BarrierState::NotArrived = self.state {
            match raw.arrive() {
                Err(_) => return Poll::Ready(Err(self.barrier.broken())),
                Ok(Arrival::Leader(result)) => return Poll::Ready(Ok(result)),
                Ok(Arrival::Waiting { gen, index, breaks_seen }) => {
                    self.state = BarrierState::Waiting { gen, index, breaks_seen }
                }
            }
        }
        match self.state {
            BarrierState::Waiting { gen, index, breaks_seen } if raw.generation() != gen => {
                Poll::Ready(raw.outcome(gen, index, breaks_seen).map_err(|_| self.barrier.broken()))
            }
            _ => Poll::Pending,
        }
    }

    fn arm(&mut self) -> Option<Watch> {
        let BarrierState::Waiting { gen, .. } = self.state else { return None };
        let raw = self.barrier.raw();
        let (word, expected) = raw.arm(gen)?;
        // A last arriver killed between ending the generation and bumping the
        // word it wakes on: the re-check slice finds the generation moved.
        let ended = check(raw, gen, |b: &RawBarrier, gen: &u64| b.generation() != *gen);
        Some(Watch { word, expected, check: Some(ended) })
    }
}

impl Barrier {
    /// Waits, asynchronously, until all parties have arrived: the first poll
    /// arrives (counts this party), later ones wait for the generation to
    /// end. `Err(BrokenBarrier)` as for [`wait`](Self::wait).
    ///
    /// A future dropped after its first poll has arrived, and that arrival
    /// stays counted, as a party that died after arriving does. A runtime
    /// timeout therefore does not break the barrier the way
    /// [`wait_timeout`](Self::wait_timeout) does; call [`abort`](Self::abort)
    /// for that.
    pub fn wait_async(&self) -> impl Future<Output = Result<BarrierWaitResult>> + Send + '_ {
        Pending::new(BarrierWait { barrier: self, state: BarrierState::NotArrived })
    }
}
