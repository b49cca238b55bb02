//! How many messages per second one process can stream to another through
//! shmsync's `Queue` (a ring in shared memory) and `Connection` (framed
//! messages over a socket pair), side by side with a tuned pipe (the
//! strongest kernel baseline), the same frames over a plain pipe and a raw
//! Unix socket, and the `ipc-channel` crate; and the `Queue` with 3
//! producers and 3 consumers against 1 and 1.
//!
//! Run: `cargo bench --bench queue` (about a minute). One size only:
//! `cargo bench --bench queue -- queue_rate/64B`; one mechanism:
//! `cargo bench --bench queue -- tuned_pipe`.
//!
//! Groups: `queue_rate/64B` and `queue_rate/4KiB`, the payload size of every
//! message, and `queue_mpmc/64B`. One criterion iteration is one message,
//! and the throughput is one element per iteration, so criterion's `thrpt`
//! line is messages per second (all producers together in `queue_mpmc`).
//! Mechanisms (`benches/common/messages.rs` has the code; the ipc_cost
//! study runs the same ones):
//! - `shmsync_Queue_Vec_u8`: `shmsync::Queue::<Vec<u8>>` (serde's generic
//!   sequence: postcard writes the bytes one element at a time) with a
//!   256 KiB ring; `put` a `Vec<u8>`, `get` one back.
//! - `shmsync_Queue_ByteBuf`: `shmsync::Queue::<serde_bytes::ByteBuf>`, same
//!   ring (postcard writes one length and the bytes).
//! - `shmsync_Connection`: one end of `shmsync::pipe()` sends with
//!   `send_bytes`, the other receives with `recv_bytes`.
//! - `tuned_pipe`: a `pipe2(O_NONBLOCK)` with a 256 KiB buffer
//!   (`F_SETPIPE_SZ`, as large as the queue's ring) carrying 8-byte
//!   little-endian length-prefixed frames. The producer sends each frame with
//!   one non-blocking `writev(2)` of header and payload and `poll`s on
//!   `EAGAIN`; the consumer makes one `read(2)` of whatever has arrived into
//!   a 64 KiB buffer (often many frames at once), `poll`s on `EAGAIN`, and
//!   hands the frames out from the buffer. The strongest kernel baseline:
//!   one system call per message on the sending side, fewer on the
//!   receiving side.
//! - `os_pipe_framed`: a raw blocking `pipe2` (default 64 KiB buffer) with
//!   the same frames, each written with one `writev(2)` and read with two
//!   exact `read(2)` loops (header, then payload): an unbuffered reader, two
//!   reads per message, as Python's `Connection.recv_bytes` does.
//! - `unix_socket_framed`: the same frames and loops over a raw
//!   `socketpair(AF_UNIX, SOCK_STREAM)`, written with `sendmsg(2)`
//!   (`MSG_NOSIGNAL`, two buffers, as `Connection` sends) and read with
//!   `recv(2)`: the blocking style of Python's `Connection`.
//! - `ipc_channel`: ipc-channel 0.23's `IpcBytesSender`/`IpcBytesReceiver`
//!   from `ipc::bytes_channel()`, its path for raw bytes that skips serde
//!   (one `SOCK_SEQPACKET` datagram per message). The channel is made before
//!   the fork and both children use the inherited descriptors. ipc-channel's
//!   own fork example instead bootstraps through an `IpcOneShotServer`, but
//!   its Unix channel is just a socket pair with no per-process state, and
//!   the checks below confirm every message arrives whole and in order.
//! - In `queue_mpmc/64B`: `shmsync_Queue_ByteBuf_1p1c` and `_3p3c`, one
//!   queue with 1 producer and 1 consumer, or 3 and 3, through the same
//!   harness: the aggregate rate.
//!
//! Each sample forks the consumers and producers, all unpinned. Each
//! producer sends one untimed message, which a consumer takes: all are then
//! up, past their first faults and allocations. The bench process then
//! stamps the clock and raises a start flag; the producers send their
//! messages as fast as they can, then an end marker each, and each consumer
//! stamps the clock at its end marker. The time runs from the start flag to
//! the last consumer's end, so it covers the whole stream, queueing
//! included, and nothing before it.
//!
//! Every message is checked on arrival: its length is exact, and it carries
//! its producer, its sequence number and a check byte; each consumer checks
//! the order per producer, and the bench checks that the consumers took
//! every message exactly once (count, sum and XOR per producer) and that the
//! channel is empty afterwards. A failed check panics the consumer, whose
//! non-zero exit panics the bench, naming the mechanism and size. Nothing
//! waits without a bound: each child dies by `SIGALRM` after 60 s and by
//! `SIGKILL` if the bench dies, and the bench reaps them with a bounded
//! pidfd poll.
//!
//! A last group, `pool_map_overhead`, times `Pool::map` of 2,000 items of
//! a trivial function on 2 workers (chunks of 1 and of 64) against the same
//! loop in one process; its `thrpt` is items per second, so the per-item
//! difference is what a pool costs per item.
//!
//! Reading the numbers: compare each mechanism's `thrpt` within a size,
//! against `tuned_pipe`. The Queue's targets (issue 14): at 64 B,
//! `shmsync_Queue_Vec_u8` at least 3x `tuned_pipe`; at 4 KiB, the Queue at
//! least 1.5x `tuned_pipe`; in `queue_mpmc/64B`, `_3p3c` no lower than
//! `_1p1c`. Small messages are where a shared-memory ring should win, since
//! a pipe pays at least one system call per message while the ring should
//! need none unless a side has to sleep; at 4 KiB copying starts to
//! dominate. `unix_socket_framed` and `shmsync_Connection` show what the
//! socket pair under `Connection` costs raw and with its framing;
//! `ipc_channel` is what the obvious crate costs.
//!
//! At 4 KiB the numbers depend on user-space copies, and so on the CPU and
//! the heap layout: on some AMD Zen 3 machines glibc's `rep movsb` copy is
//! some 25x slower when the destination sits 1 to 15 bytes past the source
//! modulo 4096, which a buffer allocated right after another can hit on
//! every message. To tell that apart from the mechanism, rerun with
//! `GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=1000000000`.

#![warn(clippy::undocumented_unsafe_blocks)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::messages::{stream, Kind, Limits, Mechanism, Shared, StreamSpec};
use common::{Mapping, DEADLINE};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

/// How long after [`DEADLINE`] the bench waits for a child before killing it.
const REAP_GRACE: Duration = Duration::from_secs(10);

/// The payload sizes: the group suffix and the bytes per message.
const SIZES: [(&str, usize); 2] = [("64B", 64), ("4KiB", 4096)];

/// The mechanisms and their function names.
const MECHANISMS: [(Kind, &str); 8] = [
    (Kind::QueueVec, "shmsync_Queue_Vec_u8"),
    (Kind::QueueZeroCopy, "shmsync_Queue_put_with_get_with"),
    (Kind::QueueByteBuf, "shmsync_Queue_ByteBuf"),
    (Kind::Connection, "shmsync_Connection"),
    (Kind::TunedPipe, "tuned_pipe"),
    (Kind::PipeFramed, "os_pipe_framed"),
    (Kind::SocketFramed, "unix_socket_framed"),
    (Kind::IpcChannel, "ipc_channel"),
];

/// One `iter_custom` sample of [`stream`]: fork `producers` producers and as
/// many consumers, stream one untimed message each and then `iters` timed
/// ones of `size` bytes in all (rounded up to a multiple of `producers`),
/// and return the time from the start flag to the last consumer's end,
/// scaled to `iters` messages. Any failed check panics, naming the mechanism
/// and size.
fn rate_sample(name: &str, m: &dyn Mechanism, shared: &Shared, size: usize, producers: usize, iters: u64) -> Duration {
    let what = format!("{name} with {iters} messages of {size} bytes");
    let limits = Limits { deadline: DEADLINE, grace: REAP_GRACE };
    let spec = StreamSpec { size, producers, per_producer: iters.div_ceil(producers as u64).max(1) };
    let out = stream(m, shared, spec, &limits, &format!("{what}: ")).unwrap_or_else(|e| panic!("{what}: {e}"));
    out.span.mul_f64(iters as f64 / spec.messages() as f64)
}

/// Criterion's settings for a group of forking samples.
fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    // Each sample forks; flat sampling keeps the number of forks small.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
}

fn queue_rate(c: &mut Criterion) {
    let map = Mapping::<Shared>::new();
    let shared = map.shared();
    for (label, size) in SIZES {
        // Everything is made before any fork, so the children inherit it. A
        // queue unlinks its segment when its handle drops, here in the
        // process that created it; children `_exit` and drop nothing.
        let mechanisms: Vec<_> = MECHANISMS.into_iter().map(|(kind, name)| (name, kind.make(size))).collect();
        let mut group = c.benchmark_group(format!("queue_rate/{label}"));
        configure(&mut group);
        for (name, m) in &mechanisms {
            let m = &**m;
            group.bench_function(*name, |b| {
                b.iter_custom(|iters| rate_sample(name, m, shared, size, 1, iters));
            });
        }
        group.finish();
    }
}

/// One queue, 1 producer and 1 consumer or 3 and 3: the aggregate rate.
fn queue_mpmc(c: &mut Criterion) {
    const SIZE: usize = 64;
    let map = Mapping::<Shared>::new();
    let shared = map.shared();
    let queue = Kind::QueueByteBuf.make(SIZE);
    let mut group = c.benchmark_group("queue_mpmc/64B");
    configure(&mut group);
    for producers in [1, 3] {
        let name = format!("shmsync_Queue_ByteBuf_{producers}p{producers}c");
        let m = &*queue;
        group.bench_function(&name, |b| {
            b.iter_custom(|iters| rate_sample(&name, m, shared, SIZE, producers, iters));
        });
    }
    group.finish();
}

/// The trivial task for the pool overhead group.
fn double(x: u64) -> u64 {
    x.wrapping_mul(2)
}

/// What `Pool::map` adds per item over a plain loop, for a function that
/// does almost nothing: the price of shipping an item to a worker and its
/// result back. A pool pays off once each item's work costs clearly more
/// than this.
fn pool_map_overhead(c: &mut Criterion) {
    const ITEMS: u64 = 2_000;
    let mut group = c.benchmark_group("pool_map_overhead");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group
        .bench_function("loop_in_process", |b| b.iter(|| (0..ITEMS).map(|x| double(black_box(x))).collect::<Vec<_>>()));
    // Workers are forked once, outside the timing, as a long-lived pool is.
    let pool = shmsync::Pool::new(2).expect("pool");
    for chunk in [1usize, 64] {
        group.bench_function(format!("Pool_map_2_workers_chunk_{chunk}"), |b| {
            b.iter(|| {
                let out = pool.map_chunked(double, 0..ITEMS, chunk).expect("map");
                assert_eq!(out.len() as u64, ITEMS);
                out
            })
        });
    }
    group.finish();
    pool.close();
    pool.join().expect("join the pool");
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = queue_rate, queue_mpmc, pool_map_overhead
}

criterion_main!(benches);
