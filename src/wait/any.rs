//! `wait_any` and `wait_all`: one `futex_waitv` sleep over many objects.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use super::Waitable;
use crate::error::{Error, Result};
use crate::raw::{Sleeper, Spin, SpinWait, Woke};
use crate::sys::futex;
use crate::sys::time::Deadline;

/// The most objects one call waits on (`futex_waitv` takes 128 words; the
/// async watcher keeps one for itself, and so the limit is the same here).
pub const MAX_OBJECTS: usize = futex::WAIT_MANY_MAX - 1;

/// Waits until one of `objects` is ready, or `timeout` passes (`None`:
/// forever). Returns the index of a ready object (the lowest, when several
/// are), or `Ok(None)` at the deadline, not before. Nothing is taken: take
/// what is ready with the object's own call, e.g. `try_acquire` or
/// `try_get`, which may still find it gone if another process was quicker.
///
/// The wait spins briefly (as every wait in the crate), then sleeps in one
/// `futex_waitv` over all the objects' words, in re-check slices of at most
/// [`raw::RECHECK`](crate::raw::RECHECK), so a process killed between
/// changing an object and waking its sleepers strands nobody.
///
/// `InvalidArgument` for no objects or more than [`MAX_OBJECTS`];
/// `Unsupported` on a kernel without `futex_waitv` (before Linux 5.16).
///
/// ```
/// use std::time::Duration;
/// let stop = shmsync::Event::new()?;
/// let jobs = shmsync::Queue::<u32>::new(4096)?;
/// jobs.put(&7)?;
/// let ready = shmsync::wait_any(&[&stop, &jobs.readable()], Some(Duration::from_secs(5)))?;
/// assert_eq!(ready, Some(1));
/// assert_eq!(jobs.try_get()?, Some(7));
/// # Ok::<(), shmsync::Error>(())
/// ```
pub fn wait_any(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Option<usize>> {
    wait(objects, timeout, Need::Any).map(|r| r.map(|i| i.unwrap_or(0)))
}

/// Waits until every one of `objects` is ready at once, or `timeout`
/// passes. `Ok(true)` when they all are, `Ok(false)` at the deadline. The
/// same limits and errors as [`wait_any`].
///
/// ```
/// use std::time::Duration;
/// let a = shmsync::Event::new()?;
/// let b = shmsync::Semaphore::new(1)?;
/// a.set();
/// assert!(shmsync::wait_all(&[&a, &b], Some(Duration::from_secs(5)))?);
/// # Ok::<(), shmsync::Error>(())
/// ```
pub fn wait_all(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<bool> {
    wait(objects, timeout, Need::All).map(|r| r.is_some())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Any,
    All,
}

/// The one wait: `Some(Some(i))` for a ready object (any), `Some(None)` when
/// all are ready (all), `None` at the deadline.
fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>, need: Need) -> Result<Option<Option<usize>>> {
    if objects.is_empty() || objects.len() > MAX_OBJECTS {
        return Err(Error::InvalidArgument {
            name: "wait_any".to_string(),
            detail: format!("wait on 1 to {MAX_OBJECTS} objects, not {}", objects.len()),
        });
    }
    let deadline = timeout.map(Deadline::after);
    let mut snapshots = [0u64; MAX_OBJECTS];
    for (s, o) in snapshots.iter_mut().zip(objects) {
        *s = o.snapshot();
    }
    let ready = |i: usize| objects[i].is_ready(snapshots[i]);
    let mut spin = SpinWait::new(Spin::Many, deadline.as_ref());
    let mut sleeper = Sleeper::new();
    let mut slept = false;
    loop {
        let found = match need {
            Need::Any => (0..objects.len()).find(|&i| ready(i)).map(Some),
            Need::All => (0..objects.len()).all(ready).then_some(None),
        };
        if let Some(found) = found {
            if slept {
                // The wake we took may have been meant for another sleeper.
                if let Some(i) = found {
                    objects[i].pass_on();
                }
            }
            return Ok(Some(found));
        }
        if deadline.as_ref().is_some_and(Deadline::has_passed) {
            return Ok(None);
        }
        if spin.spin() {
            continue;
        }
        let mut words = [(std::ptr::null::<AtomicU32>(), 0u32); MAX_OBJECTS];
        let mut n = 0;
        let mut armed = true;
        for (i, o) in objects.iter().enumerate() {
            match o.arm(snapshots[i]) {
                Some((word, expected)) => {
                    words[n] = (word as *const AtomicU32, expected);
                    n += 1;
                }
                // Ready now: for `any` that ends the wait; for `all`, it just
                // needs no word.
                None if need == Need::Any => {
                    armed = false;
                    break;
                }
                None => {}
            }
        }
        if !armed || n == 0 {
            continue;
        }
        slept = true;
        match sleeper.sleep_many(&words[..n], deadline.as_ref()) {
            None => {
                return Err(Error::Unsupported {
                    detail: "waiting on several objects needs futex_waitv (Linux 5.16 or later)".to_string(),
                })
            }
            Some(Woke::Deadline | Woke::Signalled | Woke::Recheck) => {}
        }
    }
}
