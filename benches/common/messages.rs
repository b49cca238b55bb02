//! Streaming messages from one forked process to another, shared by
//! `benches/queue.rs` and the ipc_cost study's section 4: the mechanisms
//! (shmsync's `Queue` and `Connection`, length-prefixed frames over a raw
//! pipe or Unix stream socket, ipc-channel's bytes channel) and one sample,
//! [`stream`], with its checks.
//!
//! A sample forks a *consumer* and a *producer*, both unpinned. The producer
//! sends one untimed message (sequence 0), which the consumer takes: both
//! are then up, past their first faults and allocations. The consumer then
//! reads the clock and raises a start flag in shared memory; the producer,
//! spinning on that flag, sends `iters` more messages as fast as it can, and
//! the consumer stops the clock at the last one and hands the span back
//! through shared memory. Every message is checked on arrival (its length
//! is exact, and its first and last bytes are its sequence number as a
//! `u8`), the count must be exact, and the channel must be empty afterwards.
//! Each child dies by `SIGALRM` after its deadline and by `SIGKILL` if the
//! parent dies, and the parent reaps both with a bounded pidfd poll.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender};
use ipc_channel::TryRecvError;
use serde_bytes::ByteBuf;

use super::{describe_exit, exited_cleanly, reap_all, spawn_deadline, Line, ZeroValid};

/// The `Queue`'s ring, in bytes.
pub const QUEUE_CAPACITY: usize = 256 << 10;

/// The length prefix of a frame.
const HEADER: usize = 8;

/// What the two processes of a sample share, in one anonymous `MAP_SHARED`
/// mapping (a [`super::Mapping`]).
#[repr(C)]
pub struct Shared {
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
pub trait Mechanism {
    /// Sends `msg` as one message.
    fn send(&self, msg: &ByteBuf);
    /// Receives the next message into `out` (replacing what it held).
    fn recv(&self, out: &mut Vec<u8>);
    /// Whether no message is left in the channel; called between samples,
    /// when no child is alive.
    fn is_drained(&self) -> bool;
}

/// The mechanisms; each caller names them its own way.
#[derive(Clone, Copy)]
pub enum Kind {
    /// `shmsync::Queue::<ByteBuf>` with a [`QUEUE_CAPACITY`] ring.
    Queue,
    /// `shmsync::pipe()`, `send_bytes` / `recv_bytes`.
    Connection,
    /// A raw `pipe2` carrying `Connection`'s frames, written with one
    /// `writev(2)` and read with two exact `read(2)` loops.
    PipeFramed,
    /// The same frames over a raw `socketpair(AF_UNIX, SOCK_STREAM)`, written
    /// with one `sendmsg(2)` (`MSG_NOSIGNAL`) and read with `recv(2)`.
    SocketFramed,
    /// ipc-channel's `ipc::bytes_channel()`, made before the fork.
    IpcChannel,
}

impl Kind {
    /// Makes the mechanism. Call it before any fork, so the children inherit
    /// it; a queue unlinks its segment when the result drops.
    pub fn make(self) -> Box<dyn Mechanism> {
        match self {
            Kind::Queue => Box::new(ShmQueue(shmsync::Queue::new(QUEUE_CAPACITY).expect("Queue::new"))),
            Kind::Connection => {
                let (tx, rx) = shmsync::pipe().expect("shmsync::pipe");
                Box::new(ShmConnection { tx, rx })
            }
            Kind::PipeFramed => Box::new(Framed::pipe()),
            Kind::SocketFramed => Box::new(Framed::socketpair()),
            Kind::IpcChannel => {
                let (tx, rx) = ipc::bytes_channel().expect("ipc::bytes_channel");
                Box::new(IpcChannel { tx, rx })
            }
        }
    }
}

struct ShmQueue(shmsync::Queue<ByteBuf>);

impl Mechanism for ShmQueue {
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

/// How long a child of a sample may run before its `alarm` kills it, and
/// how much longer the parent waits before killing it itself.
pub struct Limits {
    pub deadline: Duration,
    pub grace: Duration,
}

/// What a message child's exit codes mean.
const EXIT_CODES: &str = "3: parent gone, 101: panic, e.g. a failed message check; see its stderr above";

/// One sample: fork a consumer and a producer, stream one untimed message
/// and then `iters` timed ones of `size` bytes through `m`, and return the
/// consumer's time from the start flag to the last message.
///
/// A child that does not exit 0 panics here at once, with `context` before
/// the reason (the panic unwinds through the children's drops, which kill
/// and reap the other one). A child outliving `limits`, a wrong count,
/// messages left over or no time reported is an `Err`.
///
/// The calling process must have only one thread (see [`super::spawn`]).
pub fn stream(
    m: &dyn Mechanism,
    shared: &Shared,
    size: usize,
    iters: u64,
    limits: &Limits,
    context: &str,
) -> Result<Duration, String> {
    shared.start.0.store(0, Ordering::Relaxed);
    shared.elapsed_ns.0.store(u64::MAX, Ordering::Relaxed);
    shared.received.0.store(0, Ordering::Relaxed);
    // SAFETY: the caller runs on one thread; the body touches only the
    // inherited mapping and the mechanism under test, `m`.
    let consumer = unsafe {
        spawn_deadline("consumer", limits.deadline, None, &|| {
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
            0
        })
    };
    // SAFETY: as for the consumer.
    let producer = unsafe {
        spawn_deadline("producer", limits.deadline, None, &|| {
            let mut msg = ByteBuf::from(vec![0xa5; size]);
            stamp(&mut msg, 0);
            m.send(&msg);
            wait_for_start(&shared.start.0);
            for seq in 1..=iters {
                stamp(&mut msg, seq);
                m.send(&msg);
            }
            0
        })
    };
    let mut children = [consumer, producer];
    let done = reap_all(&mut children, Instant::now() + limits.deadline + limits.grace, |child, status| {
        if !exited_cleanly(status) {
            panic!("{context}{}", describe_exit(child, status, limits.deadline, EXIT_CODES));
        }
    });
    if !done {
        let (deadline, grace) = (limits.deadline, limits.grace);
        return Err(format!("a child outlived its own {deadline:?} deadline by {grace:?}; killing it"));
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
    if ns == u64::MAX {
        return Err("the consumer reported no time".into());
    }
    Ok(Duration::from_nanos(ns))
}
