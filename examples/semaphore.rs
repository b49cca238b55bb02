//! Concurrent access with Semaphore: ten workers, at most three at a time
//! (a semaphore of 3), and a shared "now running" list that each worker
//! prints when it gets in and the parent prints while it waits.
//!
//! shmsync has no shared list type yet, so the list is one `Event` per worker
//! (created by the parent before the fork) used as a membership flag: a
//! worker sets its own on entry and clears it on leaving, and the list is the
//! names whose flag is set, read while holding a `Lock`. The lists never hold
//! more than three names (the example checks), and the last one is empty.
//!
//! Run: `cargo run --release --example semaphore`
//!
//! Expected output, in about 2 s: the names and the interleaving vary from run
//! to run, as workers sleep a random time under 1 s as in Python.
//! ```text
//! Activating 0 now running ["0"]
//! Activating 1 now running ["0", "1"]
//! Activating 2 now running ["0", "1", "2"]
//! Now running ["0", "1", "2"]
//! Now running ["0", "1", "2"]
//! Activating 3 now running ["0", "2", "3"]
//! Now running ["0", "2", "3"]
//! ...
//! Activating 9 now running ["7", "8", "9"]
//! Now running ["8", "9"]
//! ...
//! Now running []
//! ```

use std::collections::hash_map::RandomState;
use std::error::Error;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmsync::{current, Event, Lock, Process, Semaphore};

const DEADLINE: Duration = Duration::from_secs(10);
const SLOTS: usize = 3;

/// The names of the workers running now, in shared memory.
struct ActivePool {
    lock: Lock,
    active: Vec<(String, Event)>,
}

impl ActivePool {
    fn new(names: impl IntoIterator<Item = String>) -> shmsync::Result<ActivePool> {
        let active = names.into_iter().map(|n| Ok((n, Event::new()?))).collect::<shmsync::Result<_>>()?;
        Ok(ActivePool { lock: Lock::new()?, active })
    }

    fn flag(&self, name: &str) -> Result<&Event, String> {
        self.active.iter().find(|(n, _)| n == name).map(|(_, e)| e).ok_or_else(|| format!("no worker {name}"))
    }

    fn make_active(&self, name: &str) -> Result<(), String> {
        let _guard = self.lock.try_lock_for(DEADLINE).map_err(|e| e.to_string())?;
        self.flag(name)?.set();
        Ok(())
    }

    fn make_inactive(&self, name: &str) -> Result<(), String> {
        let _guard = self.lock.try_lock_for(DEADLINE).map_err(|e| e.to_string())?;
        self.flag(name)?.clear();
        Ok(())
    }

    /// A snapshot of the list; an error if it is longer than the semaphore allows.
    fn running(&self) -> Result<Vec<&str>, String> {
        let _guard = self.lock.try_lock_for(DEADLINE).map_err(|e| e.to_string())?;
        let names: Vec<&str> = self.active.iter().filter(|(_, e)| e.is_set()).map(|(n, _)| n.as_str()).collect();
        if names.len() > SLOTS {
            return Err(format!("{} workers running at once: {names:?}", names.len()));
        }
        Ok(names)
    }
}

/// A random duration under 1 s (Python's `random.random()` seconds).
fn random_pause() -> Duration {
    let mut h = RandomState::new().build_hasher();
    // Forked children inherit the parent's hash keys; the pid tells them apart.
    h.write_u32(std::process::id());
    Duration::from_millis(h.finish() % 1000)
}

fn worker(s: &Semaphore, pool: &ActivePool) -> Result<(), String> {
    let name = current().name();
    let _permit = s.try_acquire_for(DEADLINE).ok_or("no permit within the deadline")?;
    pool.make_active(name)?;
    println!("Activating {name} now running {:?}", pool.running()?);
    std::thread::sleep(random_pause());
    pool.make_inactive(name)?;
    Ok(())
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let pool = Arc::new(ActivePool::new((0..10).map(|i| i.to_string()))?);
    let s = Arc::new(Semaphore::new(SLOTS as u32)?);
    let jobs: Vec<Process> = (0..10)
        .map(|i| {
            let (s, pool) = (Arc::clone(&s), Arc::clone(&pool));
            Process::new(move || worker(&s, &pool)).with_name(i.to_string())
        })
        .collect();
    for j in &jobs {
        j.start()?;
    }

    let deadline = Instant::now() + DEADLINE;
    let mut last = None;
    loop {
        let mut alive = 0;
        for j in &jobs {
            if j.is_alive() {
                alive += 1;
                j.join_timeout(Duration::from_millis(100))?;
                let now = pool.running()?;
                println!("Now running {now:?}");
                last = Some(now.is_empty());
            }
        }
        if alive == 0 {
            break;
        }
        if Instant::now() > deadline {
            for j in &jobs {
                j.kill()?;
                j.join()?;
            }
            return Err(format!("the workers did not finish within {DEADLINE:?}").into());
        }
    }
    // A worker may have ended just after the last line was printed.
    if last != Some(true) {
        println!("Now running {:?}", pool.running()?);
    }
    for j in &jobs {
        if j.exitcode() != Some(0) {
            return Err(format!("worker {} exited with {:?}", j.name(), j.exitcode()).into());
        }
    }
    Ok(())
}
