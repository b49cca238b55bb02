//! `Session`: one etcd lease, kept alive by a background thread.
//!
//! Lease state, as this process knows it:
//!
//! | state   | meaning                                                     | `is_alive()` |
//! |---------|-------------------------------------------------------------|--------------|
//! | alive   | the last renewal sent at `t` got TTL `T` back; `now < t + T` | true         |
//! | expired | no renewal got through before `t + T`                        | false        |
//! | lost    | etcd said the lease is gone, or it expired (sticky)          | false        |
//!
//! `t + T` is a safe bound: etcd started its TTL when it handled the renewal,
//! which is after `t`, so etcd never drops the lease before this process
//! stops calling it alive (clocks run at the same rate; leader changes only
//! extend leases). The clock is `CLOCK_BOOTTIME`, which keeps counting while
//! the machine sleeps, as etcd's does. A session that is lost stays lost:
//! what it held may belong to someone else now, so connect a new one.
//!
//! A cluster electing a new leader answers no renewal until it has one. A
//! session renews every third of its TTL, so it rides out an election only
//! if the election ends within about two thirds of the TTL; otherwise it
//! cannot prove its lease alive and calls it expired. Choose a TTL well
//! above the cluster's election time (etcd's default election timeout is
//! 1 s, and a loaded host can take several).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::{CallError, Client};
use super::wire::{self, LeaseGrantResponse, LeaseKeepAliveResponse, TxnResponse};
use crate::error::{Error, Result};

/// Renewals per TTL: one every third of it, so two may fail before it ends.
const RENEWALS_PER_TTL: u32 = 3;
/// Pause before retrying a renewal that failed.
const RENEWAL_RETRY: Duration = Duration::from_millis(200);
/// The longest a dropped session waits to revoke its lease.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(2);

/// `CLOCK_BOOTTIME` now, as a duration since boot.
fn boot_now() -> Duration {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(t) => Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32),
        // Cannot fail on Linux with a valid clock id; fall back to "expired".
        Err(_) => Duration::MAX,
    }
}

/// What the keepalive thread and the handles share.
struct State {
    /// Boot time at which the lease may be gone.
    expires: Duration,
    /// etcd said the lease is gone, or it expired unrenewed.
    lost: bool,
    /// The last handle dropped: the thread should end.
    stop: bool,
}

/// The lease and its client, shared by the session's handles and its
/// keepalive thread.
pub(crate) struct Core {
    pub(crate) client: Client,
    pub(crate) lease: i64,
    ttl: Duration,
    prefix: String,
    /// Who holds things through this lease: `lease.pid@host`.
    identity: String,
    /// Numbers the attempts of this session, so each has its own id.
    attempts: AtomicU64,
    state: Mutex<State>,
    wake: Condvar,
}

impl Core {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a few plain fields, consistent after any panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the lease is known to be alive.
    pub(crate) fn alive(&self) -> bool {
        let s = self.state();
        !s.lost && boot_now() < s.expires
    }

    /// `Err(LeaseLost)` unless the lease is known to be alive.
    pub(crate) fn ensure_alive(&self) -> Result<()> {
        if self.alive() {
            Ok(())
        } else {
            Err(Error::LeaseLost { lease: self.lease })
        }
    }

    /// A fresh id for one acquisition attempt: unique across the cluster,
    /// since lease ids are.
    pub(crate) fn attempt_id(&self) -> Vec<u8> {
        let n = self.attempts.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.identity).into_bytes()
    }

    /// A number that differs between attempts, for spreading choices.
    pub(crate) fn spread(&self) -> u64 {
        (self.lease as u64).wrapping_add(self.attempts.load(Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// The key prefix of object `name` of `kind` ("lock", "sem").
    pub(crate) fn object_prefix(&self, kind: &str, name: &str) -> Vec<u8> {
        format!("{}{kind}/{name}/", self.prefix).into_bytes()
    }

    /// Runs the transaction `body` with the request timeout. A put with a
    /// lease etcd no longer has fails the whole transaction with NOT_FOUND:
    /// that is [`Error::LeaseLost`], and the session is lost from then on.
    pub(crate) fn txn(&self, body: &Value, op: &str) -> Result<TxnResponse> {
        self.txn_until(body, self.client.deadline(), op)
    }

    /// [`txn`](Self::txn) with its own deadline.
    pub(crate) fn txn_until(&self, body: &Value, deadline: Instant, op: &str) -> Result<TxnResponse> {
        self.client.call_until("/v3/kv/txn", body, deadline).map_err(|e| match e {
            CallError::Refused { code: wire::NOT_FOUND, .. } => {
                self.mark_lost();
                Error::LeaseLost { lease: self.lease }
            }
            e => e.into_error(&self.client, op),
        })
    }

    fn mark_lost(&self) {
        self.state().lost = true;
        self.wake.notify_all();
    }

    /// One renewal; returns when to try the next, or `None` once lost.
    fn renew(&self) -> Option<Duration> {
        let sent = boot_now();
        let left = {
            let s = self.state();
            if s.lost || sent >= s.expires {
                None
            } else {
                Some(s.expires - sent)
            }
        };
        let Some(left) = left else {
            self.mark_lost();
            return None;
        };
        let until = self.client.deadline().min(Instant::now() + left);
        let answer = self.client.stream::<LeaseKeepAliveResponse, i64>(
            "/v3/lease/keepalive",
            &json!({ "ID": self.lease.to_string() }),
            until,
            |r| Some(r.ttl),
        );
        match answer {
            Ok(Some(ttl)) if ttl > 0 => {
                let ttl = Duration::from_secs(ttl as u64);
                self.state().expires = sent + ttl;
                Some(ttl / RENEWALS_PER_TTL)
            }
            // TTL 0 (or NOT_FOUND): etcd has no such lease any more.
            Ok(Some(_)) | Err(CallError::Refused { code: wire::NOT_FOUND, .. }) => {
                self.mark_lost();
                None
            }
            Ok(None) | Err(_) => {
                log::debug!("shmsync: renewing etcd lease {:x} failed; retrying", self.lease);
                Some(RENEWAL_RETRY)
            }
        }
    }

    /// The keepalive thread: renew, then sleep until the next renewal or
    /// until told to stop.
    fn keep_alive(&self) {
        let mut next = self.ttl / RENEWALS_PER_TTL;
        loop {
            {
                let s = self.state();
                let (s, _) =
                    self.wake.wait_timeout_while(s, next, |s| !s.stop && !s.lost).unwrap_or_else(|e| e.into_inner());
                if s.stop || s.lost {
                    return;
                }
            }
            match self.renew() {
                Some(after) => next = after,
                None => {
                    log::warn!("shmsync: etcd lease {:x} is lost; what it held may be someone else's", self.lease);
                    return;
                }
            }
        }
    }
}

/// The session's owner part: when the last handle drops, it stops the
/// keepalive thread and revokes the lease.
pub(crate) struct Owner {
    pub(crate) core: Arc<Core>,
    /// The process that connected; a forked child must not revoke its lease.
    pid: u32,
}

impl Drop for Owner {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            return;
        }
        // The thread is not joined: it may be inside a renewal that takes up
        // to the request timeout; told to stop, it ends after that.
        self.core.state().stop = true;
        self.core.wake.notify_all();
        // Best effort: an unrevoked lease still ends at its TTL.
        let until = Instant::now() + REVOKE_TIMEOUT.min(self.core.ttl).min(self.core.client.request_timeout());
        let body = json!({ "ID": self.core.lease.to_string() });
        if let Err(e) = self.core.client.call_until::<serde_json::Value>("/v3/lease/revoke", &body, until) {
            log::debug!("shmsync: could not revoke etcd lease {:x}: {e:?}", self.core.lease);
        }
    }
}

/// One etcd lease, kept alive by a background thread, through which
/// [`Lock`](super::Lock)s and [`Semaphore`](super::Semaphore)s are held.
///
/// Everything a process holds through the session is tied to the lease: if
/// the process dies, or is cut off or paused for longer than the TTL, etcd
/// drops the lease and with it every lock and permit held through it.
/// [`is_alive`](Self::is_alive) says whether the lease is still known to be
/// alive; once it is not, the session stays dead and every call through it
/// is [`Error::LeaseLost`].
///
/// The handle is cheap to clone; locks and semaphores keep it alive. When
/// the last one drops, the keepalive thread is told to stop and the lease
/// is revoked (waiting at most 2 s), which releases anything still held
/// through it. A Session
/// belongs to the process that connected it: a forked child connects its
/// own (it inherits no keepalive thread, and its drop leaves the parent's
/// lease alone).
///
/// ```no_run
/// use std::time::Duration;
/// use shmsync::etcd::Session;
/// let session = Session::connect(["http://127.0.0.1:2379"], Duration::from_secs(5))?;
/// assert!(session.is_alive());
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone)]
pub struct Session {
    pub(crate) owner: Arc<Owner>,
}

impl Session {
    /// Connects to etcd at `endpoints` (`host:port` or `http://host:port`;
    /// several for a cluster) and grants a lease of `ttl` (whole seconds,
    /// rounded up; etcd may raise it to its minimum, see
    /// [`ttl`](Self::ttl)). Defaults: connect timeout 5 s, request timeout
    /// 5 s; see [`Session::builder`].
    ///
    /// `Err(EtcdUnreachable)` within the connect timeout if no endpoint
    /// answers.
    pub fn connect<I, S>(endpoints: I, ttl: Duration) -> Result<Session>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Session::builder(endpoints).ttl(ttl).connect()
    }

    /// A builder, for timeouts and the key prefix.
    pub fn builder<I, S>(endpoints: I) -> SessionBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        SessionBuilder {
            endpoints: endpoints.into_iter().map(|s| s.as_ref().to_string()).collect(),
            ttl: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            prefix: "shmsync/".into(),
        }
    }

    /// Whether the lease is known to be alive: renewed within its TTL, and
    /// never reported gone.
    pub fn is_alive(&self) -> bool {
        self.owner.core.alive()
    }

    /// The lease id.
    pub fn lease_id(&self) -> i64 {
        self.owner.core.lease
    }

    /// The TTL etcd granted.
    pub fn ttl(&self) -> Duration {
        self.owner.core.ttl
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.owner.core
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("endpoints", &self.owner.core.client.endpoints())
            .field("lease", &format_args!("{:x}", self.owner.core.lease))
            .field("ttl", &self.owner.core.ttl)
            .field("alive", &self.is_alive())
            .finish()
    }
}

/// Options for [`Session`]; made by [`Session::builder`].
#[derive(Clone, Debug)]
#[must_use = "call connect() to make the session"]
pub struct SessionBuilder {
    endpoints: Vec<String>,
    ttl: Duration,
    connect_timeout: Duration,
    request_timeout: Duration,
    prefix: String,
}

impl SessionBuilder {
    /// The lease TTL (default 10 s): how long after this process dies, or is
    /// cut off, the others can take what it held.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long `connect` (and any TCP connect) may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one call may take, retries and failover between endpoints
    /// included (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The prefix of every key the session's objects use (default
    /// `shmsync/`): programs that share objects must use the same one.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Grants the lease and starts the keepalive thread.
    pub fn connect(self) -> Result<Session> {
        let invalid = |detail: String| Error::InvalidArgument { name: "etcd session".into(), detail };
        let secs = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        if secs == 0 || secs > 86_400 {
            return Err(invalid(format!("the TTL must be 1 s to 1 day, not {:?}", self.ttl)));
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(invalid("timeouts must be longer than zero".into()));
        }
        let client = Client::new(&self.endpoints, self.connect_timeout, self.request_timeout)?;
        let sent = boot_now();
        let deadline = Instant::now() + self.connect_timeout;
        let grant: LeaseGrantResponse = client
            .call_until("/v3/lease/grant", &json!({ "TTL": secs.to_string() }), deadline)
            .map_err(|e| e.into_error(&client, "lease grant"))?;
        if !grant.error.is_empty() || grant.id == 0 || grant.ttl <= 0 {
            return Err(Error::Etcd {
                op: "lease grant".into(),
                detail: format!("etcd granted lease {} with TTL {} ({:?})", grant.id, grant.ttl, grant.error),
            });
        }
        let ttl = Duration::from_secs(grant.ttl as u64);
        let pid = std::process::id();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let core = Arc::new(Core {
            client,
            lease: grant.id,
            ttl,
            prefix: self.prefix,
            identity: format!("{:x}.{pid}@{}", grant.id, host.trim()),
            attempts: AtomicU64::new(0),
            state: Mutex::new(State { expires: sent + ttl, lost: false, stop: false }),
            wake: Condvar::new(),
        });
        let keeper = Arc::clone(&core);
        // Detached; it ends when told to stop (see Owner's drop) or when the
        // lease is lost.
        std::thread::Builder::new()
            .name("shmsync-etcd-keepalive".into())
            .spawn(move || keeper.keep_alive())
            .map_err(|e| Error::os("spawn the etcd keepalive thread", "etcd session", e))?;
        Ok(Session { owner: Arc::new(Owner { core, pid }) })
    }
}
