//! What the etcd Lock costs, against one etcd put from the same client and
//! against the local Lock, in the same run.
//!
//! Run: `cargo bench --features etcd --bench etcd` (about 30 s). It starts
//! a 1-member etcd on loopback (Debian's `etcd-server`, found on PATH) in a
//! temporary directory and stops it at the end. Without
//! `etcd`, or without the feature, it says so and measures nothing.
//!
//! Functions, all uncontended, one process:
//! - `etcd_put`: one `/v3/kv/put` through the session's client (one round
//!   trip, one raft commit): the unit.
//! - `etcd_Lock_lock_unlock`: `drop(lock.lock())`: one transaction to take
//!   the lock, one to release it. The goal is at most 3x `etcd_put`.
//! - `local_Lock_lock_unlock`: `shmsync::Lock`, for scale.

#[cfg(not(feature = "etcd"))]
fn main() {
    eprintln!("etcd bench: not built; run `cargo bench --features etcd --bench etcd`");
}

#[cfg(feature = "etcd")]
#[path = "../tests/etcd_support/mod.rs"]
mod etcd_support;

#[cfg(feature = "etcd")]
fn main() {
    use std::time::Duration;

    use criterion::{Criterion, SamplingMode};
    use shmsync::etcd::{self, Lock, Session};

    if etcd_support::etcd_binary().is_none() {
        eprintln!("etcd bench: NOT RUN: `etcd` is not on PATH (apt-get install etcd-server)");
        return;
    }
    let cluster = etcd_support::Cluster::start(1);
    let session = Session::connect(cluster.endpoints(), Duration::from_secs(10)).expect("connect to etcd");
    let lock = Lock::open(&session, "bench").expect("open the etcd lock");
    let local = shmsync::Lock::new().expect("make a local lock");

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let mut group = c.benchmark_group("uncontended");
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("etcd_put", |b| {
        b.iter(|| etcd::__private::put(&session, b"bench/put", b"value").expect("put"))
    });
    group.bench_function("etcd_Lock_lock_unlock", |b| {
        b.iter(|| drop(lock.lock().expect("etcd lock").expect("not poisoned")))
    });
    group.bench_function("local_Lock_lock_unlock", |b| b.iter(|| drop(local.lock().expect("not poisoned"))));
    group.finish();
    c.final_summary();
    drop(lock);
    drop(session);
    drop(cluster);
}
