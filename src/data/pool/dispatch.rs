//! A synchronous call (`map`, `imap`, `apply`): pulls and encodes items in
//! the caller's thread, sends chunks to idle workers, and takes its
//! outcomes from its mailbox, collecting for everyone while it waits (see
//! `collector.rs`). The pool's lock is held only for bookkeeping, never while
//! pulling items (user code), encoding, sending or waiting.

use std::marker::PhantomData;
use std::sync::MutexGuard;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_bytes::ByteBuf;

use super::core::{Core, Inner, Raw, State};
use super::wire::{TaskRef, PER_ITEM, TASK_OVERHEAD};
use super::Pool;
use crate::data::codec;
use crate::data::DEFAULT_MAX_FRAME;
use crate::error::{Error, Result};

/// A chunk: the index of its first item and the encoded items.
pub(super) type Chunk = (usize, Vec<ByteBuf>);

/// The outcomes of a `map`, `imap` or `imap_unordered`, as an iterator.
///
/// Dropping it early waits for nothing: chunks already sent to workers run
/// to the end there, and their results are thrown away as they arrive.
pub struct Imap<'a, I: Iterator, R> {
    pool: &'a Pool,
    /// The mailbox; `None` once the call is over.
    call: Option<u64>,
    setup_error: Option<Error>,
    items: I,
    exhausted: bool,
    pulled: usize,
    trampoline: u64,
    func: u64,
    chunk: usize,
    ordered: bool,
    next_out: usize,
    /// A chunk encoded but not sent, because its worker was found dead.
    pending: Option<Chunk>,
    _results: PhantomData<fn() -> R>,
}

impl<'a, I, R> Imap<'a, I, R>
where
    I: Iterator,
    I::Item: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    /// A call of the function at `func` through `trampoline` (see
    /// `wire.rs`), which must take `I::Item` and give `R`.
    pub(super) fn new(pool: &'a Pool, (trampoline, func): (u64, u64), items: I, chunk: usize, ordered: bool) -> Self {
        let mut imap = Imap {
            pool,
            call: None,
            setup_error: None,
            items,
            exhausted: false,
            pulled: 0,
            trampoline,
            func,
            chunk: chunk.max(1),
            ordered,
            next_out: 0,
            pending: None,
            _results: PhantomData,
        };
        let core = &pool.core;
        if core.is_foreign() {
            imap.setup_error = Some(Error::ForeignPool { owner: core.owner });
            return imap;
        }
        let mut g = core.lock();
        if g.state != State::Open {
            imap.setup_error = Some(Error::PoolClosed);
        } else if let Err(e) = core.ensure_workers(&mut g) {
            imap.setup_error = Some(e);
        } else {
            imap.call = Some(core.open_call(&mut g));
        }
        imap
    }

    /// The next outcome that may be handed out, if one is ready.
    fn take_ready(&mut self, g: &mut Inner, call: u64) -> Option<Raw> {
        let m = Core::mailbox(g, call)?;
        if self.ordered {
            let r = m.ready.remove(&self.next_out)?;
            self.next_out += 1;
            Some(r)
        } else {
            m.ready.pop_first().map(|(_, r)| r)
        }
    }

    /// Pulls and encodes the next chunk, without the lock.
    fn next_chunk(&mut self) -> (Option<Chunk>, Vec<(usize, Error)>) {
        next_chunk(&mut self.items, &mut self.pulled, &mut self.exhausted, self.chunk)
    }

    /// Sends chunks to idle workers while items remain. Returns the guard.
    fn dispatch(&mut self, mut g: MutexGuard<'a, Inner>, call: u64) -> MutexGuard<'a, Inner> {
        let pool: &'a Pool = self.pool;
        let core = &pool.core;
        loop {
            if (self.exhausted && self.pending.is_none()) || g.state == State::Terminated {
                return g;
            }
            if let Err(e) = core.ensure_workers(&mut g) {
                self.give_up(&mut g, call, e);
                return g;
            }
            let Some((id, worker)) = Core::idle(&g, core.max_tasks) else { return g };
            let (first, items) = match self.pending.take() {
                Some(chunk) => chunk,
                None => {
                    drop(g);
                    let (chunk, failed) = self.next_chunk();
                    g = core.lock();
                    if let Some(m) = Core::mailbox(&mut g, call) {
                        m.ready.extend(failed.into_iter().map(|(i, e)| (i, Raw::Err(e))));
                    }
                    match chunk {
                        Some(chunk) => chunk,
                        None => continue,
                    }
                }
            };
            if !Core::still_idle(&g, id) {
                self.pending = Some((first, items));
                continue;
            }
            let task = TaskRef { first: first as u64, call: self.trampoline, func: self.func, items: &items };
            let requeue;
            (g, requeue) = core.send_chunk(g, (id, &worker), call, &task);
            if requeue {
                // The worker died while idle: send the chunk to another.
                self.pending = Some((first, items));
            }
        }
    }

    /// No worker can be had: the next item fails with `error`, and the call
    /// ends after the outcomes already due.
    fn give_up(&mut self, g: &mut Inner, call: u64, error: Error) {
        let index = self.pending.take().map_or(self.pulled, |(first, _)| first);
        if let Some(m) = Core::mailbox(g, call) {
            m.ready.insert(index, Raw::Err(error));
        }
        self.pulled = self.pulled.max(index + 1);
        self.exhausted = true;
        // In order, the outcomes after `index` are never handed out.
        self.ordered = false;
    }

    fn finish(&mut self, g: &mut Inner) {
        if let Some(call) = self.call.take() {
            self.pool.core.close_call(g, call);
        }
        self.exhausted = true;
    }
}

/// Pulls and encodes up to `chunk` items from `items` (`pulled` counts
/// them), without the lock. Items that fail alone (they do not encode, or
/// are too large for a frame) come back beside the chunk; a chunk stops
/// before such an item, so it stays contiguous, and before it would exceed
/// the frame limit.
pub(super) fn next_chunk<T: Serialize>(
    items: &mut impl Iterator<Item = T>,
    pulled: &mut usize,
    exhausted: &mut bool,
    chunk: usize,
) -> (Option<Chunk>, Vec<(usize, Error)>) {
    let room = DEFAULT_MAX_FRAME - TASK_OVERHEAD;
    let first = *pulled;
    let mut encoded = Vec::new();
    let mut size = 0;
    let mut failed = Vec::new();
    while encoded.len() < chunk {
        let Some(item) = items.next() else {
            *exhausted = true;
            break;
        };
        let index = *pulled;
        *pulled += 1;
        let mut buf = Vec::new();
        if let Err(e) = codec::encode_into(&item, &mut buf) {
            failed.push((index, e));
            break;
        }
        if buf.len() + PER_ITEM > room {
            failed.push((index, Error::TooLarge { len: buf.len(), max: room - PER_ITEM }));
            break;
        }
        size += buf.len() + PER_ITEM;
        encoded.push(ByteBuf::from(buf));
        if size + PER_ITEM >= room {
            break;
        }
    }
    let chunk = (!encoded.is_empty()).then_some((first, encoded));
    (chunk, failed)
}

pub(super) fn decode<R: DeserializeOwned>(raw: Raw) -> Result<R> {
    match raw {
        Raw::Ok(bytes) => codec::decode(&bytes),
        Raw::Err(e) => Err(e),
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
        let call = self.call?;
        let pool: &Pool = self.pool;
        let core = &pool.core;
        let mut g = core.lock();
        loop {
            if let Some(raw) = self.take_ready(&mut g, call) {
                drop(g);
                return Some(decode(raw));
            }
            if g.state == State::Terminated && !self.exhausted {
                // Terminated under us: the next item, if there is one,
                // fails, and that ends the call.
                if self.pending.is_some() || self.items.next().is_some() {
                    self.give_up(&mut g, call, Error::PoolClosed);
                } else {
                    self.exhausted = true;
                }
                continue;
            }
            g = self.dispatch(g, call);
            let m = Core::mailbox(&mut g, call)?;
            let deliverable = if self.ordered { m.ready.contains_key(&self.next_out) } else { !m.ready.is_empty() };
            if deliverable {
                continue;
            }
            if self.exhausted && self.pending.is_none() && m.in_flight == 0 {
                self.finish(&mut g);
                return None;
            }
            g = core.wait(g, None);
        }
    }
}

impl<I: Iterator, R> Drop for Imap<'_, I, R> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            // Outcomes still due are thrown away as they arrive.
            let core = &self.pool.core;
            let mut g = core.lock();
            core.close_call(&mut g, call);
        }
    }
}
