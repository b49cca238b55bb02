//! What sleeping in re-check slices costs a waiter: the CPU time a process
//! spends while one of its threads waits on an Event that nobody sets, for
//! a few seconds, against the same wait done with one plain futex sleep.
//!
//! `cargo bench --bench sleeper` (set `SLEEPER_SECS`, default 5). Waiters
//! sleep in slices of at most `shmsync::raw::RECHECK` (250 ms) so that a
//! process killed between a state change and its wake cannot strand them;
//! this bench is the measurement behind the README's figure for that cost.

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into valid storage.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// CPU per second of waiting, for `wait` run for `secs`.
fn per_second(secs: u64, wait: impl FnOnce(Duration)) -> Duration {
    let before = cpu_time();
    let start = Instant::now();
    wait(Duration::from_secs(secs));
    (cpu_time() - before).div_f64(start.elapsed().as_secs_f64())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench --no-run` and test discovery
    }
    let secs = std::env::var("SLEEPER_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let ev = shmsync::Event::new().expect("event");
    let ours = per_second(secs, |d| assert!(!ev.wait_timeout(d)));
    let word = AtomicU32::new(0);
    let plain = per_second(secs, |d| {
        let ts = libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: 0 };
        // SAFETY: a private futex wait on a live word with a relative timeout.
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, 0, &ts) };
    });
    println!("CPU time per second asleep, over {secs} s:");
    println!(
        "  shmsync Event::wait_timeout (slices up to {:?}):  {:>8.1} us",
        shmsync::raw::RECHECK,
        ours.as_secs_f64() * 1e6
    );
    println!("  one plain FUTEX_WAIT:                          {:>8.1} us", plain.as_secs_f64() * 1e6);
}
