//! One host or many, by configuration: three processes take turns on one
//! lock, written once over the `LockLike` trait and run over a local
//! `shmsync::Lock` or an `etcd::Lock`. The third worker is killed while it
//! holds the lock; the lock passes on, poisoned: locally at once, on etcd
//! once the dead worker's lease (TTL 2 s) expires. The next holder clears
//! the poison and the turns go on.
//!
//! Run, across hosts (needs an etcd; the example says how to start one if
//! it finds none):
//! `cargo run --release --features etcd --example etcd_lock`
//! (endpoints from `ETCD_ENDPOINTS`, comma-separated, default
//! `http://127.0.0.1:2379`; run it on several hosts at once with the same
//! endpoints and the workers of all of them take turns).
//! Run on one host: `cargo run --release --example etcd_lock -- --local`
//! (the default when built without the `etcd` feature).
//!
//! Expected output (the order of the workers' turns varies; tokens only
//! on etcd, where they are etcd revisions):
//! ```text
//! backend: etcd at http://127.0.0.1:2379
//! worker-1 has the lock (turn 1, token 12)
//! worker-2 has the lock (turn 1, token 14)
//! worker-3 has the lock and hangs; it is killed
//! worker-3 exit code: -9
//! worker-1 has the lock POISONED after waiting 2.3 s: a holder died inside; checking, then clearing
//! worker-1 has the lock (turn 2, token 19)
//! ...
//! every worker had its turns; the lock is clean
//! ```

#[path = "support/mod.rs"]
mod support;

use std::error::Error;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use shmsync::{current, Event, Held, LockLike, Process};

/// Turns each surviving worker takes.
const TURNS: u32 = 3;
/// How long any wait may take.
const DEADLINE: Duration = Duration::from_secs(20);
/// The etcd session's TTL: how long a dead holder keeps the lock.
#[cfg(feature = "etcd")]
const TTL: Duration = Duration::from_secs(2);

/// Where the lock lives: the configuration the program switches on.
#[derive(Clone, Debug)]
enum Backend {
    /// A named shared-memory lock on this host.
    Local { name: String },
    /// An etcd lock, through an etcd cluster at these endpoints.
    #[cfg(feature = "etcd")]
    Etcd { endpoints: Vec<String>, name: String },
}

impl Backend {
    fn from_args() -> Backend {
        let name = format!("etcd_lock_example.{}", std::process::id());
        let local = std::env::args().any(|a| a == "--local");
        #[cfg(feature = "etcd")]
        if !local {
            let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "http://127.0.0.1:2379".into());
            let endpoints = endpoints.split(',').map(|e| e.trim().to_string()).collect();
            return Backend::Etcd { endpoints, name };
        }
        if !local {
            println!("(built without the `etcd` feature: running on one host; add --features etcd for etcd)");
        }
        Backend::Local { name }
    }

    /// Runs `f` with this process's own handle on the lock: the one
    /// place that knows which kind of lock it is.
    fn with_lock(&self, f: impl FnOnce(&dyn Turns) -> Result<(), String>) -> Result<(), String> {
        match self {
            Backend::Local { name } => {
                let lock = shmsync::Lock::open(name).map_err(|e| e.to_string())?;
                f(&lock)
            }
            #[cfg(feature = "etcd")]
            Backend::Etcd { endpoints, name } => {
                let session = shmsync::etcd::Session::connect(endpoints, TTL).map_err(|e| e.to_string())?;
                let lock = shmsync::etcd::Lock::open(&session, name).map_err(|e| e.to_string())?;
                f(&lock)
            }
        }
    }
}

/// What a worker does, for any lock: written once, over `LockLike`.
trait Turns {
    fn take_turns(&self, turns: u32, hang: Option<&Event>) -> Result<(), String>;
    fn poisoned(&self) -> Result<bool, String>;
}

impl<L: LockLike> Turns for L {
    fn poisoned(&self) -> Result<bool, String> {
        self.is_poisoned().map_err(|e| e.to_string())
    }

    fn take_turns(&self, turns: u32, hang: Option<&Event>) -> Result<(), String> {
        let me = current().name().to_string();
        for turn in 1..=turns {
            let waited = Instant::now();
            let guard = match self.try_lock_for(DEADLINE).map_err(|e| e.to_string())? {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::WouldBlock) => return Err(format!("{me}: no lock in {DEADLINE:?}")),
                Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                    println!(
                        "{me} has the lock POISONED after waiting {:.1} s: a holder died inside; checking, then clearing",
                        waited.elapsed().as_secs_f64()
                    );
                    // ... check and repair the shared state here, holding the lock ...
                    self.clear_poison().map_err(|e| e.to_string())?;
                    PoisonError::into_inner(poisoned)
                }
            };
            if let Some(hang) = hang {
                println!("{me} has the lock and hangs; it is killed");
                hang.set();
                std::thread::sleep(DEADLINE); // killed long before this ends
            }
            // Across hosts, a holder checks that the lock is still its own
            // before it writes, and tags writes with the fencing token.
            guard.check().map_err(|e| e.to_string())?;
            match guard.fencing_token() {
                Some(token) => println!("{me} has the lock (turn {turn}, token {token})"),
                None => println!("{me} has the lock (turn {turn})"),
            }
            std::thread::sleep(Duration::from_millis(100));
            drop(guard);
            std::thread::sleep(Duration::from_millis(30));
        }
        Ok(())
    }
}

/// Whether etcd answers at the backend's endpoints: asked from a child
/// process, so that this one starts no thread before it forks.
#[cfg(feature = "etcd")]
fn etcd_answers(endpoints: &[String]) -> Result<bool, Box<dyn Error>> {
    let endpoints = endpoints.to_vec();
    // An error makes the child print it and exit 1.
    let probe = Process::new(move || -> Result<(), String> {
        let session = shmsync::etcd::Session::builder(&endpoints).connect_timeout(Duration::from_secs(2)).ttl(TTL);
        session.connect().map(drop).map_err(|e| e.to_string())
    })
    .with_name("etcd-probe");
    probe.start()?;
    Ok(probe.join_timeout(DEADLINE)? == Some(0))
}

fn main() -> Result<(), Box<dyn Error>> {
    let backend = Backend::from_args();
    // The local lock is made here and removed when this handle drops; the
    // workers open it by name, as unrelated programs would.
    let _local = match &backend {
        Backend::Local { name } => {
            println!("backend: a local lock on this host");
            Some(shmsync::Lock::builder(name).unlink_on_drop(true).create()?)
        }
        #[cfg(feature = "etcd")]
        Backend::Etcd { endpoints, .. } => {
            println!("backend: etcd at {}", endpoints.join(","));
            if !etcd_answers(endpoints)? {
                println!("No etcd answers there. Start one (Debian: apt-get install etcd-server), e.g.:");
                println!("    etcd --data-dir /tmp/etcd-demo --listen-client-urls http://127.0.0.1:2379 \\");
                println!("         --advertise-client-urls http://127.0.0.1:2379 &");
                println!("then run this again, or set ETCD_ENDPOINTS, or pass --local for one host.");
                std::process::exit(2);
            }
            None
        }
    };

    let hung = Arc::new(Event::new()?);
    let workers: Vec<Process> = (1..=3)
        .map(|i| {
            let backend = backend.clone();
            let hung = Arc::clone(&hung);
            Process::new(move || {
                // Worker 3 hangs holding the lock on its first turn.
                let hang = (i == 3).then_some(&*hung);
                backend.with_lock(|lock| lock.take_turns(TURNS, hang))
            })
            .with_name(format!("worker-{i}"))
        })
        .collect();
    for w in &workers {
        w.start()?;
    }
    if !hung.wait_timeout(DEADLINE) {
        for w in &workers {
            let _ = w.kill();
        }
        return Err("worker-3 never took the lock".into());
    }
    workers[2].kill()?;
    println!("worker-3 exit code: {}", workers[2].join_timeout(DEADLINE)?.unwrap_or(0));
    for w in &workers[..2] {
        support::join_ok(w)?;
    }

    // Every worker is done: check the lock is clean, then remove it.
    backend.with_lock(|lock| match lock.poisoned()? {
        true => Err("the lock is still poisoned".into()),
        false => Ok(()),
    })?;
    #[cfg(feature = "etcd")]
    if let Backend::Etcd { endpoints, name } = &backend {
        let session = shmsync::etcd::Session::connect(endpoints, TTL)?;
        shmsync::etcd::unlink(&session, name)?;
    }
    println!("every worker had its turns; the lock is clean");
    Ok(())
}
