//! Messages from one forked process to another, shared by
//! `benches/queue.rs` and the ipc_cost study's message sections: the
//! mechanisms ([`Kind`]), a stream of messages from P producers to P
//! consumers ([`stream`]) and a request/response round trip
//! ([`round_trips`]), each with its checks.
//!
//! **A stream** forks P consumers and P producers, all unpinned. Each
//! producer sends one untimed message (sequence 0) and each consumer takes
//! one, so every process is up, past its first faults and allocations,
//! before the clock starts; each then says it is ready. The parent stamps
//! `CLOCK_MONOTONIC` and raises a start flag; each producer sends its
//! messages as fast as it can and then one end marker; each consumer takes
//! messages until it takes an end marker and stamps the clock. The span runs
//! from the parent's stamp to the latest consumer's, so neither fork nor exit
//! is timed. With one channel in first-in first-out order and as many
//! consumers as producers, each consumer takes exactly one marker, and the
//! last marker comes after every message.
//!
//! Every message is checked on arrival: its length is exact, its first byte
//! names its producer, the next eight are its sequence number and its last
//! byte repeats both, so a torn, truncated or foreign message fails. Each
//! consumer checks that every producer's numbers rise (order per producer),
//! and counts, sums and XORs them; the parent checks that together the
//! consumers took every message of every producer exactly once (count, sum
//! and XOR of 1..=N), and that the channel is empty afterwards.
//!
//! **A round trip** forks a responder, which echoes every message it gets
//! on `there` back on `back`, and an initiator, which after some untimed
//! trips times each trip with one clock read per trip; every echo is
//! checked, and both counts must be exact.
//!
//! Both report the CPU time (user plus system) each child spent inside its
//! timed window, read with `getrusage(RUSAGE_SELF)` at the window's edges
//! and summed, and, as a cross-check, the children's whole lives from the
//! parent's `getrusage(RUSAGE_CHILDREN)`.
//!
//! Each child dies by `SIGALRM` after its deadline and by `SIGKILL` if the
//! parent dies, and the parent reaps them with a bounded pidfd poll.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender};
use ipc_channel::TryRecvError;
use serde_bytes::ByteBuf;

use super::{
    describe_exit, exited_cleanly, monotonic_ns, reap_all, spawn_deadline, Child, CpuSlot, CpuTimes, Line, ZeroValid,
};

/// The length prefix of a frame.
const HEADER: usize = 8;

/// The largest message any mechanism is asked to carry.
pub const MAX_MESSAGE: usize = 1 << 20;

/// The smallest message: room for the producer, the sequence number and the
/// check byte of [`stamp`].
pub const MIN_MESSAGE: usize = 16;

/// At most this many producers (and as many consumers) in one stream.
pub const MAX_SIDE: usize = 4;

/// Room for the per-trip times of the longest round-trip sample.
pub const MAX_TRIPS: usize = 8192;

/// Untimed round trips first, so both sides are up and past their faults.
pub const WARM_TRIPS: usize = 20;

/// The sequence number of a producer's end marker.
const END: u64 = u64::MAX;

/// The ring of a `Queue` built to carry messages of up to `max_message`
/// bytes: 256 KiB, or room for four such messages if that is more.
pub fn queue_capacity(max_message: usize) -> usize {
    (4 * (max_message + 16)).max(256 << 10)
}

/// The buffer of the tuned pipe for messages of up to `max_message` bytes:
/// the queue's ring size rounded up to a power of two, at most the
/// unprivileged limit `/proc/sys/fs/pipe-max-size` (1 MiB by default).
pub fn pipe_capacity(max_message: usize) -> usize {
    let limit = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(1 << 20);
    queue_capacity(max_message).next_power_of_two().min(limit)
}

/// What one consumer took from one producer, stored when it is done.
#[repr(C)]
pub struct Tally {
    count: AtomicU64,
    sum: AtomicU64,
    xor: AtomicU64,
}

/// What the processes of a sample share, in one anonymous `MAP_SHARED`
/// mapping (a [`super::Mapping`]).
#[repr(C)]
pub struct Shared {
    /// 0 until the parent starts the clock, then 1.
    start: Line<AtomicU32>,
    /// How many children are up and waiting for the start.
    ready: Line<AtomicU32>,
    /// Each consumer's `CLOCK_MONOTONIC` after its end marker; 0 until then.
    end_ns: [Line<AtomicU64>; MAX_SIDE],
    /// `tallies[c][p]`: what consumer `c` took from producer `p`.
    tallies: [[Line<Tally>; MAX_SIDE]; MAX_SIDE],
    /// The CPU time of each child's timed window: producers first, then
    /// consumers (a stream); initiator, then responder (round trips).
    cpu: [Line<CpuSlot>; 2 * MAX_SIDE],
    /// Each timed round trip, ns, written by the initiator.
    trip_ns: [AtomicU64; MAX_TRIPS],
    /// How many round trips the initiator timed, written at its end.
    timed: Line<AtomicU64>,
    /// How many requests the responder answered, written at its end.
    answered: Line<AtomicU64>,
}

// SAFETY: every field is an atomic integer, or an array or `Line` of them,
// for which all-zero bytes are a valid value.
unsafe impl ZeroValid for Shared {}

impl Shared {
    /// Back to the state before any child ran.
    fn reset(&self) {
        self.start.0.store(0, Ordering::Relaxed);
        self.ready.0.store(0, Ordering::Relaxed);
        for e in &self.end_ns {
            e.0.store(0, Ordering::Relaxed);
        }
        for t in self.tallies.iter().flatten() {
            t.0.count.store(0, Ordering::Relaxed);
            t.0.sum.store(0, Ordering::Relaxed);
            t.0.xor.store(0, Ordering::Relaxed);
        }
        for c in &self.cpu {
            c.0.store(CpuTimes::default());
        }
        self.timed.0.store(0, Ordering::Relaxed);
        self.answered.0.store(0, Ordering::Relaxed);
    }
}

/// One way of carrying messages from one process to another. `send` runs
/// only in producers, `recv` only in consumers, each in its own forked copy
/// of the object.
pub trait Mechanism {
    /// Sends `msg` as one message.
    fn send(&self, msg: &ByteBuf);
    /// Receives the next message into `out` (replacing what it held).
    fn recv(&self, out: &mut Vec<u8>);
    /// Whether no message is left in the channel; called between samples,
    /// when no child is alive.
    fn is_drained(&self) -> bool;
}

/// The mechanisms; each caller names them its own way. A new mechanism is
/// one more variant, its arm in [`Kind::make`] and its `Mechanism` impl.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// `shmsync::Queue::<ByteBuf>` (serde_bytes: postcard writes one length
    /// and the bytes) with a [`queue_capacity`] ring.
    QueueByteBuf,
    /// `shmsync::Queue::<Vec<u8>>` (serde's generic sequence: postcard
    /// writes the bytes one element at a time), same ring.
    QueueVec,
    /// `shmsync::Queue::<Vec<u8>>` through its zero-copy path: `put_with`
    /// writes the bytes straight into the ring, `get_with` reads them there
    /// (here into the consumer's reused buffer, where it checks them).
    QueueZeroCopy,
    /// `shmsync::pipe()`, `send_bytes` / `recv_bytes`.
    Connection,
    /// The strongest kernel baseline: a `pipe2(O_NONBLOCK)` with a
    /// [`pipe_capacity`] buffer carrying length-prefixed frames, each sent
    /// with one `writev(2)` and received by one `read(2)` into a 64 KiB
    /// buffer (which may bring many frames at once); `poll(2)` on `EAGAIN`.
    TunedPipe,
    /// A raw `pipe2` carrying `Connection`'s frames, written with one
    /// blocking `writev(2)` and read with two exact `read(2)` loops.
    PipeFramed,
    /// The same frames over a raw `socketpair(AF_UNIX, SOCK_STREAM)`, written
    /// with one blocking `sendmsg(2)` (`MSG_NOSIGNAL`) and read with two
    /// exact `recv(2)` loops: the style of Python's `Connection`.
    SocketFramed,
    /// ipc-channel's `ipc::bytes_channel()`, made before the fork.
    IpcChannel,
}

impl Kind {
    /// Makes the mechanism, sized for messages of up to `max_message`
    /// bytes. Call it before any fork, so the children inherit it; a queue
    /// unlinks its segment when the result drops.
    pub fn make(self, max_message: usize) -> Box<dyn Mechanism> {
        assert!(max_message <= MAX_MESSAGE, "messages of {max_message} bytes are over MAX_MESSAGE");
        let capacity = queue_capacity(max_message);
        match self {
            Kind::QueueByteBuf => Box::new(QueueByteBuf(shmsync::Queue::new(capacity).expect("Queue::new"))),
            Kind::QueueVec => Box::new(QueueVec(shmsync::Queue::new(capacity).expect("Queue::new"))),
            Kind::QueueZeroCopy => Box::new(QueueZeroCopy(shmsync::Queue::new(capacity).expect("Queue::new"))),
            Kind::Connection => {
                let (tx, rx) = shmsync::pipe().expect("shmsync::pipe");
                Box::new(ShmConnection { tx, rx })
            }
            Kind::TunedPipe => Box::new(TunedPipe::new(pipe_capacity(max_message))),
            Kind::PipeFramed => Box::new(Framed::pipe()),
            Kind::SocketFramed => Box::new(Framed::socketpair()),
            Kind::IpcChannel => {
                let (tx, rx) = ipc::bytes_channel().expect("ipc::bytes_channel");
                Box::new(IpcChannel { tx, rx })
            }
        }
    }
}

struct QueueByteBuf(shmsync::Queue<ByteBuf>);

impl Mechanism for QueueByteBuf {
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

struct QueueVec(shmsync::Queue<Vec<u8>>);

impl Mechanism for QueueVec {
    fn send(&self, msg: &ByteBuf) {
        // `ByteBuf` derefs to the `Vec<u8>` it wraps: no copy.
        self.0.put(msg).expect("Queue::put");
    }
    fn recv(&self, out: &mut Vec<u8>) {
        *out = self.0.get().expect("Queue::get");
    }
    fn is_drained(&self) -> bool {
        self.0.is_empty()
    }
}

struct QueueZeroCopy(shmsync::Queue<Vec<u8>>);

impl Mechanism for QueueZeroCopy {
    fn send(&self, msg: &ByteBuf) {
        self.0.put_with(msg.len(), |buf| buf.copy_from_slice(msg)).expect("Queue::put_with");
    }
    fn recv(&self, out: &mut Vec<u8>) {
        self.0
            .get_with(|bytes| {
                out.clear();
                out.extend_from_slice(bytes);
            })
            .expect("Queue::get_with");
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

/// Makes a `pipe2` with `flags`; (read end, write end).
fn pipe_fds(flags: libc::c_int) -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes; the result
    // is checked before they are used.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), flags | libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Blocks until `fd` is ready for `events`. Bounded by the child's alarm.
fn wait_fd(fd: RawFd, events: libc::c_short) {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: `p` is one live pollfd.
    while unsafe { libc::poll(&mut p, 1, -1) } < 0 {
        let err = std::io::Error::last_os_error();
        assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "poll: {err}");
    }
}

/// Whether `fd` has anything to read right now.
fn readable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: `p` is one live pollfd; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
    n > 0
}

/// The tuned pipe's receive buffer: bytes `start..end` of `data` arrived
/// and were not handed out yet.
struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

/// The size of the tuned pipe's receive buffer; frames of a quarter of it
/// or more are read straight into the caller's buffer instead.
const READ_BUF: usize = 64 << 10;

/// See [`Kind::TunedPipe`].
struct TunedPipe {
    rx: OwnedFd,
    tx: OwnedFd,
    /// Used by the consumer only (each process has its own copy).
    buf: RefCell<ReadBuf>,
}

impl TunedPipe {
    fn new(capacity: usize) -> TunedPipe {
        let (rx, tx) = pipe_fds(libc::O_NONBLOCK);
        // SAFETY: F_SETPIPE_SZ takes an int; the result is checked.
        let got = unsafe { libc::fcntl(tx.as_raw_fd(), libc::F_SETPIPE_SZ, capacity as libc::c_int) };
        assert!(got >= capacity as libc::c_int, "F_SETPIPE_SZ {capacity}: {}", std::io::Error::last_os_error());
        TunedPipe { rx, tx, buf: RefCell::new(ReadBuf { data: vec![0; READ_BUF], start: 0, end: 0 }) }
    }

    /// One `read(2)` into `dst`, waiting in `poll(2)` while the pipe is
    /// empty; the byte count (never 0: end of file panics).
    fn read_some(&self, dst: &mut [u8]) -> usize {
        loop {
            // SAFETY: `dst` is a live slice of `dst.len()` writable bytes and
            // `rx` an open descriptor we own.
            let n = unsafe { libc::read(self.rx.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len()) };
            if n > 0 {
                return n as usize;
            }
            assert_ne!(n, 0, "tuned pipe: end of file");
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => wait_fd(self.rx.as_raw_fd(), libc::POLLIN),
                Some(libc::EINTR) => {}
                _ => panic!("tuned pipe read: {err}"),
            }
        }
    }
}

impl Mechanism for TunedPipe {
    fn send(&self, msg: &ByteBuf) {
        let header = (msg.len() as u64).to_le_bytes();
        let total = HEADER + msg.len();
        let mut sent = 0;
        while sent < total {
            let h = &header[sent.min(HEADER)..];
            let p = &msg[sent.saturating_sub(HEADER)..];
            let iov = [
                libc::iovec { iov_base: h.as_ptr() as *mut libc::c_void, iov_len: h.len() },
                libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() },
            ];
            // SAFETY: both iovecs describe live, readable slices (the kernel
            // only reads through them) and `tx` is an open descriptor we own.
            let n = unsafe { libc::writev(self.tx.as_raw_fd(), iov.as_ptr(), 2) };
            if n >= 0 {
                sent += n as usize;
                continue;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => wait_fd(self.tx.as_raw_fd(), libc::POLLOUT),
                Some(libc::EINTR) => {}
                _ => panic!("tuned pipe writev: {err}"),
            }
        }
    }

    fn recv(&self, out: &mut Vec<u8>) {
        let mut b = self.buf.borrow_mut();
        loop {
            let avail = b.end - b.start;
            if avail >= HEADER {
                let at = b.start;
                let len = u64::from_le_bytes(b.data[at..at + HEADER].try_into().expect("8 bytes"));
                assert!(len <= MAX_MESSAGE as u64, "tuned pipe: a frame header claims {len} bytes");
                let (len, frame) = (len as usize, HEADER + len as usize);
                if avail >= frame {
                    out.clear();
                    out.extend_from_slice(&b.data[at + HEADER..at + frame]);
                    b.start += frame;
                    return;
                }
                if len >= READ_BUF / 4 {
                    // A large frame: what arrived of it, then the rest read
                    // straight into `out` (a no-op resize when `out` already
                    // held a message of this size).
                    let have = avail - HEADER;
                    out.resize(len, 0);
                    out[..have].copy_from_slice(&b.data[at + HEADER..b.end]);
                    b.start = 0;
                    b.end = 0;
                    let mut got = have;
                    while got < len {
                        got += self.read_some(&mut out[got..]);
                    }
                    return;
                }
            }
            // Too little for a frame: keep the partial one at the front and
            // read once more, as much as fits.
            if b.start > 0 {
                let (start, end) = (b.start, b.end);
                b.data.copy_within(start..end, 0);
                b.end -= start;
                b.start = 0;
            }
            let end = b.end;
            let n = self.read_some(&mut b.data[end..]);
            b.end += n;
        }
    }

    fn is_drained(&self) -> bool {
        let b = self.buf.borrow();
        b.start == b.end && !readable_now(self.rx.as_raw_fd())
    }
}

/// Whether a [`Framed`] channel is a pipe (`read`/`write`) or a stream
/// socket (`recv`/`send`).
#[derive(Clone, Copy, PartialEq)]
enum FdKind {
    Pipe,
    Socket,
}

/// Length-prefixed frames over a raw, blocking descriptor pair: the producer
/// writes `tx`, the consumer reads `rx`. Both processes keep both ends open
/// (nothing relies on EOF).
struct Framed {
    kind: FdKind,
    rx: OwnedFd,
    tx: OwnedFd,
}

impl Framed {
    fn pipe() -> Framed {
        let (rx, tx) = pipe_fds(0);
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
        assert!(len <= MAX_MESSAGE as u64, "frame header claims {len} bytes");
        // No clearing: the read overwrites every byte.
        out.resize(len as usize, 0);
        self.read_exact(out);
    }
    fn is_drained(&self) -> bool {
        !readable_now(self.rx.as_raw_fd())
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

/// The check byte of message `seq` from producer `producer`.
fn check_byte(producer: u8, seq: u64) -> u8 {
    (seq as u8) ^ (seq >> 8) as u8 ^ producer.rotate_left(4)
}

/// Marks `msg` as message `seq` of producer `producer`: the first byte, the
/// next eight, and the last.
fn stamp(msg: &mut [u8], producer: u8, seq: u64) {
    let last = msg.len() - 1;
    msg[0] = producer;
    msg[1..9].copy_from_slice(&seq.to_le_bytes());
    msg[last] = check_byte(producer, seq);
}

/// The producer and sequence number of `msg`, which must be what [`stamp`]
/// made of a `size`-byte message of one of `producers`; panics otherwise.
fn read_stamp(msg: &[u8], size: usize, producers: usize) -> (usize, u64) {
    assert_eq!(msg.len(), size, "a message of {} bytes, expected {size} (truncated or merged)", msg.len());
    let producer = msg[0];
    let seq = u64::from_le_bytes(msg[1..9].try_into().expect("8 bytes"));
    assert!((producer as usize) < producers, "a message names producer {producer} of {producers} (corrupted)");
    assert_eq!(
        msg[size - 1],
        check_byte(producer, seq),
        "message {seq} of producer {producer}: its last byte does not match its first nine (torn or corrupted)"
    );
    (producer as usize, seq)
}

/// Spins, then yields, until the parent raises the start flag. Bounded by
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

/// Waits until `n` children have said they are ready. A child that exits
/// first panics here (with `context`), as does one that exits unclean later.
fn wait_ready(
    ready: &AtomicU32,
    n: usize,
    children: &mut [Child],
    limits: &Limits,
    context: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + limits.deadline;
    while ready.load(Ordering::Acquire) < n as u32 {
        if Instant::now() >= deadline {
            let got = ready.load(Ordering::Relaxed);
            return Err(format!("only {got} of {n} children came up within {:?}", limits.deadline));
        }
        // A zero wait: reaps (and checks) any child that died early.
        let _ = reap_all(children, Instant::now(), |child, status| {
            panic!("{context}{} before the start", describe_exit(child, status, limits.deadline, EXIT_CODES));
        });
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(())
}

/// Reaps every child within the deadline plus grace; a child that exits
/// unclean panics here with `context`.
fn reap_checked(children: &mut [Child], limits: &Limits, context: &str) -> Result<(), String> {
    let done = reap_all(children, Instant::now() + limits.deadline + limits.grace, |child, status| {
        if !exited_cleanly(status) {
            panic!("{context}{}", describe_exit(child, status, limits.deadline, EXIT_CODES));
        }
    });
    if !done {
        let (deadline, grace) = (limits.deadline, limits.grace);
        return Err(format!("a child outlived its own {deadline:?} deadline by {grace:?}; killing it"));
    }
    Ok(())
}

/// The shape of a stream.
#[derive(Clone, Copy, Debug)]
pub struct StreamSpec {
    /// Bytes per message, at least [`MIN_MESSAGE`].
    pub size: usize,
    /// Producers, and as many consumers; 1 to [`MAX_SIDE`].
    pub producers: usize,
    /// Timed messages each producer sends.
    pub per_producer: u64,
}

impl StreamSpec {
    /// All timed messages together.
    pub fn messages(&self) -> u64 {
        self.per_producer * self.producers as u64
    }
}

/// What a stream measured.
#[derive(Clone, Copy, Debug)]
pub struct StreamOutcome {
    /// From the parent's start to the last consumer's end marker.
    pub span: Duration,
    /// The children's CPU time inside their timed windows, summed.
    pub cpu: CpuTimes,
    /// The children's CPU time over their whole lives (fork to exit).
    pub cpu_lifetime: CpuTimes,
}

/// One sample: a stream of `spec` through `m`; see the module docs.
///
/// A child that does not exit 0 panics here at once, with `context` before
/// the reason (the panic unwinds through the children's drops, which kill
/// and reap the others). A child outliving `limits`, a wrong count, messages
/// left over or no time reported is an `Err`.
///
/// The calling process must have only one thread (see [`super::spawn`]).
pub fn stream(
    m: &dyn Mechanism,
    shared: &Shared,
    spec: StreamSpec,
    limits: &Limits,
    context: &str,
) -> Result<StreamOutcome, String> {
    let StreamSpec { size, producers, per_producer } = spec;
    assert!((1..=MAX_SIDE).contains(&producers), "1 to {MAX_SIDE} producers, not {producers}");
    assert!((MIN_MESSAGE..=MAX_MESSAGE).contains(&size), "messages of {size} bytes");
    shared.reset();
    let lifetime0 = CpuTimes::reaped_children();
    let consumer = |c: usize| {
        let mut out = Vec::new();
        // Per producer: the last number seen, and the count, sum and XOR of
        // the timed ones.
        let mut last = [None::<u64>; MAX_SIDE];
        let mut tally = [(0u64, 0u64, 0u64); MAX_SIDE];
        m.recv(&mut out);
        let (p, seq) = read_stamp(&out, size, producers);
        assert_eq!(seq, 0, "the first message a consumer took is not a producer's untimed one");
        last[p] = Some(0);
        shared.ready.0.fetch_add(1, Ordering::Release);
        wait_for_start(&shared.start.0);
        let cpu0 = CpuTimes::this_process();
        loop {
            m.recv(&mut out);
            let (p, seq) = read_stamp(&out, size, producers);
            if seq == END {
                break;
            }
            assert!(
                last[p].is_none_or(|l| seq > l),
                "producer {p}: message {seq} came after {last:?} (lost order)",
                last = last[p]
            );
            last[p] = Some(seq);
            let t = &mut tally[p];
            t.0 += 1;
            t.1 = t.1.wrapping_add(seq);
            t.2 ^= seq;
        }
        let end = monotonic_ns();
        shared.cpu[producers + c].0.store(CpuTimes::this_process().since(cpu0));
        // With one producer its end marker is the last message, so nothing
        // may follow it, not even in a receive buffer of this process.
        assert!(producers > 1 || m.is_drained(), "a message came after the end marker");
        for (p, &(count, sum, xor)) in tally.iter().enumerate().take(producers) {
            let slot = &shared.tallies[c][p].0;
            slot.count.store(count, Ordering::Relaxed);
            slot.sum.store(sum, Ordering::Relaxed);
            slot.xor.store(xor, Ordering::Relaxed);
        }
        shared.end_ns[c].0.store(end, Ordering::Relaxed);
        0
    };
    let producer = |p: usize| {
        let mut msg = ByteBuf::from(vec![0xa5; size]);
        stamp(&mut msg, p as u8, 0);
        m.send(&msg);
        shared.ready.0.fetch_add(1, Ordering::Release);
        wait_for_start(&shared.start.0);
        let cpu0 = CpuTimes::this_process();
        for seq in 1..=per_producer {
            stamp(&mut msg, p as u8, seq);
            m.send(&msg);
        }
        stamp(&mut msg, p as u8, END);
        m.send(&msg);
        shared.cpu[p].0.store(CpuTimes::this_process().since(cpu0));
        0
    };
    let mut children = Vec::with_capacity(2 * producers);
    for c in 0..producers {
        // SAFETY: the caller runs on one thread; the body touches only the
        // inherited mapping and the mechanism under test, `m`.
        children.push(unsafe { spawn_deadline("consumer", limits.deadline, None, &|| consumer(c)) });
    }
    for p in 0..producers {
        // SAFETY: as for the consumers.
        children.push(unsafe { spawn_deadline("producer", limits.deadline, None, &|| producer(p)) });
    }
    wait_ready(&shared.ready.0, 2 * producers, &mut children, limits, context)?;
    let t0 = monotonic_ns();
    shared.start.0.store(1, Ordering::Release);
    reap_checked(&mut children, limits, context)?;
    let cpu_lifetime = CpuTimes::reaped_children().since(lifetime0);
    // Visible: waitpid synchronises with the children's exits.
    let expected =
        (per_producer, (1..=per_producer).fold(0u64, u64::wrapping_add), (1..=per_producer).fold(0u64, |a, s| a ^ s));
    for p in 0..producers {
        let mut got = (0u64, 0u64, 0u64);
        for c in 0..producers {
            let t = &shared.tallies[c][p].0;
            got.0 += t.count.load(Ordering::Relaxed);
            got.1 = got.1.wrapping_add(t.sum.load(Ordering::Relaxed));
            got.2 ^= t.xor.load(Ordering::Relaxed);
        }
        if got != expected {
            return Err(format!(
                "producer {p}'s messages: the consumers took (count, sum, xor) {got:?}, expected {expected:?} \
                 (lost or duplicated)"
            ));
        }
    }
    if !m.is_drained() {
        return Err("messages are left in the channel after every end marker was taken".into());
    }
    let ends: Vec<u64> = shared.end_ns[..producers].iter().map(|e| e.0.load(Ordering::Relaxed)).collect();
    let end = ends.iter().copied().max().unwrap_or(0);
    if ends.contains(&0) || end <= t0 {
        return Err("a consumer reported no end time".into());
    }
    let cpu = (0..2 * producers).fold(CpuTimes::default(), |sum, i| sum.plus(shared.cpu[i].0.load()));
    Ok(StreamOutcome { span: Duration::from_nanos(end - t0), cpu, cpu_lifetime })
}

/// What a round-trip sample measured.
#[derive(Clone, Debug)]
pub struct RoundTrips {
    /// Each timed round trip, ns, in order.
    pub trip_ns: Vec<u64>,
    /// The two children's CPU time inside their timed windows, summed.
    pub cpu: CpuTimes,
    /// The two children's CPU time over their whole lives.
    pub cpu_lifetime: CpuTimes,
}

/// One sample of `trips` timed round trips of `size`-byte messages: the
/// initiator sends on `there`, the responder echoes each message on `back`.
/// Panics and errors as [`stream`]'s. The calling process must have only one
/// thread.
pub fn round_trips(
    there: &dyn Mechanism,
    back: &dyn Mechanism,
    shared: &Shared,
    size: usize,
    trips: usize,
    limits: &Limits,
    context: &str,
) -> Result<RoundTrips, String> {
    assert!(trips <= MAX_TRIPS, "{trips} round trips, room for {MAX_TRIPS}");
    assert!((MIN_MESSAGE..=MAX_MESSAGE).contains(&size), "messages of {size} bytes");
    shared.reset();
    let rounds = (WARM_TRIPS + trips) as u64;
    let lifetime0 = CpuTimes::reaped_children();
    // SAFETY: the caller runs on one thread; the body touches only the
    // inherited mapping and the mechanisms under test.
    let responder = unsafe {
        spawn_deadline("responder", limits.deadline, None, &|| {
            let mut out = Vec::new();
            let mut cpu0 = CpuTimes::this_process();
            for seq in 0..rounds {
                if seq == WARM_TRIPS as u64 {
                    cpu0 = CpuTimes::this_process();
                }
                there.recv(&mut out);
                assert_eq!(read_stamp(&out, size, 1), (0, seq), "the responder got the wrong request");
                let echo = ByteBuf::from(std::mem::take(&mut out));
                back.send(&echo);
                out = echo.into_vec();
            }
            shared.cpu[1].0.store(CpuTimes::this_process().since(cpu0));
            shared.answered.0.store(rounds, Ordering::Relaxed);
            0
        })
    };
    // SAFETY: as for the responder.
    let initiator = unsafe {
        spawn_deadline("initiator", limits.deadline, None, &|| {
            let mut msg = ByteBuf::from(vec![0x5a; size]);
            let mut out = Vec::new();
            let trip = |msg: &mut ByteBuf, out: &mut Vec<u8>, seq: u64| {
                stamp(msg, 0, seq);
                there.send(msg);
                back.recv(out);
                assert_eq!(read_stamp(out, size, 1), (0, seq), "the initiator got the wrong reply");
            };
            // Fault the result slots in before the clock starts.
            for slot in &shared.trip_ns[..trips] {
                slot.store(0, Ordering::Relaxed);
            }
            for seq in 0..WARM_TRIPS as u64 {
                trip(&mut msg, &mut out, seq);
            }
            let cpu0 = CpuTimes::this_process();
            let mut last = Instant::now();
            for (k, slot) in shared.trip_ns[..trips].iter().enumerate() {
                trip(&mut msg, &mut out, (WARM_TRIPS + k) as u64);
                let now = Instant::now();
                slot.store((now - last).as_nanos() as u64, Ordering::Relaxed);
                last = now;
            }
            shared.cpu[0].0.store(CpuTimes::this_process().since(cpu0));
            shared.timed.0.store(trips as u64, Ordering::Relaxed);
            0
        })
    };
    let mut children = [initiator, responder];
    reap_checked(&mut children, limits, context)?;
    let cpu_lifetime = CpuTimes::reaped_children().since(lifetime0);
    // Visible: waitpid synchronises with the children's exits.
    let (timed, answered) = (shared.timed.0.load(Ordering::Relaxed), shared.answered.0.load(Ordering::Relaxed));
    if timed != trips as u64 || answered != rounds {
        return Err(format!(
            "the initiator timed {timed} of {trips} round trips, the responder answered {answered} of {rounds}"
        ));
    }
    if !there.is_drained() || !back.is_drained() {
        return Err("messages are left in a channel after the round trips".into());
    }
    let trip_ns = shared.trip_ns[..trips].iter().map(|s| s.load(Ordering::Relaxed)).collect();
    let cpu = shared.cpu[0].0.load().plus(shared.cpu[1].0.load());
    Ok(RoundTrips { trip_ns, cpu, cpu_lifetime })
}
