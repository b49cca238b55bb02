//! The dispatcher: sends chunks to idle workers, collects results, notices
//! dead and retired workers and replaces them. It runs in the caller's
//! thread, inside the iterator that `map` and `imap` drive.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::MutexGuard;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_bytes::ByteBuf;

use super::wire::{self, Done, Task};
use super::{Inner, Pool, State};
use crate::data::codec;
use crate::error::{Error, Result};

/// How long the dispatcher sleeps before checking that busy workers are
/// alive even without an EOF (a worker's socket could be held open by a
/// process it forked).
const LIVENESS_CHECK: Duration = Duration::from_millis(200);

/// The outcomes of a `map`, `imap` or `imap_unordered`, as an iterator.
///
/// Dropping it early waits for the chunks already sent to workers.
pub struct Imap<'a, I: Iterator, R> {
    pool: &'a Pool,
    inner: MutexGuard<'a, Inner>,
    setup_error: Option<Error>,
    items: I,
    exhausted: bool,
    pulled: usize,
    call: u64,
    func: u64,
    chunk: usize,
    ordered: bool,
    ready: BTreeMap<usize, Result<R>>,
    next_out: usize,
    in_flight: usize,
}

impl<'a, I, R> Imap<'a, I, R>
where
    I: Iterator,
    I::Item: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    pub(super) fn new(
        pool: &'a Pool,
        inner: MutexGuard<'a, Inner>,
        f: fn(I::Item) -> R,
        items: I,
        chunk: usize,
        ordered: bool,
    ) -> Self {
        let setup_error = (inner.state != State::Open).then_some(Error::PoolClosed);
        let (call, func) = wire::addresses(f);
        Imap {
            pool,
            inner,
            setup_error,
            items,
            exhausted: false,
            pulled: 0,
            call,
            func,
            chunk,
            ordered,
            ready: BTreeMap::new(),
            next_out: 0,
            in_flight: 0,
        }
    }

    /// The next outcome that may be handed out, if one is ready.
    fn take_ready(&mut self) -> Option<Result<R>> {
        if self.ordered {
            let r = self.ready.remove(&self.next_out)?;
            self.next_out += 1;
            Some(r)
        } else {
            self.ready.pop_first().map(|(_, r)| r)
        }
    }

    /// Sends a chunk to every idle worker while items remain.
    fn dispatch(&mut self) {
        for i in 0..self.inner.workers.len() {
            if self.exhausted {
                return;
            }
            if self.inner.workers[i].busy.is_some() {
                continue;
            }
            let first = self.pulled;
            let mut encoded = Vec::with_capacity(self.chunk);
            while encoded.len() < self.chunk {
                let Some(item) = self.items.next() else {
                    self.exhausted = true;
                    break;
                };
                let index = self.pulled;
                self.pulled += 1;
                let mut buf = Vec::new();
                match codec::encode_into(&item, &mut buf) {
                    Ok(()) => encoded.push(ByteBuf::from(buf)),
                    Err(e) => {
                        // An item that cannot be encoded fails alone; the
                        // chunk stops before it so indices stay contiguous.
                        self.ready.insert(index, Err(e));
                        break;
                    }
                }
            }
            if encoded.is_empty() {
                continue;
            }
            let len = encoded.len();
            let task = Task { first: first as u64, call: self.call, func: self.func, items: encoded };
            let w = &mut self.inner.workers[i];
            w.busy = Some((first, len));
            w.sent += 1;
            self.in_flight += len;
            if w.conn.send(&task).is_err() {
                self.worker_died(i);
            }
        }
    }

    /// Waits for one event from the busy workers and handles it.
    fn collect(&mut self) {
        let busy: Vec<usize> =
            (0..self.inner.workers.len()).filter(|&i| self.inner.workers[i].busy.is_some()).collect();
        let ready: Vec<usize> = {
            let mut fds: Vec<nix::poll::PollFd<'_>> = busy
                .iter()
                .map(|&i| nix::poll::PollFd::new(self.inner.workers[i].conn.as_fd(), nix::poll::PollFlags::POLLIN))
                .collect();
            let timeout = nix::poll::PollTimeout::try_from(LIVENESS_CHECK).unwrap_or(nix::poll::PollTimeout::MAX);
            match nix::poll::poll(&mut fds, timeout) {
                Ok(0) | Err(_) => Vec::new(),
                Ok(_) => fds
                    .iter()
                    .zip(&busy)
                    .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(_, &i)| i)
                    .collect(),
            }
        };
        if ready.is_empty() {
            for i in busy {
                if !self.inner.workers[i].process.is_alive() {
                    self.worker_died(i);
                }
            }
            return;
        }
        for i in ready {
            match self.inner.workers[i].conn.recv_bytes_timeout(Duration::ZERO) {
                Ok(Some(bytes)) => self.finished(i, &bytes),
                Ok(None) => {}
                Err(_) => self.worker_died(i),
            }
        }
    }

    /// Records a chunk's outcomes; retires the worker if it is due.
    fn finished(&mut self, i: usize, bytes: &[u8]) {
        let Some((first, len)) = self.inner.workers[i].busy.take() else { return };
        self.in_flight -= len;
        match codec::decode::<Done>(bytes) {
            Ok(done) if done.first as usize == first && done.outcomes.len() == len => {
                for (k, outcome) in done.outcomes.into_iter().enumerate() {
                    let index = first + k;
                    let result = match outcome {
                        Ok(bytes) => codec::decode(&bytes),
                        Err(message) => Err(Error::TaskFailed { index, message }),
                    };
                    self.ready.insert(index, result);
                }
            }
            _ => {
                for index in first..first + len {
                    let message = "the worker sent a malformed result".to_string();
                    self.ready.insert(index, Err(Error::TaskFailed { index, message }));
                }
            }
        }
        if self.inner.workers[i].sent >= self.pool.max_tasks_per_child {
            // It exits by itself after this result: reap it, start another.
            let _ = self.inner.workers[i].process.join_timeout(Duration::from_secs(5));
            let _ = self.inner.workers[i].process.kill();
            let _ = self.inner.workers[i].process.join();
            self.replace(i);
        }
    }

    /// A worker died: its chunk fails with `WorkerDied`, and it is replaced.
    fn worker_died(&mut self, i: usize) {
        let w = &self.inner.workers[i];
        let pid = w.process.pid().unwrap_or(0);
        // Its socket closed: it is dead or dying. Reap it, killing it if
        // it lingers (a closed socket with a live process is no worker).
        let code = match w.process.join_timeout(Duration::from_secs(1)) {
            Ok(Some(code)) => code,
            _ => {
                let _ = w.process.kill();
                w.process.join().unwrap_or(-9)
            }
        };
        let signal = (code < 0).then_some(-code);
        if let Some((first, len)) = self.inner.workers[i].busy.take() {
            self.in_flight -= len;
            for index in first..first + len {
                self.ready.insert(index, Err(Error::WorkerDied { pid, index, signal }));
            }
        }
        self.replace(i);
    }

    fn replace(&mut self, i: usize) {
        self.pool.replace_worker(&mut self.inner, i);
    }

    /// With no worker left, every remaining item fails.
    fn fail_remaining(&mut self) {
        for index in self.pulled.. {
            if self.items.next().is_none() {
                break;
            }
            self.pulled = index + 1;
            self.ready.insert(index, Err(Error::PoolClosed));
        }
        self.exhausted = true;
    }
}

impl<I, R> Iterator for Imap<'_, I, R>
where
    I: Iterator,
    I::Item: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        if let Some(e) = self.setup_error.take() {
            self.exhausted = true;
            return Some(Err(e));
        }
        loop {
            if let Some(r) = self.take_ready() {
                return Some(r);
            }
            if self.inner.workers.is_empty() {
                self.fail_remaining();
                if let Some(r) = self.take_ready() {
                    return Some(r);
                }
            }
            self.dispatch();
            if self.in_flight == 0 && self.exhausted {
                return self.take_ready();
            }
            if self.in_flight > 0 {
                self.collect();
            }
        }
    }
}

impl<I: Iterator, R> Drop for Imap<'_, I, R> {
    fn drop(&mut self) {
        // Results for chunks already sent would otherwise meet the next call.
        while self.inner.workers.iter().any(|w| w.busy.is_some()) {
            let busy: Vec<usize> =
                (0..self.inner.workers.len()).filter(|&i| self.inner.workers[i].busy.is_some()).collect();
            for i in busy {
                let w = &mut self.inner.workers[i];
                match w.conn.recv_bytes_timeout(LIVENESS_CHECK) {
                    Ok(Some(_)) => w.busy = None,
                    Ok(None) if w.process.is_alive() => {}
                    _ => {
                        // Dead: its chunk is abandoned with the iterator.
                        let _ = w.process.kill();
                        let _ = w.process.join();
                        self.pool.replace_worker(&mut self.inner, i);
                    }
                }
            }
        }
    }
}
