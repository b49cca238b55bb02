//! `Semaphore` and `BoundedSemaphore`: named counting semaphores (Python's).

use std::time::Duration;

use super::named_lifecycle;
use crate::error::{Error, Result};
use crate::raw::{RawSemaphore, MAX_VALUE};
use crate::segment::{Kind, Layout, Segment};
use crate::Builder;

/// The parameters of a semaphore: its initial value (default 1, as in Python).
#[derive(Clone, Copy, Debug)]
pub struct SemaphoreParams {
    value: u32,
}

impl Default for SemaphoreParams {
    fn default() -> Self {
        SemaphoreParams { value: 1 }
    }
}

/// One unit taken from a [`Semaphore`] or [`BoundedSemaphore`]. Dropping it
/// releases the unit; [`forget`](Self::forget) keeps it taken.
#[must_use = "if unused the unit is released at once"]
#[derive(Debug)]
pub struct Permit<'a> {
    sem: &'a RawSemaphore,
    name: &'a str,
}

impl Permit<'_> {
    /// Keeps the unit taken, so that another process may `release` it later.
    pub fn forget(self) {
        std::mem::forget(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // Only possible if someone released this unit already (a forgotten
        // permit released elsewhere), pushing a bounded semaphore to its max.
        if self.sem.release().is_err() {
            log::warn!("shmsync: semaphore '{}' was already at its maximum when a permit was dropped", self.name);
        }
    }
}

fn validate(name: &str, params: &SemaphoreParams) -> Result<()> {
    if params.value > MAX_VALUE {
        return Err(Error::InvalidArgument {
            name: name.to_string(),
            detail: format!("a semaphore value must be at most {MAX_VALUE} (i32::MAX), not {}", params.value),
        });
    }
    Ok(())
}

macro_rules! named_semaphore {
    ($ty:ident, $kind:expr, $bounded:expr) => {
        impl Layout for $ty {
            type Object = RawSemaphore;
            type Params = SemaphoreParams;
            const KIND: Kind = $kind;

            fn validate(name: &str, params: &SemaphoreParams) -> Result<()> {
                validate(name, params)
            }

            fn check(sem: &RawSemaphore, _trailing: usize) -> std::result::Result<(), String> {
                sem.check()
            }

            unsafe fn init(object: *mut RawSemaphore, _trailing: usize, params: &SemaphoreParams) -> Result<()> {
                let max = $bounded.then_some(params.value);
                // SAFETY: forwarded from the caller of Layout::init.
                unsafe { RawSemaphore::init(object, params.value, max) }
                    .map_err(|detail| Error::InvalidArgument { name: String::new(), detail })
            }
        }

        named_lifecycle!($ty { value: u32 });

        impl Builder<$ty> {
            /// The initial value, `0..=i32::MAX` (default 1).
            pub fn value(mut self, value: u32) -> Self {
                self.params_mut().value = value;
                self
            }
        }

        impl $ty {
            pub(crate) fn raw(&self) -> &RawSemaphore {
                self.seg.object()
            }

            pub(crate) fn permit(&self) -> Permit<'_> {
                Permit { sem: self.raw(), name: self.name() }
            }

            /// Blocks until a unit is free and takes it. The permit releases
            /// it when dropped.
            #[inline]
            pub fn acquire(&self) -> Permit<'_> {
                self.raw().acquire();
                self.permit()
            }

            /// Takes a unit if one is free, without blocking.
            #[inline]
            pub fn try_acquire(&self) -> Option<Permit<'_>> {
                self.raw().try_acquire().then(|| self.permit())
            }

            /// Takes a unit, waiting at most `timeout`; `None` on timeout.
            pub fn try_acquire_for(&self, timeout: Duration) -> Option<Permit<'_>> {
                self.raw().acquire_timeout(timeout).then(|| self.permit())
            }

            /// The units free now (a snapshot).
            pub fn value(&self) -> u32 {
                self.raw().value()
            }
        }
    };
}

/// A named, cross-process counting semaphore (Python's
/// `multiprocessing.Semaphore`). Values go up to `i32::MAX`.
///
/// ```
/// let sem = shmsync::Semaphore::new(2)?;
/// let a = sem.acquire();
/// let b = sem.acquire();
/// assert!(sem.try_acquire().is_none());
/// drop(a);
/// assert_eq!(sem.value(), 1);
/// b.forget(); // stays taken; anyone may release it later
/// sem.release()?;
/// assert_eq!(sem.value(), 2);
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct Semaphore {
    seg: Segment<RawSemaphore>,
}

/// A named semaphore that refuses to be released above its initial value
/// (Python's `multiprocessing.BoundedSemaphore`).
///
/// ```
/// let sem = shmsync::BoundedSemaphore::new(1)?;
/// assert!(matches!(sem.release(), Err(shmsync::Error::TooManyReleases { .. })));
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct BoundedSemaphore {
    seg: Segment<RawSemaphore>,
}

named_semaphore!(Semaphore, Kind::Semaphore, false);
named_semaphore!(BoundedSemaphore, Kind::BoundedSemaphore, true);

impl Semaphore {
    /// Returns a unit and wakes one waiter. No syscall when nobody waits.
    /// `Err(TooManyReleases)` only at `i32::MAX`.
    #[inline]
    pub fn release(&self) -> Result<()> {
        self.raw().release().map_err(|e| Error::TooManyReleases { name: self.name().to_string(), max: e.max })
    }
}

impl BoundedSemaphore {
    /// Returns a unit and wakes one waiter. `Err(TooManyReleases)` at the
    /// maximum (the initial value), decided atomically: of processes racing
    /// to release the last missing units, exactly as many succeed as were
    /// missing.
    #[inline]
    pub fn release(&self) -> Result<()> {
        self.raw().release().map_err(|e| Error::TooManyReleases { name: self.name().to_string(), max: e.max })
    }

    /// The maximum value, which is the initial value.
    pub fn max_value(&self) -> u32 {
        self.raw().max()
    }
}
