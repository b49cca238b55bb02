//! # shmsync
//!
//! Cross-process synchronization for Linux: the primitives threads take for
//! granted, living in named shared-memory segments, so any process that
//! knows the name can use them — whether it shares a parent with the others
//! or not — plus a `Process` launcher in the manner of Python's
//! `multiprocessing`.
//!
//! - **Locks**: [`Lock`], [`RLock`] and [`Mutex<T>`](Mutex) are robust,
//!   process-shared pthread mutexes: a holder that is killed leaves the lock
//!   poisoned, never stuck. [`RwLock<T>`](RwLock) shares the lock among
//!   readers and survives a killed reader or writer alike.
//! - **Waiting**: [`Event`], [`Condition`], [`Semaphore`],
//!   [`BoundedSemaphore`] and [`Barrier`] are shared futex words, so a waiter
//!   killed mid-wait costs the others nothing and no notify ever blocks.
//! - **Named**: `K::open_or_create("jobs")` in two unrelated programs gives
//!   them the same object. [`unlink`] removes a name; `K::new()` makes an
//!   object under a unique name that is removed when the handle drops.
//! - **Processes**: [`Process`] (fork or spawn), [`current`],
//!   [`process::exit`], [`log_to_stderr`].
//! - **Data**: [`pipe`], [`Queue`], [`JoinableQueue`], [`Pool`], [`Dict`],
//!   [`Namespace`] (see [`data`]).
//! - **Inspecting**: [`inspect()`](fn@inspect) decodes any object's state
//!   without touching it; [`gc()`](fn@gc) removes the objects of dead
//!   creators that nobody maps (see [`mod@inspect`], and the `shmsync`
//!   command of the `cli` feature).
//! - **By address**: [`connection::Listener`] and [`connection::Client`]
//!   (the default-on `connection` feature) connect unrelated programs over
//!   Unix sockets or TCP, with HMAC authentication.
//! - **Embeddable**: [`raw`] holds the `#[repr(C)]` primitives for your own
//!   shared structs.
//! - **Across hosts** (the `etcd` feature): `etcd::Lock` and
//!   `etcd::Semaphore` on etcd leases, with poison, fencing tokens and
//!   lease-loss checks; [`LockLike`] and [`SemaphoreLike`] are implemented
//!   by the local and the etcd types alike, so one program runs on one host
//!   or many by configuration.
//!
//! ```no_run
//! use shmsync::Lock;
//! let lock = Lock::open_or_create("jobs")?;
//! let _guard = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
//! // ... only one process at a time runs here ...
//! # Ok::<(), shmsync::Error>(())
//! ```
//!
//! ## Notes
//! - Linux with glibc on a 64-bit target only; other targets fail to compile.
//! - Every handle and guard to one object in a process shares one mapping,
//!   so glibc's robust list, which links held mutexes by address, never
//!   points into unmapped memory. A guard forgotten with `mem::forget` keeps
//!   its lock held, and the mapping under it stays until the process ends.
//! - Waiters sleep in slices of at most [`raw::RECHECK`] (1 s) and re-check,
//!   so whatever a killed process left undone, a survivor goes on within that
//!   bound (see the README's "Robustness").
//! - `open` refuses a segment owned by another user
//!   ([`Error::ForeignOwner`]) unless the builder allows it.
//! - Typed segments (`Mutex<T>`, `Queue<T>`, `Dict<K, V>`) fingerprint their
//!   types by name, which is stable for one compiler version: build every
//!   process that shares one with the same compiler.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(not(target_os = "linux"))]
compile_error!("shmsync supports Linux only: it needs robust futex lists, shared futexes and /dev/shm.");

#[macro_use]
mod crash;
#[cfg(feature = "connection")]
pub mod connection;
pub mod data;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod inspect;
mod named;
pub mod process;
pub mod raw;
mod segment;
mod sys;
mod traits;
pub mod wait;

pub use data::{
    pipe, pipe_oneway, AsyncResult, Callbacks, Connection, Dict, JoinableQueue, Namespace, Pool, PoolBuilder, Queue,
    Receiver, Sender,
};
pub use error::{Error, Result};
pub use inspect::{gc, inspect};
pub use named::{
    unlink, Barrier, BoundedSemaphore, Builder, Condition, ConditionGuard, Event, Lock, LockGuard, Mutex, MutexGuard,
    NamedObject, Permit, RLock, RLockGuard, RwLock, RwLockReadGuard, RwLockUpgradableReadGuard, RwLockWriteGuard,
    Semaphore, WaitTimeoutResult,
};
pub use process::{current, log_to_stderr, Process, Run};
pub use raw::BarrierWaitResult;
pub use traits::{Held, LockLike, SemaphoreLike};
pub use wait::{wait_all, wait_any, Waitable};

/// Support for this crate's own tests and tools; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::crash::POINTS as CRASH_POINTS;
    /// How many `FUTEX_WAKE` syscalls the calling thread has made.
    pub fn futex_wake_calls() -> u64 {
        crate::sys::futex::wake_calls()
    }
    /// The `fail` crate, to configure crash points from tests.
    #[cfg(feature = "failpoints")]
    pub use fail;
    /// Sets the re-check slice of this process's waiters (tests only).
    #[cfg(feature = "failpoints")]
    pub fn set_recheck_for_tests(slice: std::time::Duration) {
        crate::raw::set_recheck_for_tests(slice)
    }
}

/// The README's examples, compiled as doctests so they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
