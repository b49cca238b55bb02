//! Waiting on many objects at once, and waiting from async code.
//!
//! - [`wait_any`] and [`wait_all`] wait on up to 127 objects in one
//!   `futex_waitv` sleep (Linux 5.16+): an [`Event`](crate::Event) to be
//!   set, a semaphore unit to be free, a queue to be
//!   [`readable`](crate::Queue::readable) or
//!   [`writable`](crate::Queue::writable), a [`Barrier`](crate::Barrier)'s
//!   generation to end. They report which is ready and take nothing; taking
//!   is the caller's next call, as with Python's
//!   `multiprocessing.connection.wait`.
//! - The async methods (`Event::wait_async`, `Semaphore::acquire_async`,
//!   `Queue::get_async`, `Queue::put_async`, `Barrier::wait_async`,
//!   `Process::join_async`) return std futures and depend on no runtime.
//!   A future that cannot complete registers the futex word it waits on with
//!   a watcher thread of this process, which sleeps in `futex_waitv` over up
//!   to 127 registered words and wakes the futures' wakers when one changes.
//!   Watcher threads start when first needed, one per 127 distinct words;
//!   futures waiting on the same word share its slot, so 10,000 tasks
//!   awaiting one Event cost one slot. Nothing spins, and watchers sleep
//!   without a timeout: they wake only for a change. One auditor thread per
//!   process looks at every registered word every 500 ms for what a killed
//!   process published without a wake, and pokes only a watcher that has
//!   something to report; with nothing registered it sleeps too.
//! - Dropping a future cancels it: it takes nothing (a unit, a message) that
//!   it has not returned, and a wake it may have absorbed is handed on.
//!   Runtime timeouts (`tokio::time::timeout`) are therefore safe.
//! - [`Process`](crate::Process) and [`Connection`](crate::Connection)
//!   implement `AsFd` (a pidfd, and the socket), for `poll`, epoll, mio or
//!   tokio's `AsyncFd`.
//!
//! On a kernel without `futex_waitv`, `wait_any` and `wait_all` return
//! [`Error::Unsupported`](crate::Error::Unsupported); the async methods fall
//! back to a watcher thread per word (each sleeping in a plain futex wait),
//! which is correct but costs a thread per distinct word.

mod any;
pub(crate) mod future;
mod pidfds;
mod waitable;
pub(crate) mod watcher;

pub use any::{wait_all, wait_any, MAX_OBJECTS};
pub use waitable::{Readable, Waitable, Writable};
