//! Queues: producer/consumer with poison pills. The parent puts ten tasks on
//! a `JoinableQueue`, then one `None` per consumer; four `Consumer`
//! processes take tasks, print them, put each answer on a results `Queue`,
//! and mark the task done, and each exits when it takes a pill. The parent
//! waits with `join_timeout` until every task (pills included) is done, then
//! prints the results.
//!
//! Python's tasks are callable objects; here a task is a serde struct and the
//! consumer calls its `run` method. Python's `Consumer` subclasses
//! `Process`; here it implements `Run`, so its processes are named
//! `Consumer-N` likewise.
//!
//! Run: `cargo run --release --example queue`
//!
//! Expected output, in about 0.3 s: which consumer takes which task, and the
//! order of the lines after the first, vary from run to run.
//! ```text
//! Creating 4 consumers
//! Consumer-1: 0 * 0
//! Consumer-2: 1 * 1
//! Consumer-3: 2 * 2
//! Consumer-4: 3 * 3
//! Consumer-1: 4 * 4
//! ...
//! Consumer-2: 9 * 9
//! Consumer-3: Exiting
//! Consumer-4: Exiting
//! Consumer-1: Exiting
//! Consumer-2: Exiting
//! Result: 0 * 0 = 0
//! Result: 1 * 1 = 1
//! ...
//! Result: 9 * 9 = 81
//! ```

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shmsync::{current, JoinableQueue, Process, Queue, Run};

const DEADLINE: Duration = Duration::from_secs(10);
const CONSUMERS: usize = 4;
const JOBS: u32 = 10;

#[derive(Serialize, Deserialize)]
struct Task {
    a: u32,
    b: u32,
}

impl Task {
    fn run(&self) -> String {
        std::thread::sleep(Duration::from_millis(100)); // pretend to take time to do the work
        format!("{self} = {}", self.a * self.b)
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} * {}", self.a, self.b)
    }
}

/// Takes tasks until a `None` pill.
struct Consumer {
    tasks: Arc<JoinableQueue<Option<Task>>>,
    results: Arc<Queue<String>>,
}

impl Consumer {
    fn consume(&self) -> Result<(), Box<dyn Error>> {
        let name = current().name();
        loop {
            let next = self.tasks.get_timeout(DEADLINE)?.ok_or_else(|| format!("no task within {DEADLINE:?}"))?;
            let Some(task) = next else {
                // Poison pill means shutdown.
                println!("{name}: Exiting");
                self.tasks.task_done()?;
                return Ok(());
            };
            println!("{name}: {task}");
            let answer = task.run();
            self.tasks.task_done()?;
            self.results.put_timeout(&answer, DEADLINE)?;
        }
    }
}

impl Run for Consumer {
    fn run(self) {
        if let Err(e) = self.consume() {
            eprintln!("{}: {e}", current().name());
            shmsync::process::exit(1);
        }
    }
}

pub fn main() -> Result<(), Box<dyn Error>> {
    // Establish communication queues.
    let tasks = Arc::new(JoinableQueue::<Option<Task>>::new(4096)?);
    let results = Arc::new(Queue::<String>::new(4096)?);

    // Start consumers.
    println!("Creating {CONSUMERS} consumers");
    let consumers: Vec<Process> = (0..CONSUMERS)
        .map(|_| Process::from_run(Consumer { tasks: Arc::clone(&tasks), results: Arc::clone(&results) }))
        .collect();
    for w in &consumers {
        w.start()?;
    }

    // Enqueue jobs, then a poison pill for each consumer.
    for i in 0..JOBS {
        tasks.put_timeout(&Some(Task { a: i, b: i }), DEADLINE)?;
    }
    for _ in 0..CONSUMERS {
        tasks.put_timeout(&None, DEADLINE)?;
    }

    // Wait for all of the tasks to finish.
    if !tasks.join_timeout(DEADLINE)? {
        for w in &consumers {
            w.kill()?;
            w.join()?;
        }
        return Err(format!("{} tasks still unfinished after {DEADLINE:?}", tasks.unfinished()).into());
    }

    // Start printing results.
    for _ in 0..JOBS {
        let result = results.get_timeout(DEADLINE)?.ok_or_else(|| format!("no result within {DEADLINE:?}"))?;
        println!("Result: {result}");
    }

    for w in &consumers {
        match w.join_timeout(DEADLINE)? {
            Some(0) => {}
            Some(code) => return Err(format!("{} exited with {code}", w.name()).into()),
            None => {
                w.kill()?;
                w.join()?;
                return Err(format!("{} did not end within {DEADLINE:?}", w.name()).into());
            }
        }
    }
    Ok(())
}
