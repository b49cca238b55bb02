//! What waiting on many objects and waiting from async code cost, each
//! beside its baseline in the same run (run alone: `cargo bench --bench wait`;
//! `WAIT_BENCH_QUICK=1` for a smoke run):
//!
//! 1. round trips between two processes pinned to different cores, and
//!    unpinned: one `Event` each way (`wait`), against `wait_any` over 64
//!    events of which the peer sets one at a time (target: at most 1.5x);
//! 2. round trips between two processes each running a tokio
//!    current-thread runtime: one `Event` each way awaited with
//!    `wait_async`, against a one-byte tokio `UnixStream` ping-pong (target:
//!    at most 1.0x), with the CPU time (user + system, both processes) per
//!    round trip;
//! 3. idle: the CPU a process uses over 5 s with 10,000 pending futures
//!    (1,000 events, 10 tasks each) and nothing happening.
//!
//! Each figure is the median of several interleaved rounds; the machine is
//! shared, so read the ratios.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use shmsync::{wait_any, Event, Waitable};

const DEADLINE: Duration = Duration::from_secs(30);

fn quick() -> bool {
    std::env::var_os("WAIT_BENCH_QUICK").is_some()
}

/// User plus system CPU time of this process and its reaped children.
fn cpu_time() -> Duration {
    let micros = |who| {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes a rusage into valid storage.
        let u = unsafe {
            libc::getrusage(who, usage.as_mut_ptr());
            usage.assume_init()
        };
        let t = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        t(u.ru_utime) + t(u.ru_stime)
    };
    Duration::from_micros(micros(libc::RUSAGE_SELF) + micros(libc::RUSAGE_CHILDREN))
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity
    // only read and write it and this thread's affinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Runs `peer` in a forked child (exiting 0 on success) while `main` runs
/// here; returns `main`'s result and the CPU both spent.
fn with_peer<R>(peer: impl FnOnce() -> bool, main: impl FnOnce() -> R) -> (R, Duration) {
    let before = cpu_time();
    // SAFETY: the child runs `peer` and leaves with _exit; the bench is
    // single-threaded at this point (no runtime, no watcher yet in it).
    let pid = match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            let ok = peer();
            // SAFETY: ends the child without running the parent's handlers.
            unsafe { libc::_exit(i32::from(!ok)) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    let r = main();
    let status = nix::sys::wait::waitpid(pid, None).expect("waitpid");
    assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0), "the peer failed");
    (r, cpu_time() - before)
}

/// Event ping-pong: `rounds` round trips; the peer waits with `wait_any`
/// over `width` events (1: a plain `wait_timeout`).
fn event_round_trips(rounds: u32, width: usize, pinned: bool) -> Duration {
    let pings: Vec<Event> = (0..width).map(|_| Event::new().unwrap()).collect();
    let pong = Event::new().unwrap();
    let (elapsed, _) = with_peer(
        || {
            if pinned {
                pin(1);
            }
            let objects: Vec<&dyn Waitable> = pings.iter().map(|e| e as &dyn Waitable).collect();
            for r in 0..rounds as usize {
                let i = if width == 1 {
                    pings[0].wait_timeout(DEADLINE).then_some(0)
                } else {
                    wait_any(&objects, Some(DEADLINE)).ok().flatten()
                };
                if i != Some(r % width) {
                    return false;
                }
                pings[r % width].clear();
                pong.set();
            }
            true
        },
        || {
            if pinned {
                pin(0);
            }
            let start = Instant::now();
            for r in 0..rounds as usize {
                pings[r % width].set();
                assert!(pong.wait_timeout(DEADLINE), "the peer did not answer");
                pong.clear();
            }
            start.elapsed()
        },
    );
    if pinned {
        // Undo the pin for the next measurement.
        // SAFETY: as in `pin`, with every CPU set.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for cpu in 0..libc::CPU_SETSIZE as usize {
                libc::CPU_SET(cpu, &mut set);
            }
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
    elapsed / rounds
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Async Event ping-pong between two tokio runtimes: (per round trip, CPU
/// per round trip).
fn async_event_round_trips(rounds: u32) -> (Duration, Duration) {
    let (ping, pong) = (Event::new().unwrap(), Event::new().unwrap());
    let (elapsed, cpu) = with_peer(
        || {
            runtime().block_on(async {
                for _ in 0..rounds {
                    if tokio::time::timeout(DEADLINE, ping.wait_async()).await.is_err() {
                        return false;
                    }
                    ping.clear();
                    pong.set();
                }
                true
            })
        },
        || {
            runtime().block_on(async {
                let start = Instant::now();
                for _ in 0..rounds {
                    ping.set();
                    tokio::time::timeout(DEADLINE, pong.wait_async()).await.expect("no answer");
                    pong.clear();
                }
                start.elapsed()
            })
        },
    );
    (elapsed / rounds, cpu / rounds)
}

/// One-byte tokio UnixStream ping-pong: (per round trip, CPU per round trip).
fn async_socket_round_trips(rounds: u32) -> (Duration, Duration) {
    let (a, b) = UnixStream::pair().unwrap();
    let (elapsed, cpu) = with_peer(
        || {
            drop(a.try_clone());
            runtime().block_on(async {
                b.set_nonblocking(true).unwrap();
                let mut s = tokio::net::UnixStream::from_std(b.try_clone().unwrap()).unwrap();
                let mut byte = [0u8; 1];
                for _ in 0..rounds {
                    if tokio::io::AsyncReadExt::read_exact(&mut s, &mut byte).await.is_err()
                        || tokio::io::AsyncWriteExt::write_all(&mut s, &byte).await.is_err()
                    {
                        return false;
                    }
                }
                true
            })
        },
        || {
            runtime().block_on(async {
                a.set_nonblocking(true).unwrap();
                let mut s = tokio::net::UnixStream::from_std(a.try_clone().unwrap()).unwrap();
                let mut byte = [7u8; 1];
                let start = Instant::now();
                for _ in 0..rounds {
                    tokio::io::AsyncWriteExt::write_all(&mut s, &byte).await.unwrap();
                    tokio::io::AsyncReadExt::read_exact(&mut s, &mut byte).await.unwrap();
                }
                start.elapsed()
            })
        },
    );
    (elapsed / rounds, cpu / rounds)
}

/// CPU used over `secs` by this process with `futures` pending futures
/// spread over `events` events.
fn idle_cpu(futures: usize, events: usize, secs: u64) -> Duration {
    let evs: Vec<Event> = (0..events).map(|_| Event::new().unwrap()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cpu = rt.block_on(async {
        let evs = &evs;
        let tasks: Vec<_> = (0..futures).map(|i| evs[i % events].wait_async()).collect();
        let all = futures_join(tasks);
        let measure = async {
            // Let every future register, then measure a quiet stretch.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let before = cpu_time();
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let used = cpu_time() - before;
            evs.iter().for_each(Event::set);
            used
        };
        let (used, ()) = tokio::join!(measure, all);
        used
    });
    drop(rt);
    cpu
}

/// Awaits every future (no extra crate for a join_all).
async fn futures_join<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pinned.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pinned.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort_unstable();
    xs[xs.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (rounds, reps, idle_secs) = if quick() { (200, 3, 1) } else { (5_000, 7, 5) };
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let us = |d: Duration| d.as_secs_f64() * 1e6;

    println!("Round trips between two processes (median of {reps} interleaved rounds of {rounds}):");
    for pinned in [true, false] {
        let (mut one, mut many) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            one.push(event_round_trips(rounds, 1, pinned));
            many.push(event_round_trips(rounds, 64, pinned));
        }
        let (one, many) = (median(one), median(many));
        let place = if pinned { "cross-core" } else { "unpinned" };
        println!(
            "  {place:<10}  Event::wait {:>8.2} us   wait_any over 64 {:>8.2} us   ratio {:.2}x (target <= 1.5x)",
            us(one),
            us(many),
            ratio(many, one)
        );
    }

    let (mut ev, mut sock) = (Vec::new(), Vec::new());
    let async_rounds = rounds / 5;
    for _ in 0..reps {
        ev.push(async_event_round_trips(async_rounds));
        sock.push(async_socket_round_trips(async_rounds));
    }
    let (ev_t, ev_cpu) = (median(ev.iter().map(|x| x.0).collect()), median(ev.iter().map(|x| x.1).collect()));
    let (so_t, so_cpu) = (median(sock.iter().map(|x| x.0).collect()), median(sock.iter().map(|x| x.1).collect()));
    println!("Async round trips between two tokio current-thread runtimes ({async_rounds} per round):");
    println!("  Event::wait_async      {:>8.2} us   CPU {:>8.2} us per round trip", us(ev_t), us(ev_cpu));
    println!("  tokio UnixStream 1 B   {:>8.2} us   CPU {:>8.2} us per round trip", us(so_t), us(so_cpu));
    println!("  ratio {:.2}x (target <= 1.0x), CPU ratio {:.2}x", ratio(ev_t, so_t), ratio(ev_cpu, so_cpu));

    let idle = idle_cpu(10_000, 1_000, idle_secs);
    println!(
        "Idle: 10,000 pending futures on 1,000 events, {idle_secs} s: {:.2} ms of CPU ({:.4}% of one core)",
        idle.as_secs_f64() * 1e3,
        idle.as_secs_f64() * 100.0 / idle_secs as f64
    );
}
