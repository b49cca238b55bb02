//! How many messages per second a `Listener`/`Client` connection carries
//! from one process to another, against what it is built on: over a Unix
//! socket, the socketpair `Connection` of `shmsync::pipe()`; over TCP
//! loopback, a plain `std::net::TcpStream` carrying the same frames.
//!
//! Run: `cargo bench --bench connection` (about half a minute). One size:
//! `cargo bench --bench connection -- connection_rate/64B`.
//!
//! Groups `connection_rate/64B` and `connection_rate/4KiB`; one criterion
//! iteration is one message, so `thrpt` is messages per second. Mechanisms:
//! - `socketpair_Connection`: `shmsync::pipe()`, `send_bytes`/`recv_bytes`
//!   (the baseline for the Unix rows);
//! - `unix_Listener_Client`: a `Listener` on an abstract Unix name and a
//!   `Client` connected to it with an authkey, `send_bytes`/`recv_bytes`;
//! - `tcp_Listener_Client`: the same over TCP on 127.0.0.1;
//! - `tcp_stream_framed`: a plain `TcpStream` pair (`TCP_NODELAY`, as the
//!   connection's) carrying `Connection`'s frames, an 8-byte little-endian
//!   length and the payload, written with one `writev(2)` and read with two
//!   exact reads (the baseline for the TCP row).
//!
//! Each sample is `benches/common/messages.rs`'s [`stream`]: a forked
//! producer streams to a forked consumer, every message checked on arrival
//! and counted. The connections are made (and authenticated) before the
//! forks, so the handshake is not timed: it happens once per connection.
//!
//! Reading the numbers: the targets are `unix_Listener_Client` at least
//! 0.9x `socketpair_Connection`, and `tcp_Listener_Client` at least 0.9x
//! `tcp_stream_framed`, in the same run. Once authenticated, a connection
//! is a `Connection` over a stream socket like any other, so the Unix rows
//! should be level; over TCP the difference is the buffered reader against
//! two exact reads per message.

#![warn(clippy::undocumented_unsafe_blocks)]

mod common;

use std::time::Duration;

use common::connections::{listener_pair, TcpFramed};
use common::messages::{stream, Kind, Limits, Mechanism, Shared, StreamSpec};
use common::{Mapping, DEADLINE};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

const SIZES: [(&str, usize); 2] = [("64B", 64), ("4KiB", 4096)];

fn connection_rate(c: &mut Criterion) {
    let map = Mapping::<Shared>::new();
    let shared = map.shared();
    let name = format!("@shmsync-bench-{}", std::process::id());
    let mechanisms: Vec<(&str, Box<dyn Mechanism>)> = vec![
        ("socketpair_Connection", Kind::Connection.make(4096)),
        ("unix_Listener_Client", Box::new(listener_pair(&name))),
        ("tcp_stream_framed", Box::new(TcpFramed::new())),
        ("tcp_Listener_Client", Box::new(listener_pair("127.0.0.1:0"))),
    ];
    let limits = Limits { deadline: DEADLINE, grace: Duration::from_secs(10) };
    for (label, size) in SIZES {
        let mut group = c.benchmark_group(format!("connection_rate/{label}"));
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        group.throughput(Throughput::Elements(1));
        for (name, m) in &mechanisms {
            let m = &**m;
            group.bench_function(*name, |b| {
                b.iter_custom(|iters| {
                    let what = format!("{name} with {iters} messages of {size} bytes");
                    let spec = StreamSpec { size, producers: 1, per_producer: iters.max(1) };
                    let out = stream(m, shared, spec, &limits, &format!("{what}: "))
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    out.span.mul_f64(iters as f64 / spec.messages() as f64)
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, connection_rate);
criterion_main!(benches);
