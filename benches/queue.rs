//! How many messages per second one process can stream to another through
//! shmsync's `Queue` (a ring in shared memory) and `Connection` (framed
//! messages over a socket pair), side by side with the same frames over a
//! raw pipe and a raw Unix socket, and with the `ipc-channel` crate.
//!
//! Run: `cargo bench --bench queue` (about half a minute). One size only:
//! `cargo bench --bench queue -- queue_rate/64B`; one mechanism:
//! `cargo bench --bench queue -- shmsync_Queue`.
//!
//! Groups: `queue_rate/64B` and `queue_rate/4KiB`, the payload size of every
//! message. One criterion iteration is one message, and the throughput is one
//! element per iteration, so criterion's `thrpt` line is messages per second.
//! Mechanisms:
//! - `shmsync_Queue`: `shmsync::Queue::<serde_bytes::ByteBuf>` with a 256 KiB
//!   ring; `put` a `ByteBuf`, `get` one back (postcard encodes it as one byte
//!   string: a varint length and the bytes).
//! - `shmsync_Connection`: one end of `shmsync::pipe()` sends with
//!   `send_bytes`, the other receives with `recv_bytes`.
//! - `os_pipe_framed`: a raw `pipe2` (default 64 KiB pipe buffer) carrying
//!   the frames `Connection` uses, an 8-byte little-endian length and the
//!   payload. The producer writes each frame with one `writev(2)` of the
//!   header and the payload (looped on short writes; no user-space copy);
//!   the consumer reads exactly the 8-byte header, then exactly the payload,
//!   each with a `read(2)` loop: an unbuffered reader, two reads per message,
//!   as Python's `Connection.recv_bytes` does.
//! - `unix_socket_framed`: the same frames and loops over a raw
//!   `socketpair(AF_UNIX, SOCK_STREAM)`, written with `sendmsg(2)`
//!   (`MSG_NOSIGNAL`, two buffers, as `Connection` sends) and read with
//!   `recv(2)`.
//! - `ipc_channel`: ipc-channel 0.23's `IpcBytesSender`/`IpcBytesReceiver`
//!   from `ipc::bytes_channel()`, its path for raw bytes that skips serde
//!   (one `SOCK_SEQPACKET` datagram per message). The channel is made before
//!   the fork and both children use the inherited descriptors. ipc-channel's
//!   own fork example instead bootstraps through an `IpcOneShotServer`, but
//!   its Unix channel is just a socket pair with no per-process state, and
//!   the checks below confirm every message arrives whole and in order.
//!
//! Each sample forks a *producer* and a *consumer*, both unpinned. The
//! producer sends one untimed message (sequence 0), which the consumer takes:
//! both are then up, past their first faults and allocations. The consumer
//! then reads the clock and raises a start flag in shared memory; the
//! producer, spinning on that flag, sends `iters` more messages as fast as
//! it can, and the consumer stops the clock at the last one and hands the
//! span back through shared memory. So the time covers the whole stream,
//! queueing included, and nothing before it.
//!
//! Every message is checked on arrival: its length is exact, and its first
//! and last bytes are its sequence number (as a `u8`). The consumer reports
//! how many it got, and the bench asserts that is every message sent and
//! that the channel is empty afterwards. A failed check panics the consumer,
//! whose non-zero exit panics the bench, naming the mechanism and size.
//! Nothing waits without a bound: each child dies by `SIGALRM` after 60 s
//! and by `SIGKILL` if the bench dies, and the bench reaps both with a
//! bounded pidfd poll.
//!
//! A second group, `pool_map_overhead`, times `Pool::map` of 2,000 items of
//! a trivial function on 2 workers (chunks of 1 and of 64) against the same
//! loop in one process; its `thrpt` is items per second, so the per-item
//! difference is what a pool costs per item.
//!
//! Reading the numbers: compare each mechanism's `thrpt` within a size. The
//! target is that at 64 B `shmsync_Queue` moves at least 2x the messages per
//! second of `os_pipe_framed`: small messages are where a shared-memory ring
//! should win, since a pipe pays at least one system call per message on
//! each side while the ring should need none unless a side has to sleep.
//! At 4 KiB copying starts to dominate and the gap should narrow.
//! `unix_socket_framed` and `shmsync_Connection` show what the socket pair
//! under `Connection` costs raw and with its framing; `ipc_channel` is what
//! the obvious crate costs.
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

use common::messages::{stream, Kind, Limits, Mechanism, Shared};
use common::{Mapping, DEADLINE};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

/// How long after [`DEADLINE`] the bench waits for a child before killing it.
const REAP_GRACE: Duration = Duration::from_secs(10);

/// The payload sizes: the group suffix and the bytes per message.
const SIZES: [(&str, usize); 2] = [("64B", 64), ("4KiB", 4096)];

/// The mechanisms and their function names.
const MECHANISMS: [(Kind, &str); 5] = [
    (Kind::Queue, "shmsync_Queue"),
    (Kind::Connection, "shmsync_Connection"),
    (Kind::PipeFramed, "os_pipe_framed"),
    (Kind::SocketFramed, "unix_socket_framed"),
    (Kind::IpcChannel, "ipc_channel"),
];

/// One `iter_custom` sample of [`stream`]: fork a consumer and a producer,
/// stream one untimed message and then `iters` timed ones of `size` bytes,
/// and return the consumer's time from the start flag to the last message.
/// Any failed check panics, naming the mechanism and size.
fn rate_sample(name: &str, m: &dyn Mechanism, shared: &Shared, size: usize, iters: u64) -> Duration {
    let what = format!("{name} with {iters} messages of {size} bytes");
    let limits = Limits { deadline: DEADLINE, grace: REAP_GRACE };
    stream(m, shared, size, iters, &limits, &format!("{what}: ")).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn queue_rate(c: &mut Criterion) {
    let map = Mapping::<Shared>::new();
    let shared = map.shared();
    // Everything is made before any fork, so the children inherit it. The
    // queue unlinks its segment when this handle drops, here in the process
    // that created it; children `_exit` and drop nothing.
    let mechanisms: Vec<_> = MECHANISMS.into_iter().map(|(kind, name)| (name, kind.make())).collect();

    for (label, size) in SIZES {
        let mut group = c.benchmark_group(format!("queue_rate/{label}"));
        // Each sample forks twice; flat sampling keeps the number of forks
        // small.
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        group.throughput(Throughput::Elements(1));
        for (name, m) in &mechanisms {
            let m = &**m;
            group.bench_function(*name, |b| {
                b.iter_custom(|iters| rate_sample(name, m, shared, size, iters));
            });
        }
        group.finish();
    }
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
    targets = queue_rate, pool_map_overhead
}

criterion_main!(benches);
