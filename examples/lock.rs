//! Controlling access with Lock: two independent processes take turns under
//! one named lock, then a holder is killed with SIGKILL and the survivor
//! recovers the poisoned lock.
//!
//! Run: `cargo run --release --example lock`
//!
//! Expected output (the order of the two workers' lines may vary):
//! ```text
//! worker 1 has the lock
//! worker 1 releases it
//! worker 2 has the lock
//! worker 2 releases it
//! holder 3 has the lock and is killed
//! the lock is poisoned: a holder died inside the critical section
//! recovered; the lock works again
//! ```
//! The children are this same program started again with a role argument, as
//! unrelated programs would be; they find the lock by name.

use std::io::Write;
use std::process::{Child, Command};
use std::sync::PoisonError;
use std::time::Duration;

use shmsync::Lock;

const DEADLINE: Duration = Duration::from_secs(10);

fn start(role: &str, name: &str, id: u32) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?).args(["--lock-role", role, name, &id.to_string()]).spawn()
}

/// Runs a child role if this process was started as one. Returns `true` if it did.
pub fn child_role() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let Some(pos) = args.iter().position(|a| a == "--lock-role") else { return false };
    let (role, name, id) = (&args[pos + 1], &args[pos + 2], &args[pos + 3]);
    let lock = Lock::open(name).expect("open the lock by name");
    let guard = lock.try_lock_for(DEADLINE).expect("lock within the deadline");
    match role.as_str() {
        "worker" => {
            println!("worker {id} has the lock");
            std::thread::sleep(Duration::from_millis(100));
            println!("worker {id} releases it");
            drop(guard);
        }
        _ => {
            println!("holder {id} has the lock and is killed");
            std::io::stdout().flush().ok();
            std::thread::sleep(DEADLINE); // killed long before this ends
        }
    }
    true
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    if child_role() {
        return Ok(());
    }
    // A unique name, removed when `lock` drops.
    let lock = Lock::new()?;
    let workers = [start("worker", lock.name(), 1)?, start("worker", lock.name(), 2)?];
    for mut w in workers {
        assert!(w.wait()?.success());
    }

    let mut holder = start("holder", lock.name(), 3)?;
    while !lock.is_locked() {
        std::thread::sleep(Duration::from_millis(10));
    }
    holder.kill()?;
    holder.wait()?;

    match lock.try_lock_for(DEADLINE) {
        Err(std::sync::TryLockError::Poisoned(poisoned)) => {
            println!("the lock is poisoned: a holder died inside the critical section");
            let _guard = poisoned.into_inner();
            // ... repair the shared state here ...
        }
        Err(std::sync::TryLockError::WouldBlock) => return Err("lock not released after its holder died".into()),
        Ok(_) => return Err("owner death was not detected".into()),
    }
    lock.clear_poison();
    drop(lock.lock().unwrap_or_else(PoisonError::into_inner));
    println!("recovered; the lock works again");
    Ok(())
}
