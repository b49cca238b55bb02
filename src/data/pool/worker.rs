//! The worker side of a pool: run the initializer, then tasks until the
//! pool shuts its end of the connection or `max_tasks_per_child` is reached.

use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::wire::{self, Call, Done, Outcome, Task, PER_ITEM};
use crate::data::Connection;
use crate::error::Error;

/// Bytes a `Done` frame adds to its outcomes: two varints (an upper bound).
const DONE_OVERHEAD: usize = 2 * 10;

/// Runs in the forked worker. `foreign` are the pool-side descriptors of the
/// other workers (and the pool's own), inherited by the fork: this worker
/// has no business with them.
pub fn main(conn: Connection, foreign: Vec<RawFd>, init: Option<Arc<dyn Fn() + Send + Sync>>, max_tasks: usize) {
    for fd in foreign {
        crate::sys::child::close_inherited(fd);
    }
    // Task panics are results, reported to the caller; keep stderr quiet.
    std::panic::set_hook(Box::new(|_| {}));
    if let Some(init) = init {
        init();
    }
    let mut done = 0;
    while done < max_tasks {
        let task: Task = match conn.recv() {
            Ok(task) => task,
            Err(Error::Disconnected) => return,
            Err(_) => crate::process::exit(1),
        };
        crash_point!("pool.worker.received");
        let call_addr = task.call as usize;
        let func = task.func as usize;
        let outcomes = task.items.iter().map(|item| {
            // SAFETY: `call` is the address of a `Call` trampoline taken in
            // the forking parent; see `wire::call` for why it is valid here.
            let call = unsafe { std::mem::transmute::<usize, Call>(call_addr) };
            match catch_unwind(AssertUnwindSafe(|| call(func, item))) {
                Ok(Ok(bytes)) => Outcome::Ok(bytes),
                Ok(Err(message)) => Outcome::Failed(message),
                Err(payload) => Outcome::Failed(wire::panic_message(payload.as_ref())),
            }
        });
        if reply(&conn, task.first, outcomes).is_err() {
            return;
        }
        crash_point!("pool.worker.replied");
        done += 1;
    }
}

/// Sends the outcomes of a chunk in as few frames as fit the frame limit; a
/// result too large for any frame becomes [`Outcome::TooLarge`].
fn reply(conn: &Connection, first: u64, outcomes: impl Iterator<Item = Outcome>) -> crate::Result<()> {
    let room = conn.max_frame().saturating_sub(DONE_OVERHEAD);
    let mut batch = Vec::new();
    let mut batch_first = first;
    let mut size = 0;
    for (k, outcome) in outcomes.enumerate() {
        let outcome = match outcome {
            Outcome::Ok(bytes) if bytes.len() + PER_ITEM > room => Outcome::TooLarge(bytes.len() as u64),
            Outcome::Failed(m) if m.len() + PER_ITEM > room => Outcome::Failed(m.chars().take(1024).collect()),
            o => o,
        };
        let cost = PER_ITEM
            + match &outcome {
                Outcome::Ok(b) => b.len(),
                Outcome::Failed(m) => m.len(),
                Outcome::TooLarge(_) => 10,
            };
        if size + cost > room && !batch.is_empty() {
            conn.send(&Done { first: batch_first, outcomes: std::mem::take(&mut batch) })?;
            batch_first = first + k as u64;
            size = 0;
        }
        size += cost;
        batch.push(outcome);
    }
    conn.send(&Done { first: batch_first, outcomes: batch })
}
