//! A value one thread at a time takes out and puts back, waiting for it
//! with a deadline: the receive state of a `Connection`, the pending
//! handshakes of a `Listener`. A thread that holds it may block in a
//! syscall without holding any lock, so another thread's timed call still
//! ends at its own deadline.

use std::sync::{Condvar, Mutex, MutexGuard};

use crate::sys::time::Deadline;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the slot leaves a plain value behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A value one thread at a time takes out and puts back, waiting for it
/// with a deadline. No syscall when nobody waits.
pub(crate) struct Gate<T> {
    slot: Mutex<(Option<T>, usize)>,
    returned: Condvar,
}

/// The taken value; dropping it puts it back.
pub(crate) struct Pass<'a, T> {
    gate: &'a Gate<T>,
    value: Option<T>,
}

impl<T> Gate<T> {
    pub(crate) fn new(value: T) -> Gate<T> {
        Gate { slot: Mutex::new((Some(value), 0)), returned: Condvar::new() }
    }

    /// Takes the value, waiting until `deadline`; `None` if it is still
    /// taken then.
    pub(crate) fn enter(&self, deadline: Option<&Deadline>) -> Option<Pass<'_, T>> {
        let mut slot = lock(&self.slot);
        loop {
            if let Some(value) = slot.0.take() {
                return Some(Pass { gate: self, value: Some(value) });
            }
            slot.1 += 1;
            slot = match deadline {
                None => self.returned.wait(slot).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.remaining();
                    if left.is_zero() {
                        slot.1 -= 1;
                        return None;
                    }
                    self.returned.wait_timeout(slot, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
            slot.1 -= 1;
        }
    }
}

impl<T> std::ops::Deref for Pass<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().unwrap_or_else(|| unreachable!("a pass holds its value until dropped"))
    }
}

impl<T> std::ops::DerefMut for Pass<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().unwrap_or_else(|| unreachable!("a pass holds its value until dropped"))
    }
}

impl<T> Drop for Pass<'_, T> {
    fn drop(&mut self) {
        let mut slot = lock(&self.gate.slot);
        slot.0 = self.value.take();
        if slot.1 > 0 {
            self.gate.returned.notify_one();
        }
    }
}
