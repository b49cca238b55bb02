//! What shmsync's `RwLock` costs, side by side with a process-shared glibc
//! `pthread_rwlock_t`, raw_sync's `RwLock` (the same pthread rwlock behind a
//! trait object) and, for writes, shmsync's `Lock`. None of the others
//! survives the death of a holder.
//!
//! Run: `cargo bench --bench rwlock` (about a minute). One group only:
//! `cargo bench --bench rwlock -- read_scaling`.
//!
//! Groups:
//! - `uncontended_read`: one thread takes and releases a read lock.
//! - `uncontended_write`: one thread takes and releases the write lock.
//! - `read_scaling`: K forked processes (each pinned to its own CPU when
//!   the machine has K) take N read pairs each; the timed span runs from
//!   the start flag to the last child reaped. Throughput is read pairs per
//!   second, all processes together.
//! - `writes_vs_4_readers`: a writer's lock+unlock while four processes read
//!   in a loop (shmsync only: glibc's default rwlock prefers readers, and a
//!   writer there may wait forever).
//!
//! Reading the numbers (the bars):
//! - `uncontended_read`: `shmsync RwLock / pthread_rwlock_t` at most 1.5;
//! - `uncontended_write`: `shmsync RwLock / shmsync Lock` at most 1.3;
//! - `read_scaling`: throughput at 2 procs over 1 proc, at least 1.6 for
//!   shmsync (a reader writes only its own slot's cache line); the pthread
//!   rwlock's shared reader count bounces between the cores instead. The
//!   floor row (`private atomic pair`, nothing shared) is what this machine
//!   allows at all: compare shmsync's scaling with the floor's.

#![warn(clippy::undocumented_unsafe_blocks)]

mod common;

use common::rwlock::{readers, uncontended, writes_against_readers, Instance, Mech, Side};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};

fn instance(mech: Mech) -> Instance {
    Instance::new(mech).unwrap_or_else(|e| panic!("{}: {e}", mech.name()))
}

fn uncontended_group(c: &mut Criterion, group: &str, side: Side, mechs: &[Mech]) {
    let mut g = c.benchmark_group(group);
    for &mech in mechs {
        g.bench_function(mech.name(), |b| {
            let inst = instance(mech);
            b.iter_custom(|iters| uncontended(&inst, side, iters / 10, iters).unwrap_or_else(|e| panic!("{e}")));
        });
    }
    g.finish();
}

fn uncontended_benches(c: &mut Criterion) {
    uncontended_group(c, "uncontended_read", Side::Read, &Mech::READERS);
    uncontended_group(c, "uncontended_write", Side::Write, &Mech::WRITERS);
}

fn scaling_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_scaling");
    // Each sample forks; flat sampling keeps the number of forks small.
    g.sampling_mode(SamplingMode::Flat);
    for mech in Mech::READERS {
        for procs in [1usize, 2] {
            g.throughput(Throughput::Elements(procs as u64));
            g.bench_with_input(BenchmarkId::new(mech.name(), format!("{procs}proc")), &procs, |b, &procs| {
                let inst = instance(mech);
                b.iter_custom(|iters| readers(&inst, procs, iters).unwrap_or_else(|e| panic!("{e}")));
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("writes_vs_4_readers");
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function(Mech::Shmsync.name(), |b| {
        let inst = instance(Mech::Shmsync);
        b.iter_custom(|iters| writes_against_readers(&inst, 4, iters).unwrap_or_else(|e| panic!("{e}")));
    });
    g.finish();
}

criterion_group! {
    name = uncontended_benches_group;
    config = common::in_process_config();
    targets = uncontended_benches
}

criterion_group! {
    name = contended_benches_group;
    config = common::forking_config();
    targets = scaling_benches
}

criterion_main!(uncontended_benches_group, contended_benches_group);
