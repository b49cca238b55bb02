//! Pool.map: a pool of worker processes doubles the numbers 0 to 9. Each
//! worker runs an initializer first, which prints its name; `map` returns
//! the results in input order, whichever worker computed each. A second pool
//! with `max_tasks_per_child(2)` shows workers being retired after two tasks
//! and replaced by new ones, each announcing itself with its own initializer
//! line, as Python's `maxtasksperchild` does.
//!
//! Run: `cargo run --release --example pool`
//!
//! Expected output: each pool's `Starting` lines come in any order, and
//! which worker computes which item varies from run to run. Worker numbers go
//! on counting across both pools, as Python's do.
//! ```text
//! Input : [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
//! Starting PoolWorker-1
//! Starting PoolWorker-2
//! Starting PoolWorker-3
//! Starting PoolWorker-4
//! Pool : [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
//!
//! With max_tasks_per_child(2):
//! Starting PoolWorker-5
//! Starting PoolWorker-6
//! Starting PoolWorker-7
//! ...
//! Pool : [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
//! 0 * 2 = 0 by PoolWorker-5
//! 1 * 2 = 2 by PoolWorker-6
//! 2 * 2 = 4 by PoolWorker-5
//! 3 * 2 = 6 by PoolWorker-6
//! 4 * 2 = 8 by PoolWorker-7
//! ...
//! Workers used: PoolWorker-5, PoolWorker-6, PoolWorker-7, PoolWorker-8, PoolWorker-9, PoolWorker-10
//! ```
//! The last line lists the workers in order of first use. The example checks
//! that no worker ran more than two tasks.

use std::error::Error;

use shmsync::{current, Pool};

/// The longest any wait in this example may take.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

const WORKERS: usize = 4;
const TASKS_PER_CHILD: usize = 2;

fn do_calculation(data: u32) -> u32 {
    data * 2
}

/// As `do_calculation`, also saying which worker did it.
fn do_calculation_where(data: u32) -> (u32, String) {
    (do_calculation(data), current().name().to_string())
}

fn start_process() {
    println!("Starting {}", current().name());
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let inputs: Vec<u32> = (0..10).collect();
    println!("Input : {inputs:?}");

    let pool = Pool::builder().processes(WORKERS).initializer(start_process).build()?;
    let outputs = pool.map(do_calculation, inputs.iter().copied())?;
    pool.close();
    if !pool.join_timeout(DEADLINE)? {
        return Err("pool workers did not exit in time".into());
    }
    println!("Pool : {outputs:?}");

    println!("\nWith max_tasks_per_child({TASKS_PER_CHILD}):");
    let pool = Pool::builder().processes(2).initializer(start_process).max_tasks_per_child(TASKS_PER_CHILD).build()?;
    let outputs = pool.map(do_calculation_where, inputs.iter().copied())?;
    pool.close();
    if !pool.join_timeout(DEADLINE)? {
        return Err("pool workers did not exit in time".into());
    }
    let values: Vec<u32> = outputs.iter().map(|(v, _)| *v).collect();
    println!("Pool : {values:?}");
    // Each worker and how many tasks it ran, in order of first use.
    let mut tasks_by_worker: Vec<(&str, usize)> = Vec::new();
    for (input, (value, worker)) in inputs.iter().zip(&outputs) {
        println!("{input} * 2 = {value} by {worker}");
        match tasks_by_worker.iter_mut().find(|(w, _)| w == worker) {
            Some((_, n)) => *n += 1,
            None => tasks_by_worker.push((worker, 1)),
        }
    }
    let names: Vec<&str> = tasks_by_worker.iter().map(|(w, _)| *w).collect();
    println!("Workers used: {}", names.join(", "));
    if let Some((worker, n)) = tasks_by_worker.iter().find(|(_, n)| *n > TASKS_PER_CHILD) {
        return Err(format!("{worker} ran {n} tasks, more than {TASKS_PER_CHILD}").into());
    }
    Ok(())
}
