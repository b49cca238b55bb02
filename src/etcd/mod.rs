//! Across hosts: the same [`Lock`] and [`Semaphore`] surface, on etcd
//! (the `etcd` feature).
//!
//! Shared memory ends at the host. When workers spread over machines, this
//! module gives them the crate's guarantees on an etcd cluster: one holder
//! at a time, and a holder that crashes cannot wedge the rest.
//!
//! - [`Session`]: one etcd lease, kept alive by a background thread. A
//!   process's locks and permits are held through its lease, so when the
//!   process dies, or is cut off or paused for longer than the TTL, etcd
//!   drops the lease and with it everything held: the crash rule across
//!   hosts. The lease TTL is the bound on how long a dead holder keeps the
//!   others waiting (the local objects' bound is a futex wake; a network
//!   cannot tell a dead process from a slow one any faster).
//! - [`Lock`]: [`lock`](Lock::lock), [`try_lock`](Lock::try_lock),
//!   [`try_lock_for`](Lock::try_lock_for); **poison** when a holder's lease
//!   expired while it held the lock, [`clear_poison`](Lock::clear_poison);
//!   **fencing** tokens ([`Guard::fencing_token`]) that increase strictly
//!   from holder to holder; **loss** ([`Guard::check`] is
//!   `Err(Error::LeaseLost)` once the lease is gone).
//! - [`Semaphore`]: at most `permits` holders across hosts; a holder whose
//!   lease expires gives its permit back (unlike the local one, where a
//!   killed holder's unit is lost, as in Python: see [`Semaphore`]).
//! - [`LockLike`](crate::LockLike) and [`SemaphoreLike`](crate::SemaphoreLike):
//!   one trait for the local and the etcd lock, one for both semaphores, so
//!   a program picks one host or many by configuration
//!   (`examples/etcd_lock.rs` does).
//!
//! Every call can fail for network reasons, so where the local lock returns
//! `LockResult<Guard>`, the etcd lock returns `Result<LockResult<Guard>>`:
//! `lock()?.unwrap_or_else(PoisonError::into_inner)` reads as the local
//! code does. Every network call has a deadline (the session's request
//! timeout, 5 s by default, across retries and endpoints), an unreachable
//! cluster is [`Error::EtcdUnreachable`](crate::Error::EtcdUnreachable)
//! within it, and every wait re-checks at least once a second.
//!
//! ## Why etcd's JSON gateway over a blocking HTTP client
//!
//! etcd 3.4 serves its whole v3 API as JSON on the client port (`/v3/...`,
//! the gRPC gateway, on by default): `lease/grant`, `lease/keepalive`,
//! `lease/revoke`, `kv/range`, `kv/put`, `kv/txn` (with nested
//! transactions), `kv/deleterange` and the `watch` stream, answered as
//! newline-delimited JSON as events happen. That is all this module needs,
//! and HTTP/1.1 keep-alive makes a call one round trip. So the client is
//! [ureq](https://docs.rs/ureq) (blocking, no TLS, no async runtime; each
//! call runs on the caller's thread) plus serde_json and base64:
//!
//! - `cargo build --features etcd` needs only a Rust toolchain: no
//!   `protoc`, no build script, no C code.
//! - Nothing starts a runtime behind the user's back; the only thread is
//!   the session's keepalive thread.
//! - A gRPC client (tonic and prost) would bring an async runtime, a
//!   protobuf build step and several times the dependencies, for a gain
//!   (multiplexing many calls on one connection) that a lock does not need.
//!
//! What etcd's own lock service (`/v3/lock/lock`) lacks, and why the lock
//! is built on transactions instead: it has no try-lock (it blocks until it
//! wins), and nothing records that a holder vanished, so it cannot poison.
//! The recipes are in `lock.rs` and `semaphore.rs`, the state tables at the
//! top of each.
//!
//! ## Limits
//! - Plain HTTP only: no TLS and no etcd authentication yet. Reach etcd on
//!   a trusted network or through a local TLS tunnel.
//! - The `etcd` feature needs Rust 1.85 (ureq 3).
//! - A [`Session`] belongs to the process that connected it; a forked child
//!   connects its own.

mod client;
mod lock;
mod semaphore;
mod session;
mod wait;
mod wire;

pub use lock::{Guard, Lock};
pub use semaphore::{Permit, Semaphore, MAX_PERMITS};
pub use session::{Session, SessionBuilder};

use crate::error::Result;
use wire::Op;

/// How long the clean-up after an unanswered acquisition may take: short,
/// since etcd just failed to answer, and the lease ends it anyway.
const ABANDON_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Removes every key of the etcd objects called `name` (its lock and its
/// semaphore) under `session`'s prefix: a lock's poison flag, a
/// semaphore's permit count. Like [`crate::unlink`], use it only when
/// nobody uses the object: a holder's lock or permit is released under it.
pub fn unlink(session: &Session, name: &str) -> Result<()> {
    let name = crate::segment::name::validate(name)?;
    let core = session.core();
    let ops: Vec<Op> =
        ["lock", "sem"].iter().map(|kind| Op::Delete(wire::delete_prefix(&core.object_prefix(kind, name)))).collect();
    core.txn(&wire::txn(vec![], &ops, &[]), &format!("unlink of '{name}'")).map(drop)
}

/// Support for this crate's own tests and benches; not a stable API.
#[doc(hidden)]
pub mod __private {
    use serde_json::{json, Value};

    use super::wire::{self, compare, Cmp, Op};
    use super::Session;
    use crate::error::Result;

    /// The value and mod revision of `key` (0 if absent).
    pub fn get(session: &Session, key: &[u8]) -> Result<(Option<Vec<u8>>, i64)> {
        let r = session.core().txn(&wire::txn(vec![], &[Op::Range(wire::range(key))], &[]), "get")?;
        let kv = r.range(0, "get")?.kvs.first();
        Ok((kv.map(|kv| kv.value.clone()), kv.map_or(0, |kv| kv.mod_revision)))
    }

    /// Puts `key` = `value` with one plain `/v3/kv/put` call; returns the
    /// revision it made.
    pub fn put(session: &Session, key: &[u8], value: &[u8]) -> Result<i64> {
        let r: Value = session.core().client.call("/v3/kv/put", &wire::put(key, value, 0), "put")?;
        Ok(r["header"]["revision"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0))
    }

    /// Puts `key` = `value` if `key`'s mod revision is still `revision`
    /// (0: absent); whether it did.
    pub fn put_if_unchanged(session: &Session, key: &[u8], value: &[u8], revision: i64) -> Result<bool> {
        let t = wire::txn(vec![compare(key, "EQUAL", Cmp::Mod(revision))], &[Op::Put(wire::put(key, value, 0))], &[]);
        Ok(session.core().txn(&t, "put_if_unchanged")?.succeeded)
    }

    /// The raw JSON answer of `/v3/maintenance/status` from the endpoint
    /// the session uses.
    pub fn status(session: &Session) -> Result<Value> {
        session.core().client.call("/v3/maintenance/status", &json!({}), "status")
    }
}
