//! `etcd::Lock`: one holder at a time across hosts, poisoned when a holder
//! loses its lease while holding.
//!
//! Keys, under `<prefix>lock/<name>/`:
//!
//! | key      | lease          | exists while                                     | value        |
//! |----------|----------------|--------------------------------------------------|--------------|
//! | `owner`  | the holder's   | someone holds the lock                           | attempt id   |
//! | `held`   | none           | someone holds it, or a holder lost its lease     | attempt id   |
//! | `poison` | none           | poisoned, until `clear_poison`                   | why          |
//!
//! Acquire is one transaction: *if `owner` does not exist*, then read
//! the object's keys (`held`, `poison`: keys only), put `owner` with our
//! lease and put `held`; else read them all (`owner` with its value). If
//! the success branch found `held`, the last holder vanished without
//! releasing: the lock is poisoned, and a second call puts `poison` (the
//! rare path; should this process die before it, its own `held` marker is
//! left behind just the same, so the poison is not lost). The revision of
//! the transaction is the fencing token: every write makes a new revision,
//! so each holder's token is larger than every earlier holder's.
//!
//! Release is one transaction: *if `owner` is still ours* (its create
//! revision is the token), delete `held` and `owner` (one range delete:
//! they sort next to each other, before `poison`), and put `poison` if the
//! holder is panicking. No other process writes `held` while `owner` is
//! ours. When the holder's lease expires first, etcd deletes `owner` but
//! not `held`, and the next acquirer finds the lock poisoned, as a
//! SIGKILLed holder leaves a local [`crate::Lock`].
//!
//! Round trips: lock 1, unlock 1 (a put costs 1); the transactions are
//! kept small because the gateway's JSON handling, not the network,
//! dominates a call's cost on a LAN.
//!
//! A waiter watches `owner` for a delete after the revision its attempt saw
//! (see `wait.rs`), then tries again: no queue, no key of its own, so a
//! waiter that dies costs nothing; like the local lock, it is not FIFO.
//!
//! Retries: each acquisition has its own attempt id (`lease.pid@host.n`),
//! written as `owner`'s value. If an attempt's answer is lost (a leader
//! change, a reset connection) and the retry finds `owner` holding our own
//! id, the first try won, at `owner`'s create revision; whether it found a
//! vanished holder's `held` is still readable, since such a marker was
//! created before our `owner` (a fresh one has the same create revision).
//! A call that finally fails may still commit later: the lock then removes
//! an `owner` with its id, and the `held` it made (best effort); should
//! even that lose the race, the lock stays held until the session's lease
//! ends, and the next holder finds it poisoned.

use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};
use std::time::{Duration, Instant};

use super::session::{Core, Session};
use super::wait;
use super::wire::{self, compare, Cmp, Op};
use crate::error::{Error, Result};

/// What a poisoned lock's `poison` key says when a holder vanished.
const VANISHED: &[u8] = b"a holder lost its etcd lease while holding the lock";
/// What it says when a holder panicked.
const PANICKED: &[u8] = b"a holder panicked while holding the lock";

/// A lock shared by every process that opens `name` through etcd, on any
/// host: one holder at a time, with the local [`Lock`](crate::Lock)'s
/// surface (see [`LockLike`](crate::LockLike), which both implement).
///
/// - **Poison**: a holder whose lease expires while it holds the lock (its
///   process died, or was cut off or paused past the TTL) leaves the lock
///   poisoned for the next holder, as a SIGKILLed local holder does; so does
///   a holder that panics. The flag lives in etcd until
///   [`clear_poison`](Self::clear_poison).
/// - **Fencing**: [`Guard::fencing_token`] increases strictly from holder
///   to holder, so a store can refuse a stale holder's writes.
/// - **Loss**: [`Guard::check`] is `Err(LeaseLost)` once the lease is gone.
///
/// Every call returns `Err` for what the network can do (etcd unreachable
/// within the request timeout, the lease lost), and inside that, std's
/// `LockResult`/`TryLockResult`, as the local lock returns them.
///
/// ```no_run
/// use std::sync::PoisonError;
/// use std::time::Duration;
/// use shmsync::etcd::{Lock, Session};
/// let session = Session::connect(["http://127.0.0.1:2379"], Duration::from_secs(5))?;
/// let lock = Lock::open(&session, "jobs")?;
/// let guard = lock.lock()?.unwrap_or_else(PoisonError::into_inner);
/// // ... one holder across all hosts; tag writes with guard.fencing_token() ...
/// guard.check()?; // still ours?
/// drop(guard);
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct Lock {
    session: Session,
    name: String,
    /// `<prefix>lock/<name>/`
    base: Vec<u8>,
    owner: Vec<u8>,
    held: Vec<u8>,
    poison: Vec<u8>,
}

/// How one attempt went.
#[derive(Clone, Copy)]
enum Attempt {
    Acquired { token: i64, poisoned: bool },
    Busy { revision: i64 },
}

impl Lock {
    /// The lock `name` (1 to 200 bytes of `[A-Za-z0-9._-]`, as for local
    /// objects), held through `session`. Makes no network call: the lock
    /// exists in etcd only while held or poisoned.
    pub fn open(session: &Session, name: &str) -> Result<Lock> {
        let name = crate::segment::name::validate(name)?.to_string();
        let base = session.core().object_prefix("lock", &name);
        let key = |k: &str| [base.as_slice(), k.as_bytes()].concat();
        let (owner, held, poison) = (key("owner"), key("held"), key("poison"));
        Ok(Lock { session: session.clone(), base, owner, held, poison, name })
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The session the lock is held through.
    pub fn session(&self) -> &Session {
        &self.session
    }

    fn core(&self) -> &Core {
        self.session.core()
    }

    fn op(&self, what: &str) -> String {
        format!("{what} of lock '{}'", self.name)
    }

    /// Waits until this process holds the lock. `Ok(Err(PoisonError))`
    /// when a previous holder lost its lease or panicked while holding it;
    /// the error carries the guard. `Err(LeaseLost)` if this session's
    /// lease goes, `Err(EtcdUnreachable)` if etcd stops answering.
    pub fn lock(&self) -> Result<LockResult<Guard<'_>>> {
        loop {
            // Without a deadline, acquire returns only holding the lock.
            if let Some(guard) = self.acquire(None)? {
                return Ok(guard);
            }
        }
    }

    /// Takes the lock if it is free (one round trip).
    /// `Ok(Err(TryLockError::WouldBlock))` if someone holds it.
    pub fn try_lock(&self) -> Result<TryLockResult<Guard<'_>>> {
        self.try_lock_for(Duration::ZERO)
    }

    /// Takes the lock, waiting at most `timeout` (plus at most one request
    /// timeout for the attempt in flight). `Ok(Err(WouldBlock))` means the
    /// time ran out.
    pub fn try_lock_for(&self, timeout: Duration) -> Result<TryLockResult<Guard<'_>>> {
        Ok(match self.acquire(Some(Instant::now() + timeout))? {
            Some(Ok(guard)) => Ok(guard),
            Some(Err(poisoned)) => Err(TryLockError::Poisoned(poisoned)),
            None => Err(TryLockError::WouldBlock),
        })
    }

    /// Whether anyone holds the lock (a snapshot).
    pub fn is_locked(&self) -> Result<bool> {
        let t = wire::txn(vec![], &[Op::Range(wire::count(&self.owner))], &[]);
        Ok(self.core().txn(&t, &self.op("is_locked"))?.range(0, "is_locked")?.count > 0)
    }

    /// Whether the lock is poisoned. Every process, on every host, sees the
    /// same flag.
    pub fn is_poisoned(&self) -> Result<bool> {
        let t = wire::txn(vec![], &[Op::Range(wire::count(&self.poison))], &[]);
        Ok(self.core().txn(&t, &self.op("is_poisoned"))?.range(0, "is_poisoned")?.count > 0)
    }

    /// Clears the poison flag, for everyone.
    pub fn clear_poison(&self) -> Result<()> {
        let t = wire::txn(vec![], &[Op::Delete(wire::delete(&self.poison))], &[]);
        self.core().txn(&t, &self.op("clear_poison")).map(drop)
    }

    /// Tries until it holds the lock or `until` passes (`None`: forever).
    fn acquire(&self, until: Option<Instant>) -> Result<Option<LockResult<Guard<'_>>>> {
        let id = self.core().attempt_id();
        loop {
            let attempt = self.attempt(&id).inspect_err(|e| {
                if matches!(e, Error::EtcdUnreachable { .. }) {
                    self.abandon(&id);
                }
            })?;
            match attempt {
                Attempt::Acquired { token, poisoned } => {
                    crash_point!("etcd.lock.acquired");
                    let guard = Guard { lock: self, token, panicking: std::thread::panicking(), released: false };
                    return Ok(Some(if poisoned { Err(PoisonError::new(guard)) } else { Ok(guard) }));
                }
                Attempt::Busy { revision } => {
                    if until.is_some_and(|u| Instant::now() >= u) {
                        return Ok(None);
                    }
                    wait::await_delete(self.core(), &self.owner, &[], revision, until, &self.op("wait"))?;
                }
            }
        }
    }

    /// One acquisition transaction (see the module docs).
    fn attempt(&self, id: &[u8]) -> Result<Attempt> {
        let core = self.core();
        core.ensure_alive()?;
        let op = self.op("lock");
        let keys = Op::Range(wire::range_keys(&self.base));
        let t = wire::txn(
            vec![compare(&self.owner, "EQUAL", Cmp::Create(0))],
            &[keys, Op::Put(wire::put(&self.owner, id, core.lease)), Op::Put(wire::put(&self.held, id, 0))],
            &[Op::Range(wire::range_under(&self.base))],
        );
        let r = core.txn(&t, &op)?;
        let found = r.range(0, &op)?;
        let has = |key: &[u8]| found.kvs.iter().any(|kv| kv.key == key);
        let (token, vanished) = if r.succeeded {
            (positive(r.header.revision, &op)?, has(&self.held))
        } else {
            match found.kvs.iter().find(|kv| kv.key == self.owner) {
                // Our own earlier try, whose answer was lost, won. What it
                // found is still written down: a `held` older than our
                // `owner` was there before that try.
                Some(kv) if kv.value == id => {
                    let token = positive(kv.create_revision, &op)?;
                    (token, self.held_before(found, token))
                }
                _ => return Ok(Attempt::Busy { revision: r.header.revision }),
            }
        };
        if vanished {
            // Persist what we found, or leave the evidence for the next.
            let put = wire::txn(vec![], &[Op::Put(wire::put(&self.poison, VANISHED, 0))], &[]);
            if let Err(e) = core.txn(&put, &op) {
                self.give_up(token);
                return Err(e);
            }
        }
        Ok(Attempt::Acquired { token, poisoned: vanished || has(&self.poison) })
    }

    /// Whether `found` has a `held` marker made before the acquisition at
    /// `token`: one a vanished holder left, which that acquisition kept.
    fn held_before(&self, found: &wire::RangeResponse, token: i64) -> bool {
        found.kvs.iter().any(|kv| kv.key == self.held && kv.create_revision < token)
    }

    /// After failing to record poison: gives the lock up but leaves `held`
    /// behind, so the next acquirer still finds it poisoned.
    fn give_up(&self, token: i64) {
        let t = wire::txn(
            vec![compare(&self.owner, "EQUAL", Cmp::Create(token))],
            &[Op::Delete(wire::delete(&self.owner))],
            &[],
        );
        let deadline = Instant::now() + super::ABANDON_TIMEOUT;
        let _ = self.core().txn_until(&t, deadline, &self.op("abandon"));
    }

    /// After a failed call: if an attempt with `id` committed after all,
    /// gives the lock up (best effort, see the module docs). `held` goes
    /// too if that attempt made it; one it found stays, so the poison it
    /// would have reported is not lost.
    fn abandon(&self, id: &[u8]) {
        let deadline = Instant::now() + super::ABANDON_TIMEOUT;
        let op = self.op("abandon");
        let look = wire::txn(
            vec![compare(&self.owner, "EQUAL", Cmp::Value(id.to_vec()))],
            &[Op::Range(wire::range_under(&self.base))],
            &[],
        );
        let found = match self.core().txn_until(&look, deadline, &op) {
            Ok(r) if r.succeeded => r,
            Ok(_) => return, // our attempt did not commit
            Err(e) => {
                log::debug!("shmsync: could not clean up an unanswered attempt on etcd lock '{}': {e}", self.name);
                return;
            }
        };
        let Ok(found) = found.range(0, &op) else { return };
        let Some(token) = found.kvs.iter().find(|kv| kv.key == self.owner).map(|kv| kv.create_revision) else {
            return;
        };
        let gone = if self.held_before(found, token) {
            Op::Delete(wire::delete(&self.owner))
        } else {
            Op::Delete(wire::delete_range(&self.held, &[self.base.as_slice(), b"p"].concat()))
        };
        let t = wire::txn(vec![compare(&self.owner, "EQUAL", Cmp::Create(token))], &[gone], &[]);
        let _ = self.core().txn_until(&t, deadline, &op);
    }

    /// The release transaction (see the module docs). `Err(LeaseLost)` if
    /// the lock was no longer this holder's.
    fn release(&self, token: i64, poison: bool) -> Result<()> {
        // [held, "p"): `held` and `owner`, not `poison`.
        let mut ops = vec![Op::Delete(wire::delete_range(&self.held, &[self.base.as_slice(), b"p"].concat()))];
        if poison {
            ops.push(Op::Put(wire::put(&self.poison, PANICKED, 0)));
        }
        let t = wire::txn(vec![compare(&self.owner, "EQUAL", Cmp::Create(token))], &ops, &[]);
        // Not ours any more: either the lease ended (etcd deleted `owner`),
        // or this is a retry whose first try released, answer lost. While
        // the lease lives, etcd keeps its keys, so only the second fits.
        if self.core().txn(&t, &self.op("unlock"))?.succeeded || self.core().alive() {
            Ok(())
        } else {
            Err(Error::LeaseLost { lease: self.core().lease })
        }
    }
}

/// A revision from etcd, which must be positive.
fn positive(revision: i64, op: &str) -> Result<i64> {
    if revision > 0 {
        Ok(revision)
    } else {
        Err(Error::Etcd { op: op.to_string(), detail: format!("etcd answered with revision {revision}") })
    }
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("etcd::Lock").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Holds an etcd [`Lock`] until dropped (or [`unlock`](Self::unlock)ed).
///
/// Dropping it releases the lock, in one round trip; a failure then is
/// logged, and the lock is freed, poisoned, when the lease ends. Dropping it
/// while the thread panics poisons the lock, as std's `MutexGuard` does.
#[must_use = "if unused the lock is released at once"]
pub struct Guard<'a> {
    lock: &'a Lock,
    token: i64,
    panicking: bool,
    released: bool,
}

impl Guard<'_> {
    /// This holder's fencing token: larger than every earlier holder's.
    /// Send it with each write, and have the store refuse a token lower
    /// than the highest it has seen.
    pub fn fencing_token(&self) -> u64 {
        self.token as u64
    }

    /// `Err(LeaseLost)` once this process no longer knows its lease to be
    /// alive (no network call; see [`Session::is_alive`]). Past that point
    /// another process may hold the lock: stop, and do not write.
    pub fn check(&self) -> Result<()> {
        self.lock.core().ensure_alive()
    }

    /// Releases the lock and reports how that went: `Err(LeaseLost)` if
    /// it was no longer ours to release.
    pub fn unlock(mut self) -> Result<()> {
        self.released = true;
        self.lock.release(self.token, !self.panicking && std::thread::panicking())
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Err(e) = self.lock.release(self.token, !self.panicking && std::thread::panicking()) {
            log::warn!("shmsync: releasing etcd lock '{}' failed: {e}", self.lock.name);
        }
    }
}

impl std::fmt::Debug for Guard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("etcd::Guard").field("lock", &self.lock.name).field("token", &self.token).finish()
    }
}
