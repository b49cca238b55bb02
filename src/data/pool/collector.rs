//! Waiting for outcomes, and the one collector.
//!
//! - One thread at a time is the collector (leader/follower): it snapshots
//!   the slots, polls their sockets and a wake socket without the lock,
//!   reads what came, then routes it under the lock and wakes the others.
//!   Any thread that waits for outcomes becomes the collector if nobody is;
//!   the rest sleep on the condition variable. A dispatch to a new slot while
//!   another thread collects writes the wake socket, so the collector polls
//!   that slot too.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use super::core::{Core, Inner, Raw, Slot, Worker};
use super::lifecycle::{fail_job, reap, EXIT_GRACE};
use super::wire::{Done, Outcome};
use crate::data::codec;
use crate::error::Error;
use crate::sys::time::Deadline;

/// How long the collector sleeps before checking that busy workers are
/// alive even without an EOF (a worker's socket could be held open by a
/// process it forked).
pub const LIVENESS_CHECK: Duration = Duration::from_millis(200);

/// What the collector saw on one slot.
enum Event {
    Frame(u64, Vec<u8>),
    /// EOF, an error, or a dead process.
    Gone(u64),
}

impl Core {
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
}
