//! Crash points: the named steps between a shared state change and the wake
//! or commit that follows it.
//!
//! A process may be SIGKILLed between any two instructions. The places where
//! that matters most, where one process has published a change that others
//! wait for but has not yet woken them, or has been woken for something it
//! has not yet taken, are marked with [`crash_point!`]. With the `failpoints`
//! feature each mark is a `fail` crate point of the same name, so a test can
//! kill the process exactly there (see `tests/crash_points.rs`); without it
//! the macro expands to nothing, so the marks cost nothing.
//!
//! [`POINTS`] lists every mark in the crate; the crash-point suite checks
//! that each one appears in the source and that a test kills a process at it.

/// Marks a crash point named `$name` (a string literal listed in [`POINTS`]).
macro_rules! crash_point {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        $crate::crash::hit($name);
    }};
}

/// Evaluates the `fail` point `name`: whatever action a test configured for
/// it (typically a callback that SIGKILLs this process) runs here.
#[cfg(feature = "failpoints")]
#[inline(never)]
pub(crate) fn hit(name: &'static str) {
    fail::fail_point!(name);
}

/// Every crash point in the crate, one list per module that has any.
/// Names read `object.operation.step`: the step just completed when the
/// point is hit.
pub const POINTS: &[&[&str]] = &[
    crate::segment::CRASH_POINTS,
    crate::raw::CRASH_POINTS[0],
    crate::raw::CRASH_POINTS[1],
    crate::raw::CRASH_POINTS[2],
    crate::raw::CRASH_POINTS[3],
    crate::raw::CRASH_POINTS[4],
    crate::raw::CRASH_POINTS[5],
    crate::data::QUEUE_CRASH_POINTS,
    crate::data::DICT_CRASH_POINTS,
    crate::data::pool::CRASH_POINTS,
    ETCD_CRASH_POINTS,
];

/// The `etcd` feature's points (marked in `src/etcd/`, killed at in
/// `tests/etcd.rs`). Declared here, in every build, because the
/// bookkeeping test reads the source whichever features are on.
const ETCD_CRASH_POINTS: &[&str] = &[
    // The acquisition transaction committed; no guard exists yet.
    "etcd.lock.acquired",
    // The slot key is ours; no permit exists yet.
    "etcd.semaphore.acquired",
];
