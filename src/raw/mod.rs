//! In-place primitives for memory you map yourself.
//!
//! Each type here is `#[repr(C)]`, contains no pointers, and is meant to sit
//! inside a struct of your own in shared memory (a ring buffer, a cache). Call
//! its `unsafe fn init(this: *mut Self, ..)` exactly once, before any process
//! uses it; after that, every method takes `&self` and is safe from any thread
//! of any process that maps the memory.
//!
//! The named objects ([`Lock`](crate::Lock), [`Event`](crate::Event), ...) are
//! exactly one segment header plus one of these.
//!
//! All futex words are used as *shared* futexes (never `FUTEX_PRIVATE_FLAG`),
//! so waiters and wakers may be in different processes and may map the memory
//! at different addresses.
//!
//! Every wait spins briefly (a budget each thread learns per kind of wait),
//! then sleeps in slices of at most [`RECHECK`] (1 s; the first is a quarter
//! of that), re-checking its condition after each: whatever a killed process
//! left undone, a live waiter goes on at most one slice after what it waits
//! for has happened.

mod barrier;
mod condition;
mod event;
mod lock;
mod rwlock;
mod semaphore;
mod sleep;
mod spin;
pub(crate) use sleep::{register_sleeper, Sleeper, Woke};
pub(crate) use spin::{Spin, SpinWait};

pub(crate) use barrier::Arrival;
pub use barrier::{BarrierWaitResult, Broken, RawBarrier, MAX_PARTIES};
pub use condition::{RawCondition, SLOTS as CONDITION_SLOTS};
pub use event::RawEvent;
pub(crate) use lock::Robust;
pub use lock::{Locked, RawLock, RawRLock};
pub use rwlock::{RawRwLock, READER_SLOTS as RWLOCK_READER_SLOTS};
pub use semaphore::{AtMaximum, RawSemaphore, MAX_VALUE};
#[cfg(feature = "failpoints")]
pub(crate) use sleep::set_recheck_for_tests;
pub use sleep::RECHECK;

/// The crash points of the raw primitives (see [`crate::crash`]).
pub(crate) const CRASH_POINTS: &[&[&str]] = &[
    lock::CRASH_POINTS,
    event::CRASH_POINTS,
    semaphore::CRASH_POINTS,
    condition::CRASH_POINTS,
    barrier::CRASH_POINTS,
    rwlock::CRASH_POINTS,
];
