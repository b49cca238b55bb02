//! Readers and writers with RwLock (beyond the Python original, which has
//! no reader-writer lock): one writer process updates a shared table while
//! three reader processes read it at the same time, and every read sees a
//! whole table. Then a writer is killed with SIGKILL in the middle of an
//! update: the next reader gets the lock within a quarter of a second (its
//! first re-check finds the writer dead), poisoned, sees the half-done
//! table, and a writer repairs it.
//!
//! Run: `cargo run --release --example rwlock`
//!
//! Expected output (the first four lines in any order):
//! ```text
//! reader 1: 100 reads, every table whole
//! reader 2: 100 reads, every table whole
//! reader 3: 100 reads, every table whole
//! writer: 50 updates
//! writer killed in the middle of update 51
//! writer's exit code: -9
//! the lock is poisoned: a writer died mid-update; table: [51, 51, 51, 51, 50, 50, 50, 50]
//! repaired and cleared; the table: [51, 51, 51, 51, 51, 51, 51, 51]
//! ```

#[path = "support/mod.rs"]
mod support;

use std::error::Error;
use std::sync::{Arc, TryLockError};
use std::time::Duration;

use shmsync::{current, Event, Process, RwLock};
use support::{join_ok, JOIN_DEADLINE};

/// Eight entries that every update sets to the same new version.
type Table = [u64; 8];

const DEADLINE: Duration = Duration::from_secs(10);
const UPDATES: u64 = 50;
const READS: u32 = 100;

/// Reads the table `READS` times; every read must see one version throughout.
fn reader(table: &RwLock<Table>) -> Result<(), String> {
    for _ in 0..READS {
        let t = table.try_read_for(DEADLINE).map_err(|e| e.to_string())?;
        if t.iter().any(|&v| v != t[0]) {
            return Err(format!("a half-done table: {:?}", *t));
        }
        drop(t);
        std::thread::sleep(Duration::from_micros(500));
    }
    println!("{}: {READS} reads, every table whole", current().name());
    Ok(())
}

/// Updates the table `UPDATES` times, one entry at a time.
fn writer(table: &RwLock<Table>) -> Result<(), String> {
    for _ in 0..UPDATES {
        let mut t = table.try_write_for(DEADLINE).map_err(|e| e.to_string())?;
        let next = t[0] + 1;
        for v in t.iter_mut() {
            *v = next;
        }
        drop(t);
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("{}: {UPDATES} updates", current().name());
    Ok(())
}

/// Starts update 51, gets half way, and waits to be killed.
fn doomed_writer(table: &RwLock<Table>, halfway: &Event) -> Result<(), String> {
    let mut t = table.try_write_for(DEADLINE).map_err(|e| e.to_string())?;
    let next = t[0] + 1;
    for v in t.iter_mut().take(4) {
        *v = next;
    }
    halfway.set();
    std::thread::sleep(DEADLINE); // killed long before this ends
    Ok(())
}

pub fn main() -> Result<(), Box<dyn Error>> {
    // A unique name, removed when the last handle in this process drops.
    let table = Arc::new(RwLock::<Table>::new([0; 8])?);

    let mut procs = Vec::new();
    for i in 1..=3 {
        let table = Arc::clone(&table);
        procs.push(Process::new(move || reader(&table)).with_name(format!("reader {i}")));
    }
    let t = Arc::clone(&table);
    procs.push(Process::new(move || writer(&t)).with_name("writer"));
    for p in &procs {
        p.start()?;
    }
    for p in &procs {
        join_ok(p)?;
    }

    // A writer killed in the middle of an update.
    let halfway = Arc::new(Event::new()?);
    let w = Process::new({
        let (table, halfway) = (Arc::clone(&table), Arc::clone(&halfway));
        move || doomed_writer(&table, &halfway)
    })
    .with_name("writer");
    w.start()?;
    if !halfway.wait_timeout(DEADLINE) {
        w.kill()?;
        w.join()?;
        return Err("the writer did not start its update".into());
    }
    println!("{} killed in the middle of update {}", w.name(), UPDATES + 1);
    w.kill()?;
    let code = w.join_timeout(JOIN_DEADLINE)?.ok_or("the killed writer was not reaped")?;
    println!("{}'s exit code: {code}", w.name());

    match table.try_read_for(DEADLINE) {
        Err(TryLockError::Poisoned(poisoned)) => {
            let t = poisoned.into_inner();
            println!("the lock is poisoned: a writer died mid-update; table: {:?}", *t);
        }
        Err(TryLockError::WouldBlock) => return Err("the dead writer's lock was not recovered".into()),
        Ok(_) => return Err("the writer's death was not detected".into()),
    }
    // Repair under the write lock (still poisoned), then clear the poison.
    {
        let mut t = match table.try_write_for(DEADLINE) {
            Ok(t) => t,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err("the write lock did not come".into()),
        };
        let newest = t.iter().copied().max().unwrap_or(0);
        t.iter_mut().for_each(|v| *v = newest);
    }
    table.clear_poison();
    let t = table.try_read_for(DEADLINE).map_err(|e| e.to_string())?;
    println!("repaired and cleared; the table: {:?}", *t);
    Ok(())
}
