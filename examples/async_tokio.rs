//! Async waits from tokio: tasks await a `Semaphore` and a `Queue` that a
//! forked producer feeds, without blocking the runtime's threads.
//!
//! The producer process puts eight jobs and then one `None` pill per task.
//! Four tokio tasks each loop on `jobs.get_async()`; for each job, a task
//! awaits `slots.acquire_async()` (at most two jobs run at once, across
//! every task), works, and drops its permit. The shmsync futures depend on
//! no runtime: a watcher thread of this process sleeps in `futex_waitv` on
//! the words the pending futures wait for and wakes their tasks.
//!
//! The producer is started before the runtime, so the fork happens while the
//! process has one thread.
//!
//! Run: `cargo run --release --example async_tokio`
//!
//! Expected output, in about half a second; which task takes which job, and
//! the order, vary from run to run:
//! ```text
//! task 0: job 1 (running: 1)
//! task 1: job 2 (running: 2)
//! ...
//! task 3: done
//! 8 jobs, never more than 2 at once
//! ```

#[path = "support/mod.rs"]
mod support;

use std::error::Error;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shmsync::{Process, Queue, Semaphore};

const TASKS: u32 = 4;
const JOBS: u32 = 8;
const DEADLINE: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn Error>> {
    let jobs = Arc::new(Queue::<Option<u32>>::new(4096)?);
    let slots = Arc::new(Semaphore::new(2)?);

    let producer = {
        let jobs = Arc::clone(&jobs);
        Process::new(move || -> shmsync::Result<()> {
            for job in 1..=JOBS {
                jobs.put(&Some(job))?;
                std::thread::sleep(Duration::from_millis(10));
            }
            (0..TASKS).try_for_each(|_| jobs.put(&None))
        })
    };
    producer.start()?;

    let running = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicU32::new(0));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (jobs, slots) = (Arc::clone(&jobs), Arc::clone(&slots));
                let (running, most, done) = (Arc::clone(&running), Arc::clone(&most), Arc::clone(&done));
                tokio::spawn(async move {
                    while let Some(job) = tokio::time::timeout(DEADLINE, jobs.get_async()).await.expect("no job")? {
                        let permit = tokio::time::timeout(DEADLINE, slots.acquire_async()).await.expect("no slot");
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        println!("task {task}: job {job} (running: {now})");
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        done.fetch_add(1, Ordering::SeqCst);
                        drop(permit);
                    }
                    println!("task {task}: done");
                    Ok::<(), shmsync::Error>(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        Ok::<(), Box<dyn Error>>(())
    })?;
    support::join_ok(&producer)?;
    let (done, most) = (done.load(Ordering::SeqCst), most.load(Ordering::SeqCst));
    println!("{done} jobs, never more than {most} at once");
    if done != JOBS || most > 2 {
        return Err("the semaphore let too many in, or a job was lost".into());
    }
    Ok(())
}
