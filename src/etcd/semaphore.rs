//! `etcd::Semaphore`: at most `permits` holders across hosts; a holder's
//! permit returns to the pool when its lease ends.
//!
//! Keys, under `<prefix>sem/<name>/`:
//!
//! | key           | lease         | value            | meaning                      |
//! |---------------|---------------|------------------|------------------------------|
//! | `permits`     | none          | the permit count | fixed when first opened      |
//! | `slot/NNNN`   | the holder's  | attempt id       | permit NNNN is taken         |
//!
//! A permit is a slot, `0..permits`. Acquire is one transaction on one
//! slot: *if `slot/i` does not exist*, put it with our lease; else read
//! every slot. From that list a failed attempt learns which slots are free
//! and tries one of them at once, or, when none is, watches the slots for a
//! delete (see `wait.rs`). Since a slot key can only be created when it
//! does not exist, at most `permits` processes hold one; waiters write
//! nothing, so a waiter that dies costs nothing. Release deletes the slot
//! *if it is still ours* (its create revision is the permit's token).
//!
//! How this differs from the local [`Semaphore`](crate::Semaphore), whose
//! killed holder's unit is lost, is written on [`Semaphore`] itself.
//!
//! Retries are recognised as in the lock: a lost answer whose transaction
//! committed shows up, in the retry's list of slots, as a slot holding our
//! attempt id.

use std::time::{Duration, Instant};

use super::session::{Core, Session};
use super::wait;
use super::wire::{self, compare, Cmp, Op};
use crate::error::{Error, Result};

/// The most permits a semaphore may have (every failed attempt reads all
/// the slots, so keep the list short).
pub const MAX_PERMITS: u32 = 1024;

/// The pause after a run of attempts that each found a free slot and lost
/// it to another process.
const CHURN_PAUSE: Duration = Duration::from_millis(20);

/// A counting semaphore shared by every process that opens `name` through
/// etcd, on any host: at most `permits` [`Permit`]s exist at once.
///
/// **A dead holder's permit comes back**, unlike a unit of the local
/// [`Semaphore`](crate::Semaphore). There, as in Python, a process killed
/// while holding a unit takes the unit with it, since nothing records who
/// took which unit (and any process may release one). Here each permit is
/// a key tied to its holder's lease: when the holder dies, or is cut off or
/// paused past its TTL, etcd deletes the key and the permit returns to the
/// pool, after the TTL. So there is no `release()` without a permit and no
/// `forget`: a permit is always someone's. [`Permit::check`] tells a holder
/// whose lease is gone that its permit may have been handed on. Waiters
/// are not queued (like the local semaphore's, they are not FIFO) and
/// write nothing, so a waiter that dies costs the others nothing.
///
/// ```no_run
/// use std::time::Duration;
/// use shmsync::etcd::{Semaphore, Session};
/// let session = Session::connect(["http://127.0.0.1:2379"], Duration::from_secs(5))?;
/// let sem = Semaphore::open(&session, "downloads", 3)?;
/// let permit = sem.acquire()?; // one of at most 3, across every host
/// // ...
/// drop(permit);
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct Semaphore {
    session: Session,
    name: String,
    permits: u32,
    /// `<prefix>sem/<name>/slot/`
    slots: Vec<u8>,
}

/// How one attempt went.
#[derive(Clone, Copy)]
enum Attempt {
    Acquired {
        slot: u32,
        token: i64,
    },
    /// Slot taken, but this one was free when we looked.
    TryAgain {
        slot: u32,
    },
    Full {
        revision: i64,
    },
}

impl Semaphore {
    /// The semaphore `name` with `permits` (1 to [`MAX_PERMITS`]). The
    /// first opener fixes the count; opening it with another count is
    /// `Err(InvalidArgument)`. One round trip.
    pub fn open(session: &Session, name: &str, permits: u32) -> Result<Semaphore> {
        let name = crate::segment::name::validate(name)?.to_string();
        if permits == 0 || permits > MAX_PERMITS {
            return Err(Error::InvalidArgument {
                name: name.clone(),
                detail: format!("an etcd semaphore has 1 to {MAX_PERMITS} permits, not {permits}"),
            });
        }
        let core = session.core();
        let base = core.object_prefix("sem", &name);
        let config = [base.as_slice(), b"permits"].concat();
        let count = permits.to_string();
        let t = wire::txn(
            vec![compare(&config, "EQUAL", Cmp::Create(0))],
            &[Op::Put(wire::put(&config, count.as_bytes(), 0))],
            &[Op::Range(wire::range(&config))],
        );
        let op = format!("open of semaphore '{name}'");
        let r = core.txn(&t, &op)?;
        if !r.succeeded {
            let existing = r.range(0, &op)?.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
            if existing.as_deref() != Some(count.as_str()) {
                return Err(Error::InvalidArgument {
                    name: name.clone(),
                    detail: format!(
                        "etcd semaphore '{name}' has {} permits, not {permits}; open it with that count, or remove it with etcd::unlink",
                        existing.unwrap_or_else(|| "no record of its".into())
                    ),
                });
            }
        }
        Ok(Semaphore { session: session.clone(), permits, slots: [base.as_slice(), b"slot/"].concat(), name })
    }

    /// The semaphore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of permits.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// The permits free now (a snapshot).
    pub fn value(&self) -> Result<u32> {
        let t = wire::txn(vec![], &[Op::Range(wire::count_prefix(&self.slots))], &[]);
        let taken = self.core().txn(&t, &self.op("value"))?.range(0, "value")?.count;
        Ok(self.permits.saturating_sub(u32::try_from(taken).unwrap_or(u32::MAX)))
    }

    /// Waits until a permit is free and takes it. `Err(LeaseLost)` if this
    /// session's lease goes, `Err(EtcdUnreachable)` if etcd stops answering.
    pub fn acquire(&self) -> Result<Permit<'_>> {
        loop {
            if let Some(permit) = self.take(None)? {
                return Ok(permit);
            }
        }
    }

    /// Takes a permit if one is free, without waiting.
    pub fn try_acquire(&self) -> Result<Option<Permit<'_>>> {
        self.take(Some(Instant::now()))
    }

    /// Takes a permit, waiting at most `timeout` (plus at most one request
    /// timeout for the attempt in flight); `Ok(None)` when time ran out.
    pub fn try_acquire_for(&self, timeout: Duration) -> Result<Option<Permit<'_>>> {
        self.take(Some(Instant::now() + timeout))
    }

    fn core(&self) -> &Core {
        self.session.core()
    }

    fn op(&self, what: &str) -> String {
        format!("{what} of semaphore '{}'", self.name)
    }

    fn slot_key(&self, slot: u32) -> Vec<u8> {
        [self.slots.as_slice(), format!("{slot:04}").as_bytes()].concat()
    }

    /// Tries until it holds a permit or `until` passes.
    fn take(&self, until: Option<Instant>) -> Result<Option<Permit<'_>>> {
        let id = self.core().attempt_id();
        let mut slot = (self.core().spread() % u64::from(self.permits)) as u32;
        // Each TryAgain means a slot that was free was taken meanwhile;
        // after this many in a row, wait for a release instead.
        let mut tries_left = 2 * self.permits + 2;
        loop {
            let attempt = self.attempt(&id, slot).inspect_err(|e| {
                if matches!(e, Error::EtcdUnreachable { .. }) {
                    self.abandon(&id);
                }
            })?;
            match attempt {
                Attempt::Acquired { slot, token } => {
                    crash_point!("etcd.semaphore.acquired");
                    return Ok(Some(Permit { sem: self, slot, token, released: false }));
                }
                Attempt::TryAgain { slot: free } if tries_left > 0 => {
                    tries_left -= 1;
                    slot = free;
                    continue;
                }
                Attempt::TryAgain { .. } | Attempt::Full { .. } => {}
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                return Ok(None);
            }
            tries_left = 2 * self.permits + 2;
            match attempt {
                Attempt::Full { revision } => {
                    let end = wire::prefix_end(&self.slots);
                    wait::await_delete(self.core(), &self.slots, &end, revision, until, &self.op("wait"))?;
                }
                // Free slots kept being taken under us: let the churn settle.
                _ => std::thread::sleep(CHURN_PAUSE),
            }
        }
    }

    /// One acquisition transaction on `slot` (see the module docs).
    fn attempt(&self, id: &[u8], slot: u32) -> Result<Attempt> {
        let core = self.core();
        core.ensure_alive()?;
        let op = self.op("acquire");
        let key = self.slot_key(slot);
        let t = wire::txn(
            vec![compare(&key, "EQUAL", Cmp::Create(0))],
            &[Op::Put(wire::put(&key, id, core.lease))],
            &[Op::Range(wire::range_under(&self.slots))],
        );
        let r = core.txn(&t, &op)?;
        if r.succeeded {
            return Ok(Attempt::Acquired { slot, token: r.header.revision });
        }
        let mut taken = vec![false; self.permits as usize];
        for kv in &r.range(0, &op)?.kvs {
            let Some(index) = kv.key.strip_prefix(self.slots.as_slice()).and_then(parse_slot) else {
                continue;
            };
            if kv.value == id {
                // Our own earlier try, whose answer was lost, won.
                return Ok(Attempt::Acquired { slot: index, token: kv.create_revision });
            }
            if let Some(t) = taken.get_mut(index as usize) {
                *t = true;
            }
        }
        let free: Vec<u32> = (0..self.permits).filter(|&i| !taken[i as usize]).collect();
        if free.is_empty() {
            Ok(Attempt::Full { revision: r.header.revision })
        } else {
            Ok(Attempt::TryAgain { slot: free[(core.spread() % free.len() as u64) as usize] })
        }
    }

    /// After a failed call: removes any slot an attempt with `id` took
    /// after all (best effort).
    fn abandon(&self, id: &[u8]) {
        let t = wire::txn(vec![], &[Op::Range(wire::range_under(&self.slots))], &[]);
        let deadline = Instant::now() + super::ABANDON_TIMEOUT;
        let Ok(r) = self.core().txn_until(&t, deadline, &self.op("abandon")) else { return };
        let Ok(range) = r.range(0, "abandon") else { return };
        for kv in range.kvs.iter().filter(|kv| kv.value == id) {
            if let Some(slot) = kv.key.strip_prefix(self.slots.as_slice()).and_then(parse_slot) {
                let key = self.slot_key(slot);
                let t = wire::txn(
                    vec![compare(&key, "EQUAL", Cmp::Create(kv.create_revision))],
                    &[Op::Delete(wire::delete(&key))],
                    &[],
                );
                let _ = self.core().txn_until(&t, deadline, &self.op("abandon"));
            }
        }
    }

    /// Deletes `slot` if it is still the permit with `token`.
    fn release(&self, slot: u32, token: i64) -> Result<()> {
        let key = self.slot_key(slot);
        let t = wire::txn(vec![compare(&key, "EQUAL", Cmp::Create(token))], &[Op::Delete(wire::delete(&key))], &[]);
        // Not ours any more while the lease lives: a retry whose first try
        // released (see the lock's release).
        if self.core().txn(&t, &self.op("release"))?.succeeded || self.core().alive() {
            Ok(())
        } else {
            Err(Error::LeaseLost { lease: self.core().lease })
        }
    }
}

/// A slot number from a key's last part, `NNNN`.
fn parse_slot(text: &[u8]) -> Option<u32> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("etcd::Semaphore").field("name", &self.name).field("permits", &self.permits).finish()
    }
}

/// One permit of an etcd [`Semaphore`]; dropping it gives the permit back
/// (one round trip; a failure is logged, and the permit returns when the
/// lease ends).
#[must_use = "if unused the permit is released at once"]
pub struct Permit<'a> {
    sem: &'a Semaphore,
    slot: u32,
    token: i64,
    released: bool,
}

impl Permit<'_> {
    /// The etcd revision that created this permit: larger than that of any
    /// permit taken before it.
    pub fn fencing_token(&self) -> u64 {
        self.token as u64
    }

    /// `Err(LeaseLost)` once this process no longer knows its lease to be
    /// alive: the permit may have returned to the pool.
    pub fn check(&self) -> Result<()> {
        self.sem.core().ensure_alive()
    }

    /// Gives the permit back and reports how that went: `Err(LeaseLost)`
    /// if it was no longer ours.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.sem.release(self.slot, self.token)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = self.sem.release(self.slot, self.token) {
                log::warn!("shmsync: releasing a permit of etcd semaphore '{}' failed: {e}", self.sem.name);
            }
        }
    }
}

impl std::fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("etcd::Permit")
            .field("semaphore", &self.sem.name)
            .field("slot", &self.slot)
            .field("token", &self.token)
            .finish()
    }
}
