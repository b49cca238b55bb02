//! The pool's shared state and the one collector.
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
//! - One thread at a time is the collector (leader/follower): it snapshots
//!   the slots, polls their sockets and a wake socket without the lock,
//!   reads what came, then routes it under the lock and wakes the others.
//!   Any thread that waits for outcomes becomes the collector if nobody is;
//!   the rest sleep on the condition variable. A dispatch to a new slot while
//!   another thread collects writes the wake socket, so the collector polls
//!   that slot too.
//! - Workers are named by slot id, never by position, so removing a slot
//!   (a replacement fork that failed) cannot make anyone's index stale.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde_bytes::ByteBuf;

use super::wire::{Done, Outcome};
use super::worker;
use crate::data::codec;
use crate::data::{pipe, Connection};
use crate::error::{Error, Result};
use crate::process::Process;
use crate::sys::socket;
use crate::sys::time::Deadline;

/// How long the collector sleeps before checking that busy workers are
/// alive even without an EOF (a worker's socket could be held open by a
/// process it forked).
pub const LIVENESS_CHECK: Duration = Duration::from_millis(200);

/// How long `terminate` (and a drop) lets workers end after `SIGTERM`
/// before it sends `SIGKILL`: all of them together, not each.
pub const TERMINATE_GRACE: Duration = Duration::from_millis(500);

/// How long a worker whose socket closed, or that retired, may take to
/// exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);

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
struct Job {
    call: u64,
    first: usize,
    len: usize,
    /// Outcomes received so far (they come in order).
    got: usize,
}

struct Slot {
    id: u64,
    worker: Arc<Worker>,
    /// Tasks sent to it so far.
    sent: usize,
    job: Option<Job>,
    /// Its socket was shut for writing: it is exiting.
    closing: bool,
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
/// chunks up front, dispatched by the result thread (`asynch.rs`), and what
/// to do with its outcomes once all have come.
pub struct AsyncJob {
    pub call: u64,
    /// The trampoline and function addresses (see `wire.rs`).
    pub addresses: (u64, u64),
    pub chunks: std::collections::VecDeque<(usize, Vec<ByteBuf>)>,
    pub finish: Box<dyn FnOnce(BTreeMap<usize, Raw>) + Send>,
}

pub struct Inner {
    slots: Vec<Slot>,
    /// Async calls not yet finished, oldest first.
    pub jobs: Vec<AsyncJob>,
    /// The result thread should end once `jobs` is empty.
    pub stop: bool,
    pub state: State,
    collecting: bool,
    waiters: usize,
    calls: HashMap<u64, Mailbox>,
    next_id: u64,
    /// Why the last replacement could not be started.
    fork_error: Option<String>,
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
    changed: Condvar,
    /// A socket pair: a byte on `wake_tx` ends the collector's poll.
    wake_rx: OwnedFd,
    wake_tx: OwnedFd,
    initializer: Option<Initializer>,
    pub max_tasks: usize,
    processes: usize,
    /// The process that made the pool.
    pub owner: u32,
}

/// What the collector saw on one slot.
enum Event {
    Frame(u64, Vec<u8>),
    /// EOF, an error, or a dead process.
    Gone(u64),
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

    /// Forks one worker (under the lock, so the list of descriptors it must
    /// close is complete).
    fn start_worker(&self, g: &mut Inner) -> Result<Slot> {
        let (ours, theirs) = pipe()?;
        let mut foreign: Vec<_> = g.slots.iter().map(|s| s.worker.conn.as_fd().as_raw_fd()).collect();
        foreign.extend([ours.as_fd().as_raw_fd(), self.wake_rx.as_raw_fd(), self.wake_tx.as_raw_fd()]);
        let init = self.initializer.clone();
        let max = self.max_tasks;
        let process = Process::new(move || worker::main(theirs, foreign, init, max)).daemon(true);
        let name = process.name().replacen("Process", "PoolWorker", 1);
        let process = process.with_name(name);
        process.start()?;
        crash_point!("pool.worker.replaced");
        g.next_id += 1;
        Ok(Slot { id: g.next_id, worker: Arc::new(Worker { process, conn: ours }), sent: 0, job: None, closing: false })
    }

    /// Starts workers until there are `processes` again, while the pool may
    /// still need them. A failed fork is remembered, not retried here.
    fn refill(&self, g: &mut Inner) {
        let needed = g.state == State::Open || (g.state == State::Closed && !g.calls.is_empty());
        while needed && g.slots.len() < self.processes {
            match self.start_worker(g) {
                Ok(slot) => g.slots.push(slot),
                Err(e) => {
                    log::error!("shmsync: could not start a pool worker: {e}");
                    g.fork_error = Some(e.to_string());
                    return;
                }
            }
        }
    }

    /// If no worker is left, tries once to start them; `NoWorkers` if that
    /// fails too.
    pub fn ensure_workers(&self, g: &mut Inner) -> Result<()> {
        if g.slots.is_empty() {
            self.refill(g);
        }
        if g.slots.is_empty() {
            let reason = g.fork_error.clone().unwrap_or_else(|| "no worker could be started".to_string());
            return Err(Error::NoWorkers { reason });
        }
        Ok(())
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

    /// The task could not be sent to slot `id`: its worker died while idle.
    /// The chunk never ran; the caller sends it elsewhere. The worker is
    /// reaped and replaced.
    pub fn send_failed<'g>(&'g self, mut g: MutexGuard<'g, Inner>, id: u64) -> MutexGuard<'g, Inner> {
        let Some(pos) = g.slots.iter().position(|s| s.id == id) else { return g };
        let slot = g.slots.remove(pos);
        if let Some(job) = slot.job {
            if let Some(m) = g.calls.get_mut(&job.call) {
                m.in_flight -= job.len;
            }
        }
        drop(g);
        reap(&slot.worker, EXIT_GRACE);
        let mut g = self.lock();
        self.refill(&mut g);
        g
    }

    /// Makes the collector's poll return, so it sees new slots or states.
    pub fn wake(&self) {
        let _ = nix::sys::socket::send(self.wake_tx.as_raw_fd(), &[1], nix::sys::socket::MsgFlags::MSG_DONTWAIT);
    }

    /// Waits for outcomes: as the collector if nobody is, else asleep until
    /// the collector (or anyone) reports a change. Returns at `deadline` at
    /// the latest.
    pub fn wait<'g>(&'g self, mut g: MutexGuard<'g, Inner>, deadline: Option<&Deadline>) -> MutexGuard<'g, Inner> {
        if !g.collecting && !g.slots.is_empty() {
            return self.collect(g, deadline);
        }
        let mut timeout = LIVENESS_CHECK;
        if let Some(d) = deadline {
            timeout = timeout.min(d.remaining());
        }
        g.waiters += 1;
        let mut g = self.changed.wait_timeout(g, timeout).unwrap_or_else(|e| e.into_inner()).0;
        g.waiters -= 1;
        g
    }

    /// Sleeps until someone reports a change (no timeout): for the result
    /// thread with no job to run.
    pub fn sleep<'g>(&'g self, mut g: MutexGuard<'g, Inner>) -> MutexGuard<'g, Inner> {
        g.waiters += 1;
        let mut g = self.changed.wait(g).unwrap_or_else(|e| e.into_inner());
        g.waiters -= 1;
        g
    }

    /// Ends call `call` and hands back what it received.
    pub fn take_call(&self, g: &mut Inner, call: u64) -> BTreeMap<usize, Raw> {
        let ready = g.calls.remove(&call).map(|m| m.ready).unwrap_or_default();
        self.wind_down(g);
        ready
    }

    /// Wakes every thread sleeping in [`wait`](Self::wait).
    pub fn notify(&self, g: &Inner) {
        if g.waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// One collector round: poll every slot without the lock, then route
    /// what came, reap and replace what died or retired.
    fn collect<'g>(&'g self, mut g: MutexGuard<'g, Inner>, deadline: Option<&Deadline>) -> MutexGuard<'g, Inner> {
        g.collecting = true;
        let snapshot: Vec<(u64, Arc<Worker>, bool)> =
            g.slots.iter().map(|s| (s.id, Arc::clone(&s.worker), s.job.is_some())).collect();
        drop(g);
        let events = self.poll_workers(&snapshot, deadline);
        let mut g = self.lock();
        let mut to_reap = Vec::new();
        for event in events {
            self.apply(&mut g, event, &mut to_reap);
        }
        if !to_reap.is_empty() {
            // Reaping may wait for a worker to finish exiting: not under the
            // lock. The slots are out of the list already.
            drop(g);
            let codes: Vec<i32> = to_reap.iter().map(|(slot, _)| reap(&slot.worker, EXIT_GRACE)).collect();
            g = self.lock();
            for ((slot, died), code) in to_reap.iter().zip(codes) {
                if *died {
                    let pid = slot.worker.process.pid().unwrap_or(0);
                    let signal = (code < 0).then_some(-code);
                    fail_job(&mut g, slot, |index| Error::WorkerDied { pid, index, signal });
                }
            }
            self.refill(&mut g);
        }
        self.wind_down(&mut g);
        g.collecting = false;
        self.notify(&g);
        g
    }

    /// Polls the slots' sockets and the wake socket; reads every frame that
    /// came. With nothing after [`LIVENESS_CHECK`], checks that busy workers
    /// still live.
    fn poll_workers(&self, snapshot: &[(u64, Arc<Worker>, bool)], deadline: Option<&Deadline>) -> Vec<Event> {
        use nix::poll::{PollFd, PollFlags, PollTimeout};
        let mut fds: Vec<PollFd<'_>> =
            snapshot.iter().map(|(_, w, _)| PollFd::new(w.conn.as_fd(), PollFlags::POLLIN)).collect();
        fds.push(PollFd::new(self.wake_rx.as_fd(), PollFlags::POLLIN));
        let mut timeout = LIVENESS_CHECK;
        if let Some(d) = deadline {
            timeout = timeout.min(d.remaining());
        }
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let ready: Vec<bool> = match nix::poll::poll(&mut fds, timeout) {
            Ok(n) if n > 0 => fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect(),
            _ => vec![false; fds.len()],
        };
        let mut events = Vec::new();
        if ready[snapshot.len()] {
            let mut sink = [0u8; 64];
            while nix::sys::socket::recv(self.wake_rx.as_raw_fd(), &mut sink, nix::sys::socket::MsgFlags::MSG_DONTWAIT)
                .is_ok_and(|n| n > 0)
            {}
        }
        let mut any = false;
        for ((id, w, _), &r) in snapshot.iter().zip(&ready) {
            if !r {
                continue;
            }
            any = true;
            // One read (one syscall), then whatever whole frames it
            // buffered beyond the first: poll(2) would not report those.
            loop {
                match w.conn.recv_bytes_timeout(Duration::ZERO) {
                    Ok(Some(bytes)) => {
                        crash_point!("pool.collect.received");
                        events.push(Event::Frame(*id, bytes));
                        if !w.conn.has_buffered_frame() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        events.push(Event::Gone(*id));
                        break;
                    }
                }
            }
        }
        if !any && !ready[snapshot.len()] {
            for (id, w, busy) in snapshot {
                if *busy && !w.process.is_alive() {
                    events.push(Event::Gone(*id));
                }
            }
        }
        events
    }

    /// Routes one event under the lock.
    /// Slots that leave go to `to_reap`, with whether they died owing results.
    fn apply(&self, g: &mut Inner, event: Event, to_reap: &mut Vec<(Slot, bool)>) {
        let (id, frame) = match event {
            Event::Frame(id, bytes) => (id, Some(bytes)),
            Event::Gone(id) => (id, None),
        };
        let Some(pos) = g.slots.iter().position(|s| s.id == id) else { return };
        let done = frame.map(|bytes| codec::decode::<Done>(&bytes));
        let in_step = |slot: &Slot, done: &Done| {
            slot.job
                .as_ref()
                .is_some_and(|j| done.first as usize == j.first + j.got && j.got + done.outcomes.len() <= j.len)
        };
        match done {
            Some(Ok(done)) if in_step(&g.slots[pos], &done) => {
                let slot = &mut g.slots[pos];
                let job = slot.job.as_mut().unwrap_or_else(|| unreachable!("in_step checked the job"));
                let (call, start) = (job.call, job.first + job.got);
                job.got += done.outcomes.len();
                let finished = job.got == job.len;
                if finished {
                    slot.job = None;
                }
                let retire = finished && slot.sent >= self.max_tasks;
                if let Some(m) = g.calls.get_mut(&call) {
                    m.in_flight -= done.outcomes.len();
                    for (k, outcome) in done.outcomes.into_iter().enumerate() {
                        let index = start + k;
                        let raw = match outcome {
                            Outcome::Ok(bytes) => Raw::Ok(bytes),
                            Outcome::Failed(message) => Raw::Err(Error::TaskFailed { index, message }),
                            Outcome::TooLarge(len) => Raw::Err(Error::TooLarge {
                                len: usize::try_from(len).unwrap_or(usize::MAX),
                                max: g.slots[pos].worker.conn.max_frame(),
                            }),
                        };
                        m.ready.insert(index, raw);
                    }
                }
                if retire {
                    // It exits by itself after this result.
                    to_reap.push((g.slots.remove(pos), false));
                }
            }
            Some(_) => {
                // A frame out of step, or that does not decode: the worker
                // cannot be trusted to stay in step. Its chunk fails.
                let slot = g.slots.remove(pos);
                let _ = slot.worker.process.kill();
                fail_job(g, &slot, |index| Error::TaskFailed {
                    index,
                    message: "the worker sent a malformed result".to_string(),
                });
                to_reap.push((slot, false));
            }
            None => {
                // EOF: it died (owing results if it was busy; its items fail
                // once it is reaped and we know how), or it exited after
                // close. An idle death fails nothing.
                let slot = g.slots.remove(pos);
                let died = slot.job.is_some();
                to_reap.push((slot, died));
            }
        }
    }

    /// After `close`, shuts the sockets of idle workers once no call needs
    /// them, so they finish and exit.
    fn wind_down(&self, g: &mut Inner) {
        if g.state != State::Closed || !g.calls.is_empty() {
            return;
        }
        for s in g.slots.iter_mut().filter(|s| s.job.is_none() && !s.closing) {
            s.closing = true;
            socket::shutdown(s.worker.conn.as_fd());
        }
    }

    /// `close`: no new calls; workers exit once the calls already made end.
    pub fn close(&self) {
        let mut g = self.lock();
        if g.state == State::Open {
            g.state = State::Closed;
            self.wind_down(&mut g);
            self.wake();
            self.notify(&g);
        }
    }

    /// `terminate`: every worker stops now. Outstanding items are
    /// `PoolClosed`. Workers get `SIGTERM`, then `SIGKILL` after
    /// [`TERMINATE_GRACE`].
    pub fn terminate(&self) {
        let mut g = self.lock();
        let slots = std::mem::take(&mut g.slots);
        for slot in &slots {
            fail_job(&mut g, slot, |_| Error::PoolClosed);
        }
        if g.state != State::Joined {
            g.state = State::Terminated;
        }
        self.wake();
        self.notify(&g);
        drop(g);
        for s in &slots {
            let _ = s.worker.process.terminate();
        }
        let deadline = Deadline::after(TERMINATE_GRACE);
        for s in &slots {
            let _ = s.worker.process.join_timeout(deadline.remaining());
        }
        for s in &slots {
            let _ = s.worker.process.kill();
            let _ = s.worker.process.join();
        }
    }

    /// `join`/`join_timeout`: drives the collector until every worker has
    /// exited. `Ok(false)` at the deadline.
    pub fn join(&self, deadline: Option<&Deadline>) -> Result<bool> {
        let mut g = self.lock();
        if g.state == State::Open {
            return Err(Error::PoolNotClosed);
        }
        loop {
            if g.slots.is_empty() {
                g.state = if g.state == State::Terminated { State::Terminated } else { State::Joined };
                return Ok(true);
            }
            if deadline.is_some_and(|d| d.has_passed()) {
                return Ok(false);
            }
            g = self.wait(g, deadline);
        }
    }
}

/// Fails the items of `slot`'s chunk that were not yet answered.
fn fail_job(g: &mut Inner, slot: &Slot, error: impl Fn(usize) -> Error) {
    let Some(job) = &slot.job else { return };
    if let Some(m) = g.calls.get_mut(&job.call) {
        let left = job.len - job.got;
        m.in_flight -= left;
        for index in job.first + job.got..job.first + job.len {
            m.ready.insert(index, Raw::Err(error(index)));
        }
    }
}

/// Reaps a worker that is exiting, killing it if it lingers past `grace`.
/// Its exit code.
fn reap(w: &Worker, grace: Duration) -> i32 {
    match w.process.join_timeout(grace) {
        Ok(Some(code)) => code,
        _ => {
            let _ = w.process.kill();
            w.process.join().unwrap_or(-9)
        }
    }
}
