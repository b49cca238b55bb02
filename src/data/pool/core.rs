//! The pool's shared state and how a slot moves through it.
//!
//! ```text
//! slot:  idle ──assign──▶ busy(call, first, len, got) ──last Done──▶ idle
//!          │                  │                                   │
//!          │ EOF / bad frame  │ EOF / bad frame                   │ sent == max_tasks
//!          ▼                  ▼                                   ▼
//!       replaced          its items not yet answered:         retired (reaped,
//!       (no item fails)   WorkerDied; replaced                replaced)
//! close: idle slots are shut for writing once no call needs them ("closing");
//!        a closing slot's EOF is its exit: reaped, not replaced.
//! ```
//! - Every call (an `imap`, a `map`, an async job) has a mailbox, keyed by
//!   call id, that outcomes are routed to. A call that went away (an imap
//!   dropped early) has none: its outstanding results are read and thrown
//!   away, so the worker becomes idle again and nothing waits for it.
//! - The lock guards only this bookkeeping and is never held across a wait
//!   on a worker, so any pool call (`apply`, `pids`, `terminate`, `{:?}`)
//!   works from any thread, an imap's own included.
//! - Workers are named by slot id, never by position, so removing a slot
//!   (a replacement fork that failed) cannot make anyone's index stale.
//!
//! This file holds the state and each call's bookkeeping. The rest of
//! `Core` is split by job: `collector.rs` (waiting, and the collector),
//! `lifecycle.rs` (starting, replacing and reaping workers) and
//! `shutdown.rs` (`close`, `terminate`, `join`).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde_bytes::ByteBuf;

use crate::data::Connection;
use crate::error::{Error, Result};
use crate::process::Process;
use crate::sys::socket;

/// The initializer every worker runs first.
pub type Initializer = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    Open,
    Closed,
    Terminated,
    Joined,
}

/// A worker process and the pool's end of its socket.
pub struct Worker {
    pub process: Process,
    pub conn: Connection,
}

/// The chunk a slot is running.
pub(super) struct Job {
    pub(super) call: u64,
    pub(super) first: usize,
    pub(super) len: usize,
    /// Outcomes received so far (they come in order).
    pub(super) got: usize,
}

pub(super) struct Slot {
    pub(super) id: u64,
    pub(super) worker: Arc<Worker>,
    /// Tasks sent to it so far.
    pub(super) sent: usize,
    pub(super) job: Option<Job>,
    /// Its socket was shut for writing: it is exiting.
    pub(super) closing: bool,
}

/// One item's outcome as routed, not yet decoded.
pub enum Raw {
    Ok(ByteBuf),
    Err(Error),
}

/// What a call has received.
#[derive(Default)]
pub struct Mailbox {
    pub ready: BTreeMap<usize, Raw>,
    /// Items sent to workers and not yet answered.
    pub in_flight: usize,
}

/// An async call (`apply_async`, `map_async`, ...): its items encoded in
/// chunks up front, dispatched by the result thread (`result_thread.rs`),
/// and what to do with its outcomes once all have come.
pub struct AsyncJob {
    pub call: u64,
    /// The trampoline and function addresses (see `wire.rs`).
    pub addresses: (u64, u64),
    pub chunks: std::collections::VecDeque<(usize, Vec<ByteBuf>)>,
    pub finish: Box<dyn FnOnce(BTreeMap<usize, Raw>) + Send>,
}

pub struct Inner {
    pub(super) slots: Vec<Slot>,
    /// Async calls not yet finished, oldest first.
    pub jobs: Vec<AsyncJob>,
    /// The result thread should end once `jobs` is empty.
    pub stop: bool,
    pub state: State,
    pub(super) collecting: bool,
    pub(super) waiters: usize,
    pub(super) calls: HashMap<u64, Mailbox>,
    pub(super) next_id: u64,
    /// Why the last replacement could not be started.
    pub(super) fork_error: Option<String>,
}

impl Inner {
    /// Whether some thread is collecting right now.
    pub fn is_collecting(&self) -> bool {
        self.collecting
    }

    /// Items of `call` sent and not yet answered (0 for a call gone).
    pub fn in_flight(&self, call: u64) -> usize {
        self.calls.get(&call).map_or(0, |m| m.in_flight)
    }
}

/// The pool's shared core: the state, the collector, the workers' lives.
pub struct Core {
    inner: Mutex<Inner>,
    pub(super) changed: Condvar,
    /// A socket pair: a byte on `wake_tx` ends the collector's poll.
    pub(super) wake_rx: OwnedFd,
    pub(super) wake_tx: OwnedFd,
    pub(super) initializer: Option<Initializer>,
    pub max_tasks: usize,
    pub(super) processes: usize,
    /// The process that made the pool.
    pub owner: u32,
}

impl Core {
    pub fn new(processes: usize, initializer: Option<Initializer>, max_tasks: usize) -> Result<Core> {
        let (wake_rx, wake_tx) = socket::pair().map_err(|e| Error::os("socketpair", "Pool", e))?;
        let inner = Inner {
            slots: Vec::new(),
            jobs: Vec::new(),
            stop: false,
            state: State::Open,
            collecting: false,
            waiters: 0,
            calls: HashMap::new(),
            next_id: 0,
            fork_error: None,
        };
        let core = Core {
            inner: Mutex::new(inner),
            changed: Condvar::new(),
            wake_rx,
            wake_tx,
            initializer,
            max_tasks,
            processes,
            owner: std::process::id(),
        };
        let started = {
            let mut g = core.lock();
            (0..processes).try_for_each(|_| {
                let slot = core.start_worker(&mut g)?;
                g.slots.push(slot);
                Ok(())
            })
        };
        if let Err(e) = started {
            // Stop the workers that did start, so none is left behind.
            core.terminate();
            return Err(e);
        }
        Ok(core)
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this is a forked copy of the pool, in a process that must not
    /// touch its parent's workers (or this lock, which a parent thread may
    /// have held at the fork).
    pub fn is_foreign(&self) -> bool {
        std::process::id() != self.owner
    }

    pub fn pids(&self) -> Vec<u32> {
        self.lock().slots.iter().filter_map(|s| s.worker.process.pid()).collect()
    }

    pub fn workers(g: &Inner) -> usize {
        g.slots.len()
    }

    /// A new call's mailbox.
    pub fn open_call(&self, g: &mut Inner) -> u64 {
        g.next_id += 1;
        g.calls.insert(g.next_id, Mailbox::default());
        g.next_id
    }

    /// The call is over (or dropped): outcomes still due to it are thrown
    /// away as they come.
    pub fn close_call(&self, g: &mut Inner, call: u64) {
        g.calls.remove(&call);
        self.wind_down(g);
    }

    pub fn mailbox(g: &mut Inner, call: u64) -> Option<&mut Mailbox> {
        g.calls.get_mut(&call)
    }

    /// An idle worker that may take a task: its slot id and the worker.
    pub fn idle(g: &Inner, max_tasks: usize) -> Option<(u64, Arc<Worker>)> {
        g.slots
            .iter()
            .find(|s| s.job.is_none() && !s.closing && s.sent < max_tasks)
            .map(|s| (s.id, Arc::clone(&s.worker)))
    }

    /// Whether slot `id` is still idle (another thread may have taken it
    /// while this one encoded a chunk without the lock).
    pub fn still_idle(g: &Inner, id: u64) -> bool {
        g.slots.iter().any(|s| s.id == id && s.job.is_none() && !s.closing)
    }

    /// Records that slot `id` runs `first..first + len` for `call`.
    pub fn assign(&self, g: &mut Inner, id: u64, call: u64, first: usize, len: usize) {
        if let Some(s) = g.slots.iter_mut().find(|s| s.id == id) {
            s.job = Some(Job { call, first, len, got: 0 });
            s.sent += 1;
        }
        if let Some(m) = g.calls.get_mut(&call) {
            m.in_flight += len;
        }
        if g.collecting {
            self.wake();
        }
    }

    /// Ends call `call` and hands back what it received.
    pub fn take_call(&self, g: &mut Inner, call: u64) -> BTreeMap<usize, Raw> {
        let ready = g.calls.remove(&call).map(|m| m.ready).unwrap_or_default();
        self.wind_down(g);
        ready
    }
}
