//! `Barrier`: a named, reusable meeting point for a fixed number of parties
//! (Python's `Barrier`).

use std::time::Duration;

use super::named_lifecycle;
use crate::error::{Error, Result};
use crate::raw::{BarrierWaitResult, RawBarrier, MAX_PARTIES};
use crate::segment::{Kind, Layout, Segment};
use crate::Builder;

/// The parameters of a barrier: how many parties meet.
#[derive(Clone, Copy, Debug, Default)]
pub struct BarrierParams {
    parties: u32,
}

/// A named, cross-process barrier (Python's `multiprocessing.Barrier`).
///
/// `parties` processes (or threads) call [`wait`](Self::wait); none returns
/// until all have arrived. Then all go on, and the barrier is ready for the
/// next generation. The last to arrive is the leader.
///
/// A party that dies *after* arriving still counts. A party that never comes
/// can only be caught by a timeout, so robust code uses
/// [`wait_timeout`](Self::wait_timeout): a timeout breaks the barrier for
/// every waiter (`Err(BrokenBarrier)`), until [`reset`](Self::reset).
///
/// ```
/// use std::time::Duration;
/// let barrier = shmsync::Barrier::new(2)?;
/// std::thread::scope(|s| {
///     let other = s.spawn(|| barrier.wait_timeout(Duration::from_secs(10)).unwrap());
///     let me = barrier.wait_timeout(Duration::from_secs(10)).unwrap();
///     let other = other.join().unwrap();
///     assert!(me.is_leader() != other.is_leader()); // exactly one leader
/// });
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct Barrier {
    seg: Segment<RawBarrier>,
}

impl Layout for Barrier {
    type Object = RawBarrier;
    type Params = BarrierParams;
    const KIND: Kind = Kind::Barrier;

    fn validate(name: &str, params: &BarrierParams) -> Result<()> {
        if params.parties == 0 || params.parties > MAX_PARTIES {
            return Err(Error::InvalidArgument {
                name: name.to_string(),
                detail: format!("a barrier needs 1 to {MAX_PARTIES} parties, not {}", params.parties),
            });
        }
        Ok(())
    }

    fn check(barrier: &RawBarrier, _trailing: usize) -> std::result::Result<(), String> {
        barrier.check()
    }

    unsafe fn init(object: *mut RawBarrier, _trailing: usize, params: &BarrierParams) -> Result<()> {
        // SAFETY: forwarded from the caller of Layout::init.
        unsafe { RawBarrier::init(object, params.parties) }
            .map_err(|detail| Error::InvalidArgument { name: String::new(), detail })
    }
}

named_lifecycle!(Barrier { parties: u32 });

impl Builder<Barrier> {
    /// How many parties meet, `1..=32767`. Required for `create`.
    pub fn parties(mut self, parties: u32) -> Self {
        self.params_mut().parties = parties;
        self
    }
}

impl Barrier {
    pub(crate) fn raw(&self) -> &RawBarrier {
        self.seg.object()
    }

    /// The error for a wait that found the barrier broken: `Corrupt` when
    /// its shared state makes no sense (then `reset` repairs it).
    pub(crate) fn broken(&self) -> Error {
        match self.raw().check() {
            Err(detail) => Error::Corrupt { name: self.name().to_string(), detail },
            Ok(()) => Error::BrokenBarrier { name: self.name().to_string() },
        }
    }

    /// Waits until all parties have arrived. `Err(BrokenBarrier)` if the
    /// barrier is or becomes broken.
    pub fn wait(&self) -> Result<BarrierWaitResult> {
        self.raw().wait().map_err(|_| self.broken())
    }

    /// Waits at most `timeout`. A timeout breaks the barrier for every
    /// waiter and returns `Err(BrokenBarrier)`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult> {
        self.raw().wait_timeout(timeout).map_err(|_| self.broken())
    }

    /// Breaks the barrier: waiters now and later get `Err(BrokenBarrier)`
    /// until [`reset`](Self::reset).
    pub fn abort(&self) {
        self.raw().abort()
    }

    /// Returns the barrier to its empty, unbroken state. Parties waiting now
    /// get `Err(BrokenBarrier)`.
    pub fn reset(&self) {
        self.raw().reset()
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.raw().is_broken()
    }

    /// The number of parties.
    pub fn parties(&self) -> u32 {
        self.raw().parties()
    }

    /// How many parties wait now (a snapshot).
    pub fn n_waiting(&self) -> u32 {
        self.raw().n_waiting()
    }
}
