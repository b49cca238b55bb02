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

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{exited_cleanly, reap_all, Child, Line, Mapping, ZeroValid, DEADLINE};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender};
use ipc_channel::TryRecvError;
use serde_bytes::ByteBuf;
use std::hint::black_box;

/// How long after [`DEADLINE`] the bench waits for a child before killing it.
const REAP_GRACE: Duration = Duration::from_secs(10);

/// The `Queue`'s ring, in bytes.
const QUEUE_CAPACITY: usize = 256 << 10;

/// The payload sizes: the group suffix and the bytes per message.
const SIZES: [(&str, usize); 2] = [("64B", 64), ("4KiB", 4096)];

/// The length prefix of a frame.
const HEADER: usize = 8;

/// What the two processes of a sample share, in one anonymous `MAP_SHARED`
/// mapping.
#[repr(C)]
struct Shared {
    /// 0 until the consumer has started its clock, then 1.
    start: Line<AtomicU32>,
    /// The consumer's timed span in nanoseconds; `u64::MAX` until written.
    elapsed_ns: Line<AtomicU64>,
    /// Messages the consumer took and checked, the untimed one included.
    received: Line<AtomicU64>,
}

// SAFETY: every field is an atomic integer, for which all-zero bytes are a
// valid value.
unsafe impl ZeroValid for Shared {}

/// One way of streaming messages from one process to another. `send` runs
/// only in the producer, `recv` only in the consumer, each in its own forked
/// copy of the object.
trait Mechanism {
    fn name(&self) -> &'static str;
    /// Sends `msg` as one message.
    fn send(&self, msg: &ByteBuf);
    /// Receives the next message into `out` (replacing what it held).
    fn recv(&self, out: &mut Vec<u8>);
    /// Whether no message is left in the channel; called between samples,
    /// when no child is alive.
    fn is_drained(&self) -> bool;
}

struct ShmQueue(shmsync::Queue<ByteBuf>);

impl Mechanism for ShmQueue {
    fn name(&self) -> &'static str {
        "shmsync_Queue"
    }
    fn send(&self, msg: &ByteBuf) {
        self.0.put(msg).expect("Queue::put");
    }
    fn recv(&self, out: &mut Vec<u8>) {
        *out = self.0.get().expect("Queue::get").into_vec();
    }
    fn is_drained(&self) -> bool {
        self.0.is_empty()
    }
}

/// Both ends of a `shmsync::pipe()`: the producer sends on `tx`, the consumer
/// receives on `rx`.
struct ShmConnection {
    tx: shmsync::Connection,
    rx: shmsync::Connection,
}

impl Mechanism for ShmConnection {
    fn name(&self) -> &'static str {
        "shmsync_Connection"
    }
    fn send(&self, msg: &ByteBuf) {
        self.tx.send_bytes(msg).expect("Connection::send_bytes");
    }
    fn recv(&self, out: &mut Vec<u8>) {
        *out = self.rx.recv_bytes().expect("Connection::recv_bytes");
    }
    fn is_drained(&self) -> bool {
        !self.rx.poll(Duration::ZERO).expect("Connection::poll")
    }
}

/// Whether a [`Framed`] channel is a pipe (`read`/`write`) or a stream
/// socket (`recv`/`send`).
#[derive(Clone, Copy, PartialEq)]
enum FdKind {
    Pipe,
    Socket,
}

/// Length-prefixed frames over a raw descriptor pair: the producer writes
/// `tx`, the consumer reads `rx`. Both processes keep both ends open (nothing
/// relies on EOF).
struct Framed {
    kind: FdKind,
    rx: OwnedFd,
    tx: OwnedFd,
}

impl Framed {
    fn pipe() -> Framed {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes; the
        // result is checked before they are used.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors are fresh and owned by nothing else.
        let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Framed { kind: FdKind::Pipe, rx, tx }
    }

    fn socketpair() -> Framed {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors socketpair writes;
        // the result is checked before they are used.
        let rc =
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
        assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors are fresh and owned by nothing else.
        let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Framed { kind: FdKind::Socket, rx, tx }
    }

    /// Writes `header` then `payload` to `tx` with `writev(2)` (a pipe) or
    /// `sendmsg(2)` (a socket, `MSG_NOSIGNAL`), looping on short writes and
    /// `EINTR`. Two buffers, so the producer copies nothing in user space.
    fn write_all(&self, header: &[u8], payload: &[u8]) {
        let total = header.len() + payload.len();
        let mut sent = 0;
        while sent < total {
            // The parts of each buffer not yet written.
            let h = &header[sent.min(header.len())..];
            let p = &payload[sent.saturating_sub(header.len())..];
            let mut iov = [
                libc::iovec { iov_base: h.as_ptr() as *mut libc::c_void, iov_len: h.len() },
                libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() },
            ];
            let fd = self.tx.as_raw_fd();
            let n = match self.kind {
                // SAFETY: both iovecs describe live, readable slices (the
                // kernel only reads through them) and `fd` is an open
                // descriptor we own.
                FdKind::Pipe => unsafe { libc::writev(fd, iov.as_ptr(), 2) },
                FdKind::Socket => {
                    // SAFETY: an all-zero msghdr is valid (no address, no
                    // control data).
                    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                    msg.msg_iov = iov.as_mut_ptr();
                    msg.msg_iovlen = 2;
                    // SAFETY: `msg` points at the two live iovecs above, as in
                    // the pipe case, and at nothing else.
                    unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) }
                }
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "write: {err}");
                continue;
            }
            sent += n as usize;
        }
    }

    /// Fills all of `buf` from `rx`, looping on short reads and `EINTR`;
    /// panics at end of file.
    fn read_exact(&self, buf: &mut [u8]) {
        let mut got = 0;
        while got < buf.len() {
            let fd = self.rx.as_raw_fd();
            let rest = &mut buf[got..];
            // SAFETY: `rest` is a live slice of `rest.len()` writable bytes
            // and `fd` an open descriptor we own.
            let n = unsafe {
                match self.kind {
                    FdKind::Pipe => libc::read(fd, rest.as_mut_ptr().cast(), rest.len()),
                    FdKind::Socket => libc::recv(fd, rest.as_mut_ptr().cast(), rest.len(), 0),
                }
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "read: {err}");
                continue;
            }
            assert_ne!(n, 0, "read: end of file with {} of {} bytes read", got, buf.len());
            got += n as usize;
        }
    }
}

impl Mechanism for Framed {
    fn name(&self) -> &'static str {
        match self.kind {
            FdKind::Pipe => "os_pipe_framed",
            FdKind::Socket => "unix_socket_framed",
        }
    }
    fn send(&self, msg: &ByteBuf) {
        self.write_all(&(msg.len() as u64).to_le_bytes(), msg);
    }
    fn recv(&self, out: &mut Vec<u8>) {
        let mut header = [0u8; HEADER];
        self.read_exact(&mut header);
        let len = u64::from_le_bytes(header);
        assert!(len <= 1 << 20, "frame header claims {len} bytes");
        // No clearing: the read overwrites every byte.
        out.resize(len as usize, 0);
        self.read_exact(out);
    }
    fn is_drained(&self) -> bool {
        let mut fd = libc::pollfd { fd: self.rx.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: `fd` is one live pollfd; a zero timeout never blocks.
        let n = unsafe { libc::poll(&mut fd, 1, 0) };
        assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
        n == 0
    }
}

struct IpcChannel {
    tx: IpcBytesSender,
    rx: IpcBytesReceiver,
}

impl Mechanism for IpcChannel {
    fn name(&self) -> &'static str {
        "ipc_channel"
    }
    fn send(&self, msg: &ByteBuf) {
        self.tx.send(msg).expect("IpcBytesSender::send");
    }
    fn recv(&self, out: &mut Vec<u8>) {
        *out = self.rx.recv().expect("IpcBytesReceiver::recv");
    }
    fn is_drained(&self) -> bool {
        match self.rx.try_recv() {
            Err(TryRecvError::Empty) => true,
            Ok(_) => false,
            Err(e) => panic!("IpcBytesReceiver::try_recv: {e}"),
        }
    }
}

/// Marks `msg` as message `seq`: its first and last bytes.
fn stamp(msg: &mut [u8], seq: u64) {
    let last = msg.len() - 1;
    msg[0] = seq as u8;
    msg[last] = seq as u8;
}

/// Panics unless `msg` is what [`stamp`] made of a `size`-byte message `seq`.
fn check(msg: &[u8], size: usize, seq: u64) {
    assert_eq!(msg.len(), size, "message {seq} has the wrong length");
    let (first, last) = (msg[0], msg[size - 1]);
    assert!(
        first == seq as u8 && last == seq as u8,
        "message {seq}: first/last bytes are {first}/{last}, expected {} (lost, reordered or corrupted)",
        seq as u8
    );
}

/// Spins, then yields, until the consumer raises the start flag. Bounded by
/// the child's `alarm`.
fn wait_for_start(start: &AtomicU32) {
    let mut spins = 0u32;
    while start.load(Ordering::Acquire) == 0 {
        if spins < 1000 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Panics unless `child`, reaped with wait `status`, exited 0, saying how it
/// failed in `what`.
fn check_exit(child: &Child, status: libc::c_int, what: &str) {
    if exited_cleanly(status) {
        return;
    }
    let how = if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM {
        format!("still running after {DEADLINE:?} (killed by its SIGALRM deadline)")
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!(
            "exited with code {} (3: parent gone, 101: panic, e.g. a failed message check; see its stderr above)",
            libc::WEXITSTATUS(status)
        )
    };
    panic!("{what}: the {} (pid {}) {how}", child.role, child.pid);
}

/// Forks a child that arms its `alarm` deadline and runs `body`.
///
/// # Safety
/// As for [`common::spawn`].
unsafe fn spawn(role: &'static str, body: &dyn Fn()) -> Child {
    let child_body = || {
        // SAFETY: alarm only arms this process's timer; SIGALRM keeps its
        // default action (terminate), which is the deadline.
        unsafe { libc::alarm(DEADLINE.as_secs() as libc::c_uint) };
        body();
        0
    };
    // SAFETY: forwarded from the caller; `alarm` touches only the child's
    // own timer.
    unsafe { common::spawn(role, &child_body) }
}

/// One `iter_custom` sample: fork a consumer and a producer, stream one
/// untimed message and then `iters` timed ones of `size` bytes, and return
/// the consumer's time from the start flag to the last message.
fn rate_sample(m: &dyn Mechanism, shared: &Shared, size: usize, iters: u64) -> Duration {
    shared.start.0.store(0, Ordering::Relaxed);
    shared.elapsed_ns.0.store(u64::MAX, Ordering::Relaxed);
    shared.received.0.store(0, Ordering::Relaxed);
    let what = format!("{} with {iters} messages of {size} bytes", m.name());
    // SAFETY: the bench runs on one thread; the body touches only the
    // inherited mapping and the mechanism under test, `m`.
    let consumer = unsafe {
        spawn("consumer", &|| {
            let mut out = Vec::new();
            m.recv(&mut out);
            check(&out, size, 0);
            let t0 = Instant::now();
            shared.start.0.store(1, Ordering::Release);
            for seq in 1..=iters {
                m.recv(&mut out);
                check(&out, size, seq);
            }
            let ns = t0.elapsed().as_nanos().min(u64::MAX as u128 - 1) as u64;
            shared.received.0.store(iters + 1, Ordering::Relaxed);
            shared.elapsed_ns.0.store(ns, Ordering::Relaxed);
        })
    };
    // SAFETY: as for the consumer.
    let producer = unsafe {
        spawn("producer", &|| {
            let mut msg = ByteBuf::from(vec![0xa5; size]);
            stamp(&mut msg, 0);
            m.send(&msg);
            wait_for_start(&shared.start.0);
            for seq in 1..=iters {
                stamp(&mut msg, seq);
                m.send(&msg);
            }
        })
    };
    let mut children = [consumer, producer];
    let done = reap_all(&mut children, Instant::now() + DEADLINE + REAP_GRACE, |child, status| {
        check_exit(child, status, &what);
    });
    assert!(done, "{what}: a child outlived its own {DEADLINE:?} deadline by {REAP_GRACE:?}; killing it");
    // Visible: waitpid synchronises with the consumer's exit.
    let received = shared.received.0.load(Ordering::Relaxed);
    assert_eq!(received, iters + 1, "{what}: the consumer took {received} of {} messages", iters + 1);
    assert!(m.is_drained(), "{what}: messages are left in the channel after the consumer took them all");
    let ns = shared.elapsed_ns.0.load(Ordering::Relaxed);
    assert_ne!(ns, u64::MAX, "{what}: the consumer reported no time");
    Duration::from_nanos(ns)
}

fn queue_rate(c: &mut Criterion) {
    let map = Mapping::<Shared>::new();
    let shared = map.shared();
    // Everything is made before any fork, so the children inherit it. The
    // queue unlinks its segment when this handle drops, here in the process
    // that created it; children `_exit` and drop nothing.
    let (conn_tx, conn_rx) = shmsync::pipe().expect("shmsync::pipe");
    let (ipc_tx, ipc_rx) = ipc::bytes_channel().expect("ipc::bytes_channel");
    let mechanisms: Vec<Box<dyn Mechanism>> = vec![
        Box::new(ShmQueue(shmsync::Queue::new(QUEUE_CAPACITY).expect("Queue::new"))),
        Box::new(ShmConnection { tx: conn_tx, rx: conn_rx }),
        Box::new(Framed::pipe()),
        Box::new(Framed::socketpair()),
        Box::new(IpcChannel { tx: ipc_tx, rx: ipc_rx }),
    ];

    for (label, size) in SIZES {
        let mut group = c.benchmark_group(format!("queue_rate/{label}"));
        // Each sample forks twice; flat sampling keeps the number of forks
        // small.
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        group.throughput(Throughput::Elements(1));
        for m in &mechanisms {
            let m = &**m;
            group.bench_function(m.name(), |b| {
                b.iter_custom(|iters| rate_sample(m, shared, size, iters));
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
