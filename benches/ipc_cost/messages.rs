//! Sections 4 and 5 of the study: how many messages per second one process
//! streams to another, and what `Pool::map` adds per item.
//!
//! **Messages.** Four mechanisms, each at 64 B and 4 KiB:
//! - `shmsync Queue`: `shmsync::Queue::<ByteBuf>` with a 256 KiB ring;
//! - `shmsync Connection`: `shmsync::pipe()`, `send_bytes` / `recv_bytes`;
//! - `Unix socket (framed)`: a raw `socketpair(AF_UNIX, SOCK_STREAM)`
//!   carrying `Connection`'s frames (an 8-byte little-endian length, then the
//!   payload), sent with one `sendmsg(2)` of both buffers and read with two
//!   exact `recv(2)` loops;
//! - `ipc-channel`: `ipc::bytes_channel()`, made before the fork.
//!
//! A sample forks a consumer and a producer, both unpinned, as
//! `benches/queue.rs` does: one untimed message gets both sides up, then the
//! consumer starts its clock and raises a start flag, the producer streams
//! the round's messages, and the consumer stops the clock at the last one.
//! Every mechanism sends the same bytes and the same number of messages at a
//! given size. Each message is checked on arrival (its length, and its first
//! and last bytes are its sequence number), the count must be exact, and the
//! channel must be empty afterwards.
//!
//! **Pool overhead.** `Pool::map` of a trivial `fn(u64) -> u64` on 2 workers,
//! in chunks of 1 and of 64, against the same loop in one process (the
//! floor); each result is checked. µs per item.

use std::hint::black_box;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender};
use ipc_channel::TryRecvError;
use serde_bytes::ByteBuf;

use crate::common::{self, exited_cleanly, reap_all, Child, Line, Mapping, ZeroValid};
use crate::model::{Key, Probe, Sample, Section, Unit};

/// How long a child of a message sample may run before its `alarm` kills it.
const CHILD_DEADLINE: Duration = Duration::from_secs(30);

/// How long after [`CHILD_DEADLINE`] the parent waits before killing a child.
const REAP_GRACE: Duration = Duration::from_secs(5);

/// The `Queue`'s ring, in bytes.
const QUEUE_CAPACITY: usize = 256 << 10;

/// The length prefix of a frame on the raw socket.
const HEADER: usize = 8;

/// The message sizes, their variant labels, and the messages per sample in
/// full and quick mode (the same for every mechanism at that size).
const SIZES: [(&str, usize, u64, u64); 2] = [("64 B", 64, 50_000, 2_000), ("4 KiB", 4096, 20_000, 1_000)];

/// What the two processes of a message sample share.
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

/// One way of streaming messages between processes. `send` runs only in the
/// producer and `recv` only in the consumer, each in its forked copy.
trait Mechanism {
    fn name(&self) -> &'static str;
    fn send(&self, msg: &ByteBuf);
    /// Receives the next message into `out`, replacing what it held.
    fn recv(&self, out: &mut Vec<u8>);
    /// Whether no message is left; called when no child is alive.
    fn is_drained(&self) -> bool;
}

struct ShmQueue(shmsync::Queue<ByteBuf>);

impl Mechanism for ShmQueue {
    fn name(&self) -> &'static str {
        "shmsync Queue"
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

struct ShmConnection {
    tx: shmsync::Connection,
    rx: shmsync::Connection,
}

impl Mechanism for ShmConnection {
    fn name(&self) -> &'static str {
        "shmsync Connection"
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

/// Length-prefixed frames over a raw Unix stream socket pair; both processes
/// keep both ends open (nothing relies on EOF).
struct FramedSocket {
    rx: OwnedFd,
    tx: OwnedFd,
}

impl FramedSocket {
    fn new() -> FramedSocket {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors socketpair writes;
        // the result is checked before they are used.
        let rc =
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
        assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors are fresh and owned by nothing else.
        let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        FramedSocket { rx, tx }
    }

    /// Sends `header` then `payload` with `sendmsg(2)` of two buffers,
    /// looping on short writes and `EINTR`.
    fn write_all(&self, header: &[u8], payload: &[u8]) {
        let total = header.len() + payload.len();
        let mut sent = 0;
        while sent < total {
            let h = &header[sent.min(header.len())..];
            let p = &payload[sent.saturating_sub(header.len())..];
            let mut iov = [
                libc::iovec { iov_base: h.as_ptr() as *mut libc::c_void, iov_len: h.len() },
                libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() },
            ];
            // SAFETY: an all-zero msghdr is valid (no address, no control data).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = 2;
            // SAFETY: `msg` points at two iovecs describing live slices, which
            // the kernel only reads, and `tx` is an open socket we own.
            let n = unsafe { libc::sendmsg(self.tx.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "sendmsg: {err}");
                continue;
            }
            sent += n as usize;
        }
    }

    /// Fills all of `buf`, looping on short reads and `EINTR`; panics at EOF.
    fn read_exact(&self, buf: &mut [u8]) {
        let mut got = 0;
        while got < buf.len() {
            let rest = &mut buf[got..];
            // SAFETY: `rest` is a live slice of `rest.len()` writable bytes and
            // `rx` an open socket we own.
            let n = unsafe { libc::recv(self.rx.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), 0) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "recv: {err}");
                continue;
            }
            assert_ne!(n, 0, "recv: end of file with {} of {} bytes read", got, buf.len());
            got += n as usize;
        }
    }
}

impl Mechanism for FramedSocket {
    fn name(&self) -> &'static str {
        "Unix socket (framed)"
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
        "ipc-channel"
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

/// Says how a child that did not exit 0 failed.
fn describe_exit(child: &Child, status: libc::c_int) -> String {
    let how = if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM {
        format!("still running after {CHILD_DEADLINE:?} (killed by its SIGALRM deadline)")
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!(
            "exited with code {} (3: parent gone, 101: panic, e.g. a failed message check; see its stderr)",
            libc::WEXITSTATUS(status)
        )
    };
    format!("the {} (pid {}) {how}", child.role, child.pid)
}

/// Forks a child that arms its `alarm` deadline and runs `body`.
///
/// # Safety
/// As for [`common::spawn`]: the process has one thread, and `body` touches
/// only the inherited mapping and the mechanism under test.
unsafe fn spawn(role: &'static str, body: &dyn Fn()) -> Child {
    let child_body = || {
        // SAFETY: alarm only arms this process's timer; SIGALRM keeps its
        // default action (terminate), which is the deadline.
        unsafe { libc::alarm(CHILD_DEADLINE.as_secs() as libc::c_uint) };
        body();
        0
    };
    // SAFETY: forwarded from the caller; `alarm` touches only the child's timer.
    unsafe { common::spawn(role, &child_body) }
}

/// One probe: a mechanism at one message size.
struct RateProbe {
    mechanism: Box<dyn Mechanism>,
    variant: &'static str,
    size: usize,
    /// Messages per sample in full and quick mode.
    count: (u64, u64),
    map: Mapping<Shared>,
}

impl RateProbe {
    /// Streams one untimed and then `iters` timed messages from a forked
    /// producer to a forked consumer and returns the consumer's span.
    fn stream(&self, iters: u64) -> Result<Duration, String> {
        let shared = self.map.shared();
        let m = &*self.mechanism;
        let size = self.size;
        shared.start.0.store(0, Ordering::Relaxed);
        shared.elapsed_ns.0.store(u64::MAX, Ordering::Relaxed);
        shared.received.0.store(0, Ordering::Relaxed);
        // SAFETY: the study runs on one thread; the body touches only the
        // inherited mapping and the mechanism under test.
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
        // A failed child ends the wait at once (the panic unwinds through
        // here, and the drops kill and reap the other child); the harness
        // turns the panic into the probe's failure.
        let done = reap_all(&mut children, Instant::now() + CHILD_DEADLINE + REAP_GRACE, |child, status| {
            if !exited_cleanly(status) {
                panic!("{}", describe_exit(child, status));
            }
        });
        if !done {
            return Err(format!("a child outlived its own {CHILD_DEADLINE:?} deadline by {REAP_GRACE:?}"));
        }
        // Visible: waitpid synchronises with the consumer's exit.
        let received = shared.received.0.load(Ordering::Relaxed);
        if received != iters + 1 {
            return Err(format!("the consumer took {received} of {} messages", iters + 1));
        }
        if !m.is_drained() {
            return Err("messages are left in the channel after the consumer took them all".into());
        }
        let ns = shared.elapsed_ns.0.load(Ordering::Relaxed);
        if ns == u64::MAX || ns == 0 {
            return Err("the consumer reported no time".into());
        }
        Ok(Duration::from_nanos(ns))
    }
}

impl Probe for RateProbe {
    fn key(&self) -> Key {
        Key { section: Section::Messages, mechanism: self.mechanism.name().into(), variant: self.variant.into() }
    }
    fn unit(&self) -> Unit {
        Unit::MsgsPerSec
    }
    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        let iters = if quick { self.count.1 } else { self.count.0 };
        let span = self.stream(iters)?;
        Ok(Sample { value: iters as f64 / span.as_secs_f64(), p50: None, p99: None })
    }
}

/// Section 4's probes: every mechanism at every size. Everything is made
/// here, before any fork, so the children inherit it; the queue's segment
/// is unlinked when its probe drops.
pub fn message_probes() -> Vec<Box<dyn Probe>> {
    let mut probes: Vec<Box<dyn Probe>> = Vec::new();
    for (variant, size, full, quick) in SIZES {
        let (conn_tx, conn_rx) = shmsync::pipe().expect("shmsync::pipe");
        let (ipc_tx, ipc_rx) = ipc::bytes_channel().expect("ipc::bytes_channel");
        let mechanisms: [Box<dyn Mechanism>; 4] = [
            Box::new(ShmQueue(shmsync::Queue::new(QUEUE_CAPACITY).expect("Queue::new"))),
            Box::new(ShmConnection { tx: conn_tx, rx: conn_rx }),
            Box::new(FramedSocket::new()),
            Box::new(IpcChannel { tx: ipc_tx, rx: ipc_rx }),
        ];
        for mechanism in mechanisms {
            probes.push(Box::new(RateProbe { mechanism, variant, size, count: (full, quick), map: Mapping::new() }));
        }
    }
    probes
}

/// Items per `map` (or loop) in full and quick mode.
const POOL_ITEMS: (u64, u64) = (2_000, 200);

/// How often the floor's loop runs per sample, so that its time is well
/// above the clock's resolution.
const LOOP_REPEATS: u32 = 200;

/// How long one `Pool::map` may take before the study gives up: an `alarm`
/// ends the whole study (the workers die with it, by `PR_SET_PDEATHSIG`).
const MAP_DEADLINE: Duration = Duration::from_secs(60);

/// The trivial task.
fn double(x: u64) -> u64 {
    x.wrapping_mul(2)
}

/// Checks that `out` is `double` of `0..items`, in order.
fn check_doubled(out: &[u64], items: u64) -> Result<(), String> {
    if out.len() as u64 != items {
        return Err(format!("got {} results for {items} items", out.len()));
    }
    match out.iter().enumerate().find(|&(i, &r)| r != double(i as u64)) {
        Some((i, r)) => Err(format!("item {i}: got {r}, expected {}", double(i as u64))),
        None => Ok(()),
    }
}

/// The floor: the same function over the same items in a loop, in one
/// process.
struct LoopProbe;

impl Probe for LoopProbe {
    fn key(&self) -> Key {
        Key { section: Section::PoolOverhead, mechanism: "plain loop".into(), variant: "1 process".into() }
    }
    fn unit(&self) -> Unit {
        Unit::MicrosPerOp
    }
    fn is_floor(&self) -> bool {
        true
    }
    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        let items = if quick { POOL_ITEMS.1 } else { POOL_ITEMS.0 };
        let t0 = Instant::now();
        let mut out = Vec::new();
        for _ in 0..LOOP_REPEATS {
            out = (0..items).map(|x| double(black_box(x))).collect::<Vec<_>>();
            black_box(&out);
        }
        let span = t0.elapsed();
        check_doubled(&out, items)?;
        Ok(Sample { value: span.as_secs_f64() * 1e6 / (items as f64 * f64::from(LOOP_REPEATS)), p50: None, p99: None })
    }
}

/// `Pool::map` with a given chunk size on a pool of 2 workers, forked once
/// when the probe is made, as a long-lived pool is.
struct PoolProbe {
    pool: shmsync::Pool,
    chunk: usize,
}

impl Probe for PoolProbe {
    fn key(&self) -> Key {
        Key {
            section: Section::PoolOverhead,
            mechanism: format!("shmsync Pool::map, chunk {}", self.chunk),
            variant: "2 workers".into(),
        }
    }
    fn unit(&self) -> Unit {
        Unit::MicrosPerOp
    }
    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        let items = if quick { POOL_ITEMS.1 } else { POOL_ITEMS.0 };
        // SAFETY: alarm only arms this process's timer; its default action
        // ends the study, loudly, if `map` ever hangs.
        unsafe { libc::alarm(MAP_DEADLINE.as_secs() as libc::c_uint) };
        let t0 = Instant::now();
        let out = self.pool.map_chunked(double, 0..items, self.chunk);
        let span = t0.elapsed();
        // SAFETY: as above; 0 disarms the timer.
        unsafe { libc::alarm(0) };
        let out = out.map_err(|e| format!("Pool::map: {e}"))?;
        check_doubled(&out, items)?;
        Ok(Sample { value: span.as_secs_f64() * 1e6 / items as f64, p50: None, p99: None })
    }
}

impl Drop for PoolProbe {
    fn drop(&mut self) {
        self.pool.close();
        if !matches!(self.pool.join_timeout(Duration::from_secs(10)), Ok(true)) {
            self.pool.terminate();
        }
    }
}

/// Section 5's probes: the loop (the floor) and `Pool::map` at chunk 1 and 64.
pub fn pool_probes() -> Vec<Box<dyn Probe>> {
    let mut probes: Vec<Box<dyn Probe>> = vec![Box::new(LoopProbe)];
    for chunk in [1, 64] {
        let pool = shmsync::Pool::new(2).expect("Pool::new(2)");
        probes.push(Box::new(PoolProbe { pool, chunk }));
    }
    probes
}
