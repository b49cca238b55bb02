//! Controlling access with Lock: two processes print under one lock, one
//! holding it for the guard's scope, one locking and dropping the guard
//! explicitly. Then, beyond the Python original: a child is killed with
//! SIGKILL while it holds the lock; the parent's next lock reports the lock
//! poisoned, recovers it, clears the poison, and carries on.
//!
//! Run: `cargo run --release --example lock`
//!
//! Expected output (the first two lines in either order):
//! ```text
//! Lock acquired via the guard's scope
//! Lock acquired directly, released with drop
//! holder has the lock and is killed
//! holder's exit code: -9
//! the lock is poisoned: a holder died inside the critical section
//! recovered; the lock works again
//! ```

use std::error::Error;
use std::sync::{Arc, TryLockError};
use std::time::Duration;

use shmsync::{current, Event, Lock, Process};

const DEADLINE: Duration = Duration::from_secs(10);

/// Python's `with lock:`: the guard unlocks when it goes out of scope.
fn worker_with(lock: &Lock) -> Result<(), String> {
    let _guard = lock.try_lock_for(DEADLINE).map_err(|e| e.to_string())?;
    println!("Lock acquired via the guard's scope");
    Ok(())
}

/// Python's `lock.acquire()` ... `lock.release()`.
fn worker_no_with(lock: &Lock) -> Result<(), String> {
    let guard = lock.try_lock_for(DEADLINE).map_err(|e| e.to_string())?;
    println!("Lock acquired directly, released with drop");
    drop(guard);
    Ok(())
}

/// Takes the lock, says so, and waits to be killed.
fn holder(lock: &Lock, held: &Event) -> Result<(), String> {
    let _guard = lock.try_lock_for(DEADLINE).map_err(|e| e.to_string())?;
    println!("{} has the lock and is killed", current().name());
    held.set();
    std::thread::sleep(DEADLINE); // killed long before this ends
    Ok(())
}

/// Joins `p` within the deadline and returns its exit code.
fn join(p: &Process) -> Result<i32, Box<dyn Error>> {
    match p.join_timeout(DEADLINE)? {
        Some(code) => Ok(code),
        None => {
            p.kill()?;
            p.join()?;
            Err(format!("{} did not end within {DEADLINE:?}", p.name()).into())
        }
    }
}

pub fn main() -> Result<(), Box<dyn Error>> {
    // A unique name, removed when the last handle in this process drops.
    let lock = Arc::new(Lock::new()?);
    let w = Process::new({
        let lock = Arc::clone(&lock);
        move || worker_with(&lock)
    });
    let nw = Process::new({
        let lock = Arc::clone(&lock);
        move || worker_no_with(&lock)
    });
    w.start()?;
    nw.start()?;
    for p in [&w, &nw] {
        if join(p)? != 0 {
            return Err(format!("{} failed", p.name()).into());
        }
    }

    // A holder killed inside the critical section.
    let held = Arc::new(Event::new()?);
    let h = Process::new({
        let (lock, held) = (Arc::clone(&lock), Arc::clone(&held));
        move || holder(&lock, &held)
    })
    .with_name("holder");
    h.start()?;
    if !held.wait_timeout(DEADLINE) {
        h.kill()?;
        h.join()?;
        return Err("the holder did not take the lock".into());
    }
    h.kill()?;
    println!("{}'s exit code: {}", h.name(), join(&h)?);

    match lock.try_lock_for(DEADLINE) {
        Err(TryLockError::Poisoned(poisoned)) => {
            println!("the lock is poisoned: a holder died inside the critical section");
            let _guard = poisoned.into_inner();
            // ... check and repair the shared state here, holding the lock ...
        }
        Err(TryLockError::WouldBlock) => return Err("the lock was not freed when its holder died".into()),
        Ok(_) => return Err("the holder's death was not detected".into()),
    }
    lock.clear_poison();
    match lock.try_lock_for(DEADLINE) {
        Ok(_guard) => println!("recovered; the lock works again"),
        Err(e) => return Err(format!("after clear_poison: {e}").into()),
    }
    Ok(())
}
