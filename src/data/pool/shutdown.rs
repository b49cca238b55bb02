//! Ending the pool: `close` (workers exit once the calls already made
//! end), `terminate` (they stop now) and `join` (waits until all exited).

use std::os::fd::AsFd;
use std::time::Duration;

use super::core::{Core, Inner, State};
use super::lifecycle::fail_job;
use crate::error::{Error, Result};
use crate::sys::socket;
use crate::sys::time::Deadline;

/// How long `terminate` (and a drop) lets workers end after `SIGTERM`
/// before it sends `SIGKILL`: all of them together, not each.
pub const TERMINATE_GRACE: Duration = Duration::from_millis(500);

impl Core {
    /// After `close`, shuts the sockets of idle workers once no call needs
    /// them, so they finish and exit.
    pub(super) fn wind_down(&self, g: &mut Inner) {
        if g.state != State::Closed || !g.calls.is_empty() {
            return;
        }
        for s in g.slots.iter_mut().filter(|s| s.job.is_none() && !s.closing) {
            s.closing = true;
            socket::shutdown(s.worker.conn.as_fd());
        }
    }

    /// `close`: no new calls; workers exit once the calls already made end.
    pub fn close(&self) {
        let mut g = self.lock();
        if g.state == State::Open {
            g.state = State::Closed;
            self.wind_down(&mut g);
            self.wake();
            self.notify(&g);
        }
    }

    /// `terminate`: every worker stops now. Outstanding items are
    /// `PoolClosed`. Workers get `SIGTERM`, then `SIGKILL` after
    /// [`TERMINATE_GRACE`].
    pub fn terminate(&self) {
        let mut g = self.lock();
        let slots = std::mem::take(&mut g.slots);
        for slot in &slots {
            fail_job(&mut g, slot, |_| Error::PoolClosed);
        }
        if g.state != State::Joined {
            g.state = State::Terminated;
        }
        self.wake();
        self.notify(&g);
        drop(g);
        for s in &slots {
            let _ = s.worker.process.terminate();
        }
        let deadline = Deadline::after(TERMINATE_GRACE);
        for s in &slots {
            let _ = s.worker.process.join_timeout(deadline.remaining());
        }
        for s in &slots {
            let _ = s.worker.process.kill();
            let _ = s.worker.process.join();
        }
    }

    /// `join`/`join_timeout`: drives the collector until every worker has
    /// exited. `Ok(false)` at the deadline.
    pub fn join(&self, deadline: Option<&Deadline>) -> Result<bool> {
        let mut g = self.lock();
        if g.state == State::Open {
            return Err(Error::PoolNotClosed);
        }
        loop {
            if g.slots.is_empty() {
                g.state = if g.state == State::Terminated { State::Terminated } else { State::Joined };
                return Ok(true);
            }
            if deadline.is_some_and(|d| d.has_passed()) {
                return Ok(false);
            }
            g = self.wait(g, deadline);
        }
    }
}
