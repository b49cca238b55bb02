//! The worker side of a pool: run the initializer, then tasks until the
//! pool closes the connection or `max_tasks_per_child` is reached.

use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::wire::{self, Call, Done, Task};
use crate::data::Connection;
use crate::error::Error;

/// Runs in the forked worker. `foreign` are the pool-side descriptors of the
/// other workers, inherited by the fork: closing them lets each of those
/// workers see the pool close its end.
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
        let call_addr = task.call as usize;
        let func = task.func as usize;
        let outcomes = task
            .items
            .iter()
            .map(|item| {
                // SAFETY: `call` is the address of a `Call` trampoline taken in
                // the forking parent; see `wire::call` for why it is valid here.
                let call = unsafe { std::mem::transmute::<usize, Call>(call_addr) };
                catch_unwind(AssertUnwindSafe(|| call(func, item)))
                    .unwrap_or_else(|payload| Err(wire::panic_message(payload.as_ref())))
            })
            .collect();
        if conn.send(&Done { first: task.first, outcomes }).is_err() {
            return;
        }
        done += 1;
    }
}
