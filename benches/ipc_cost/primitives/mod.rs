//! Sections 1-3 of the IPC-cost study: what the synchronisation primitives
//! cost uncontended, handing control between two processes, and contended by
//! 1-8 processes (with the lock's fairness). Each probe takes one sample per
//! call, checks it, and leaves nothing behind: the objects under test are
//! made afresh for each sample (shmsync's unlink their names when they
//! drop), and every forked child `_exit`s and is reaped before `sample`
//! returns.
//!
//! The harness process must be single-threaded when a probe forks (the
//! children run only code that is safe in a forked copy of one thread).

pub mod contended;
pub mod handoff;
pub mod uncontended;

/// Reaps every child, all of which must exit 0. As soon as one fails, or
/// `limit` passes, kills and reaps the rest and returns what went wrong.
fn reap_or_kill(children: &mut [crate::common::Child], limit: std::time::Duration) -> Result<(), String> {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + limit;
    let mut problem: Option<String> = None;
    loop {
        let slice = (Instant::now() + Duration::from_millis(100)).min(deadline);
        let done = crate::common::reap_all(children, slice, |child, status| {
            if problem.is_none() {
                problem = crate::common::exit_problem(child, status);
            }
        });
        if let Some(p) = problem {
            // Dropping the children (in the caller) kills and reaps the rest.
            return Err(p);
        }
        if done {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("a child was still running after {limit:?}; killed"));
        }
    }
}
