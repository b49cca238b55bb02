//! The one spin policy: how long a waiter keeps checking before it sleeps.
//!
//! A kernel wake across cores costs tens of microseconds on a VM (measured
//! here: 45–57 µs per round trip), while a peer that is running answers in
//! well under one. So a waiter first spins with `pause`, briefly; then it
//! yields its CPU a few times, which is what lets a peer on the *same* core
//! run and answer; only then does it sleep on the futex.
//!
//! When the calling thread may run on one CPU only (pinned), spinning cannot
//! help — the peer cannot run until we stop — so the spin phase is skipped
//! and the waiter goes straight to yielding.
//!
//! The limits were chosen with `cargo bench --bench handoff`: they keep a
//! cross-core ping-pong on the spinning path (round trips under 1 µs instead
//! of ~55 µs through the kernel on this 2-vCPU VM). The price is CPU: a
//! wait that ends up sleeping first burns about `SPIN_STEPS` doublings of
//! `pause` plus `YIELD_STEPS` calls to `sched_yield` — measured on an AMD
//! EPYC VM, a median 70 µs (at most ~140 µs) of CPU per such wait, about
//! one to two times what a kernel wake costs here, which is the classic
//! bound for spinning before blocking.

use crate::sys::proc;

/// Doublings of the pause loop: 1 + 2 + ... + 2^(SPIN_STEPS-1) pauses in all
/// (2047 for 11), some 10–60 µs depending on the CPU's `pause` latency.
const SPIN_STEPS: u32 = 11;
/// `sched_yield` calls after the spinning, before sleeping.
const YIELD_STEPS: u32 = 8;

/// A bounded spin-then-yield countdown for one wait.
pub(crate) struct SpinWait {
    step: u32,
    /// Whether spinning can help; looked up at the first spin, so a waiter
    /// that never spins pays nothing.
    parallel: Option<bool>,
}

impl SpinWait {
    /// A new countdown. Costs nothing until the first `spin`.
    pub(crate) fn new() -> SpinWait {
        SpinWait { step: 0, parallel: None }
    }

    /// Spins or yields once. Returns `false` when the budget is spent and the
    /// caller should sleep on its futex.
    pub(crate) fn spin(&mut self) -> bool {
        let parallel = *self.parallel.get_or_insert_with(proc::can_run_in_parallel);
        if parallel && self.step < SPIN_STEPS {
            for _ in 0..1u32 << self.step {
                std::hint::spin_loop();
            }
        } else if self.step < SPIN_STEPS + YIELD_STEPS {
            std::thread::yield_now();
        } else {
            return false;
        }
        self.step += 1;
        true
    }
}
