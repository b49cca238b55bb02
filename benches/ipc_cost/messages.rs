//! Section 4: how many messages per second one process streams to another,
//! swept over payload sizes, plotted as a line per mechanism.
//!
//! Mechanisms (`common::messages::Kind` says exactly how each sends and
//! receives), at 64 B, 1 KiB, 4 KiB, 16 KiB, 256 KiB and 1 MiB:
//! - `shmsync Queue<ByteBuf>`: the queue with serde_bytes messages;
//! - `shmsync Connection`: `shmsync::pipe()`, `send_bytes` / `recv_bytes`;
//! - `tuned pipe`: the strongest kernel baseline: one non-blocking `writev`
//!   per frame, one `read` of whatever has arrived (often many frames),
//!   `poll` on `EAGAIN`, a pipe buffer as large as the queue's ring (at most
//!   `pipe-max-size`);
//! - `Unix socket, framed (blocking)`: the style of Python's `Connection`:
//!   blocking `sendmsg` of header and payload, two exact `recv` loops;
//! - `ipc-channel`: `ipc::bytes_channel()`;
//! - Python's `multiprocessing.Queue` (`put`/`get` of `bytes`) and `Pipe`
//!   (`send_bytes`/`recv_bytes`), beside our Queue and Connection.
//!
//! And at the Queue's target sizes only: `shmsync Queue<Vec<u8>>` (serde's
//! generic sequence, the type a user reaches for first) at 64 B and 4 KiB,
//! and the queue with 3 producers and 3 consumers (aggregate rate) at 64 B,
//! next to its 1-to-1 row, through the same harness.
//!
//! Every mechanism sends the same bytes and the same number of messages at a
//! given size; `common::messages::stream` checks every message and the
//! totals. CPU/op is all the processes' CPU time per message inside the
//! timed window. No per-message percentiles here: a clock read per message
//! would cost the fastest mechanism about a tenth of its rate; the round
//! trips (section 5) time each message instead.

use std::time::Duration;

use crate::common::messages::{stream, Kind, Limits, Mechanism, Shared, StreamSpec};
use crate::common::Mapping;
use crate::model::{size_label, Cpu, Key, PlotKind, Probe, Sample, Section, Setup, Unit};
use crate::python;

pub static SECTION: Section = Section {
    slug: "messages",
    title: "Message rate between two processes (payload sweep)",
    about: "A forked producer streams messages to a forked consumer (both unpinned) as fast as it can; \
            messages per second, from the start signal to the last message. Every message is checked \
            (length, producer, sequence number, order), and so are the totals. The **tuned pipe** is the \
            strongest kernel baseline: one non-blocking `writev` per length-prefixed frame, one `read` of \
            whatever has arrived (often many frames at once), `poll` on `EAGAIN`, and a pipe buffer as large \
            as the queue's ring (256 KiB; 1 MiB, the unprivileged maximum, for the two largest sizes, where \
            the ring is 1 and 4 MiB). The framed Unix socket is the blocking style Python's `Connection` \
            uses: one `sendmsg`, then exact `recv`s of header and payload. **× tuned pipe** is a row's rate \
            over the tuned pipe's at the same size (above 1: faster). CPU/op is every process's CPU time per \
            message.",
    plot: PlotKind::SizeSweep,
    baseline: Some(TUNED_PIPE),
    setup,
};

/// The name of the baseline row.
pub const TUNED_PIPE: &str = "tuned pipe";

/// How long a child of a message sample may run before its `alarm` kills it,
/// and how long after that the parent waits before killing it.
pub const LIMITS: Limits = Limits { deadline: Duration::from_secs(30), grace: Duration::from_secs(5) };

/// The payload sizes and the messages per sample at each, full and quick
/// (the same for every mechanism at that size).
const SIZES: [(usize, u64, u64); 6] = [
    (64, 50_000, 2_000),
    (1 << 10, 40_000, 2_000),
    (4 << 10, 20_000, 1_000),
    (16 << 10, 8_000, 400),
    (256 << 10, 600, 40),
    (1 << 20, 150, 12),
];

/// The mechanisms of the sweep and their names in the report.
pub const MECHANISMS: [(Kind, &str); 5] = [
    (Kind::QueueByteBuf, QUEUE),
    (Kind::Connection, CONNECTION),
    (Kind::TunedPipe, TUNED_PIPE),
    (Kind::SocketFramed, "Unix socket, framed (blocking, as Python's Connection)"),
    (Kind::IpcChannel, "ipc-channel"),
];

pub const QUEUE: &str = "shmsync Queue<ByteBuf>";
pub const CONNECTION: &str = "shmsync Connection";

/// Python rows: the script's name for the mechanism, its row, ours.
pub const PYTHON: [(&str, &str, &str); 2] =
    [("queue", "Python multiprocessing.Queue", QUEUE), ("pipe", "Python multiprocessing.Pipe", CONNECTION)];

/// Only at the Queue's target sizes: `Queue<Vec<u8>>`, through `put`/`get`
/// and through the zero-copy `put_with`/`get_with`.
const VEC_SIZES: [usize; 2] = [64, 4 << 10];
/// Only at 64 B: the queue with this many producers and as many consumers.
const MPMC: usize = 3;

/// One probe: a mechanism at one message size, with `producers` producers
/// and as many consumers.
struct RateProbe {
    mechanism: Box<dyn Mechanism>,
    name: String,
    size: usize,
    producers: usize,
    /// Messages per sample in full and quick mode, all producers together.
    count: (u64, u64),
    map: Mapping<Shared>,
}

impl Probe for RateProbe {
    fn key(&self) -> Key {
        Key { section: SECTION.slug, mechanism: self.name.clone(), variant: size_label(self.size) }
    }
    fn unit(&self) -> Unit {
        Unit::MsgsPerSec
    }
    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        let total = if quick { self.count.1 } else { self.count.0 };
        let spec =
            StreamSpec { size: self.size, producers: self.producers, per_producer: total / self.producers as u64 };
        let out = stream(&*self.mechanism, self.map.shared(), spec, &LIMITS, "")?;
        if out.span.is_zero() {
            return Err("the stream took no time".into());
        }
        let messages = spec.messages();
        Ok(Sample::new(messages as f64 / out.span.as_secs_f64()).with_cpu(Cpu::checked(
            out.cpu,
            out.cpu_lifetime,
            messages,
        )?))
    }
}

fn setup(quick: bool) -> Setup {
    let mut out = Setup::default();
    let py = python::session(&mut out.notes);
    let mut add = |kind: Kind, name: String, size: usize, producers: usize, count: (u64, u64)| {
        let mechanism = kind.make(size);
        out.probes.push(Box::new(RateProbe { mechanism, name, size, producers, count, map: Mapping::new() }));
    };
    for (size, full, short) in SIZES {
        for (kind, name) in MECHANISMS {
            add(kind, name.to_string(), size, 1, (full, short));
        }
        if VEC_SIZES.contains(&size) {
            add(Kind::QueueVec, "shmsync Queue<Vec<u8>>".to_string(), size, 1, (full, short));
            add(Kind::QueueZeroCopy, "shmsync Queue put_with/get_with".to_string(), size, 1, (full, short));
        }
        if size == 64 {
            let name = format!("{QUEUE}, {MPMC} producers → {MPMC} consumers");
            add(Kind::QueueByteBuf, name, size, MPMC, (full, short));
        }
    }
    if let Some(py) = &py {
        for (size, full, short) in SIZES {
            let n = if quick { short } else { full };
            for (kind, name, ours) in PYTHON {
                let args = ["stream".to_string(), kind.to_string(), size.to_string(), n.to_string()];
                out.probes.push(py.probe(SECTION.slug, name, &size_label(size), Unit::MsgsPerSec, ours, &args));
            }
        }
    }
    out
}
