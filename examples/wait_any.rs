//! Waiting on several objects at once: a worker that stops on an Event or
//! takes jobs from a Queue, whichever comes first (Python's
//! `multiprocessing.connection.wait(objects, timeout)`).
//!
//! The worker sleeps in one `wait_any` over the stop `Event` and the job
//! queue's `readable()` side: one `futex_waitv` syscall, no thread per
//! object, no polling. `wait_any` reports which is ready and takes nothing;
//! the worker then takes the job with `try_get` (another worker could have
//! been quicker). The parent sends five jobs, waits for their answers, then
//! sets the stop event.
//!
//! Run: `cargo run --release --example wait_any`
//!
//! Expected output, in well under a second:
//! ```text
//! worker: job 1 -> 1
//! worker: job 2 -> 4
//! worker: job 3 -> 9
//! worker: job 4 -> 16
//! worker: job 5 -> 25
//! parent: 5 answers, sum 55
//! worker: stop
//! ```

#[path = "support/mod.rs"]
mod support;

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use shmsync::{wait_any, Event, Process, Queue};

const DEADLINE: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn Error>> {
    let stop = Arc::new(Event::new()?);
    let jobs = Arc::new(Queue::<u64>::new(4096)?);
    let answers = Arc::new(Queue::<u64>::new(4096)?);

    // The forked worker gets its own copies of the handles (one mapping each).
    let (s, j, a) = (Arc::clone(&stop), Arc::clone(&jobs), Arc::clone(&answers));
    let worker = Process::new(move || -> shmsync::Result<()> {
        let (stop, jobs, answers) = (&*s, &*j, &*a);
        loop {
            match wait_any(&[stop, &jobs.readable()], Some(DEADLINE))? {
                Some(0) => {
                    println!("worker: stop");
                    return Ok(());
                }
                Some(_) => {
                    // Ready, not taken: take it now (it may be gone).
                    if let Some(job) = jobs.try_get()? {
                        println!("worker: job {job} -> {}", job * job);
                        answers.put(&(job * job))?;
                    }
                }
                None => return Err(shmsync::Error::Disconnected),
            }
        }
    });
    worker.start()?;

    for job in 1..=5 {
        jobs.put(&job)?;
    }
    let mut sum = 0;
    for _ in 0..5 {
        sum += answers.get_timeout(DEADLINE)?.ok_or("an answer did not come")?;
    }
    println!("parent: 5 answers, sum {sum}");
    stop.set();
    support::join_ok(&worker)
}
