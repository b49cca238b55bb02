//! A worker's life as the pool sees it: forked into a slot, replaced when
//! it dies or retires, reaped when it leaves; the items it still owed fail.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use super::core::{Core, Inner, Raw, Slot, State, Worker};
use super::wire::TaskRef;
use super::worker;
use crate::data::pipe;
use crate::error::{Error, Result};
use crate::process::Process;

/// How long a worker whose socket closed, or that retired, may take to
/// exit before it is killed.
pub(super) const EXIT_GRACE: Duration = Duration::from_secs(1);

impl Core {
    /// Forks one worker (under the lock, so the list of descriptors it must
    /// close is complete).
    pub(super) fn start_worker(&self, g: &mut Inner) -> Result<Slot> {
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
    pub(super) fn refill(&self, g: &mut Inner) {
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

    /// Sends `task`, a chunk of call `call`, to the idle worker of slot
    /// `id`: records it as the slot's job, sends without the pool's lock,
    /// and takes the lock back. `true`: the worker died while idle, the
    /// chunk never ran, and the caller sends it elsewhere (`send_failed`).
    pub fn send_chunk<'g>(
        &'g self,
        mut g: MutexGuard<'g, Inner>,
        (id, worker): (u64, &Worker),
        call: u64,
        task: &TaskRef<'_>,
    ) -> (MutexGuard<'g, Inner>, bool) {
        self.assign(&mut g, id, call, task.first as usize, task.items.len());
        drop(g);
        let sent = worker.conn.send(task);
        crash_point!("pool.dispatch.sent");
        let g = self.lock();
        if sent.is_ok() {
            return (g, false);
        }
        self.send_failed(g, id)
    }

    /// The task could not be sent to slot `id`: its worker died while idle.
    /// The chunk never ran; the worker is reaped and replaced. `true`: the
    /// caller sends the chunk elsewhere; `false`: the slot was gone, so
    /// whoever removed it has failed the chunk's items already.
    pub fn send_failed<'g>(&'g self, mut g: MutexGuard<'g, Inner>, id: u64) -> (MutexGuard<'g, Inner>, bool) {
        // Gone already: a collector saw the worker's end first and failed
        // the chunk (`WorkerDied`); sending it again would run items whose
        // outcome is out.
        let Some(pos) = g.slots.iter().position(|s| s.id == id) else { return (g, false) };
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
        (g, true)
    }
}

/// Fails the items of `slot`'s chunk that were not yet answered.
pub(super) fn fail_job(g: &mut Inner, slot: &Slot, error: impl Fn(usize) -> Error) {
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
pub(super) fn reap(w: &Worker, grace: Duration) -> i32 {
    match w.process.join_timeout(grace) {
        Ok(Some(code)) => code,
        _ => {
            let _ = w.process.kill();
            w.process.join().unwrap_or(-9)
        }
    }
}
