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
use std::time::{Duration, Instant};

use crate::common::messages::{stream, Kind, Limits, Mechanism, Shared};
use crate::common::Mapping;
use crate::model::{Key, Probe, Sample, Section, Unit};

/// How long a child of a message sample may run before its `alarm` kills it,
/// and how long after that the parent waits before killing it.
const LIMITS: Limits = Limits { deadline: Duration::from_secs(30), grace: Duration::from_secs(5) };

/// The message sizes, their variant labels, and the messages per sample in
/// full and quick mode (the same for every mechanism at that size).
const SIZES: [(&str, usize, u64, u64); 2] = [("64 B", 64, 50_000, 2_000), ("4 KiB", 4096, 20_000, 1_000)];

/// The mechanisms and their names in the report.
const MECHANISMS: [(Kind, &str); 4] = [
    (Kind::Queue, "shmsync Queue"),
    (Kind::Connection, "shmsync Connection"),
    (Kind::SocketFramed, "Unix socket (framed)"),
    (Kind::IpcChannel, "ipc-channel"),
];

/// One probe: a mechanism at one message size.
struct RateProbe {
    mechanism: Box<dyn Mechanism>,
    name: &'static str,
    variant: &'static str,
    size: usize,
    /// Messages per sample in full and quick mode.
    count: (u64, u64),
    map: Mapping<Shared>,
}

impl RateProbe {
    /// Streams one untimed and then `iters` timed messages from a forked
    /// producer to a forked consumer and returns the consumer's span. A
    /// failed child panics, which the harness turns into the probe's failure.
    fn stream(&self, iters: u64) -> Result<Duration, String> {
        let span = stream(&*self.mechanism, self.map.shared(), self.size, iters, &LIMITS, "")?;
        if span.is_zero() {
            return Err("the consumer reported no time".into());
        }
        Ok(span)
    }
}

impl Probe for RateProbe {
    fn key(&self) -> Key {
        Key { section: Section::Messages, mechanism: self.name.into(), variant: self.variant.into() }
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
        for (kind, name) in MECHANISMS {
            let probe =
                RateProbe { mechanism: kind.make(), name, variant, size, count: (full, quick), map: Mapping::new() };
            probes.push(Box::new(probe));
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
