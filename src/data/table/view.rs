//! [`View`]: one handle's access to a table: finding the active half under
//! the lock, looking a key up in place, and committing a new map into the
//! other half.

use std::cell::RefCell;
use std::sync::atomic::Ordering;

use super::entries::Entry;
use super::layout::{pack, unpack, Held, Table};
use crate::data::codec;
use crate::error::{Error, Result};
use crate::segment::Segment;

thread_local! {
    /// The encode buffer for a new half, reused between mutations.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A table as one handle sees it: the header, where its halves are, and the
/// name for errors.
pub struct View<'a> {
    table: &'a Table,
    /// The first byte of half 0, with the whole mapping's provenance.
    ptr: *mut u8,
    /// Bytes per half, clamped to what this mapping really has.
    half: usize,
    name: &'a str,
}

impl<'a> View<'a> {
    /// The table in `seg`.
    pub fn of(seg: &'a Segment<Table>) -> View<'a> {
        let table = seg.object();
        let (ptr, trailing) = seg.trailing();
        // Clamped, so even a half size changed behind our back (open checked
        // it) cannot take a read or write past the mapping.
        let half = usize::try_from(table.half_size).unwrap_or(usize::MAX).min(trailing / 2);
        View { table, ptr, half, name: seg.name() }
    }

    /// Bytes per half: the largest encoded map that fits.
    pub fn capacity(&self) -> usize {
        self.half
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::Corrupt { name: self.name.to_string(), detail }
    }

    /// Under the lock: the active half's index, entry count and bytes,
    /// checked against the half's size.
    fn active<'h>(&'h self, _held: &'h Held<'_>) -> Result<(usize, usize, &'h [u8])> {
        // Acquire: pairs with the Release store of the writer that made this
        // half active (the lock already orders it; this also serves readers
        // that look without the lock, such as Debug).
        let active = match self.table.active.load(Ordering::Acquire) {
            a @ (0 | 1) => a as usize,
            other => return Err(self.corrupt(format!("its active-half word is {other}, not 0 or 1"))),
        };
        // Acquire, as above: the word was stored before the flip.
        let (count, len) = unpack(self.table.state[active].load(Ordering::Acquire));
        if len > self.half {
            return Err(self.corrupt(format!("its active half claims {len} bytes, more than the {} there", self.half)));
        }
        // SAFETY: half `active` lies in the mapping (`half` is clamped to the
        // trailing bytes, `len <= half`) and lives as long as `self`. We hold
        // the lock (the slice cannot outlive `_held`), and nobody writes the
        // active half even under the lock, so nothing changes these bytes
        // while the slice lives.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.add(active * self.half), len) };
        Ok((active, count, bytes))
    }

    /// Under the lock: the value bytes of `key`, found by walking the
    /// encoded entries in place (no decoding of the map, no allocation but
    /// the copy of the value found).
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let held = self.table.lock();
        let (_, count, bytes) = self.active(&held)?;
        let mut cursor = Cursor { bytes, at: 0, view: self };
        let n = cursor.length()?;
        if n != count {
            return Err(self.corrupt(format!("its active half holds {n} entries but records {count}")));
        }
        for _ in 0..n {
            let (k, v) = (cursor.field()?, cursor.field()?);
            match k.cmp(key) {
                std::cmp::Ordering::Equal => return Ok(Some(v.to_vec())),
                // Entries are sorted by key bytes: it is not there.
                std::cmp::Ordering::Greater => return Ok(None),
                std::cmp::Ordering::Less => {}
            }
        }
        Ok(None)
    }

    /// Under the lock: the active half's index and its entries, checked.
    fn load(&self, held: &Held<'_>) -> Result<(usize, Vec<Entry>)> {
        let (active, count, bytes) = self.active(held)?;
        let entries: Vec<Entry> =
            codec::decode(bytes).map_err(|e| self.corrupt(format!("its active half does not decode: {e}")))?;
        if entries.len() != count {
            return Err(self.corrupt(format!("its active half holds {} entries but records {count}", entries.len())));
        }
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(self.corrupt("its active half's keys are not sorted and distinct".to_string()));
        }
        Ok((active, entries))
    }

    /// Under the lock: writes `entries` into the inactive half, then makes it
    /// active. `Full` if they do not fit, with nothing changed.
    fn commit(&self, _held: &Held<'_>, active: usize, entries: &[Entry]) -> Result<()> {
        BUFFER.with_borrow_mut(|buf| {
            codec::encode_into(entries, buf)?;
            let full = || Error::Full { name: self.name.to_string() };
            if buf.len() > self.half {
                return Err(full());
            }
            let count = u32::try_from(entries.len()).map_err(|_| full())?;
            let len = u32::try_from(buf.len()).map_err(|_| full())?;
            let next = 1 - active;
            // SAFETY: half `next` lies in the mapping and `buf` fits in it
            // (checked above); `buf` is a separate Rust buffer. We hold the
            // lock and this half is not the active one, so no process reads
            // or writes it now.
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), self.ptr.add(next * self.half), buf.len()) };
            // Relaxed: ordered before the flip by the Release store below.
            self.table.state[next].store(pack(count, len), Ordering::Relaxed);
            crash_point!("dict.commit.written");
            // The commit. Release: whoever reads the new `active` with
            // Acquire sees the half's bytes and its state word.
            self.table.active.store(next as u32, Ordering::Release);
            crash_point!("dict.commit.flipped");
            Ok(())
        })
    }

    /// Runs `f` on a consistent snapshot of the entries, under the lock.
    pub fn read<R>(&self, f: impl FnOnce(Vec<Entry>) -> R) -> Result<R> {
        let held = self.table.lock();
        let (_, entries) = self.load(&held)?;
        drop(held);
        Ok(f(entries))
    }

    /// Applies `f` to the entries under the lock. `f` returns its result and
    /// whether it changed anything; a change is committed whole, or `Full`
    /// with the table unchanged.
    pub fn update<R>(&self, f: impl FnOnce(&mut Vec<Entry>) -> (R, bool)) -> Result<R> {
        let held = self.table.lock();
        let (active, mut entries) = self.load(&held)?;
        let (result, changed) = f(&mut entries);
        if changed {
            self.commit(&held, active, &entries)?;
        }
        Ok(result)
    }

    /// Entries in the active half, read under the lock so it agrees with
    /// [`read`](Self::read). A corrupt active-half word reads as 0.
    pub fn len(&self) -> usize {
        let _held = self.table.lock();
        match self.table.active.load(Ordering::Acquire) {
            a @ (0 | 1) => unpack(self.table.state[a as usize].load(Ordering::Acquire)).0,
            _ => 0,
        }
    }
}

/// A walk through an encoded half: postcard's varint lengths and the bytes
/// they announce, each checked against what is left.
struct Cursor<'b, 'v> {
    bytes: &'b [u8],
    at: usize,
    view: &'v View<'v>,
}

impl<'b> Cursor<'b, '_> {
    fn corrupt(&self, what: &str) -> Error {
        self.view.corrupt(format!("its active half does not decode: {what} at byte {}", self.at))
    }

    /// The next varint length.
    fn length(&mut self) -> Result<usize> {
        let rest = &self.bytes[self.at..];
        let (n, after): (usize, &[u8]) = postcard::take_from_bytes(rest).map_err(|_| self.corrupt("a bad length"))?;
        self.at += rest.len() - after.len();
        Ok(n)
    }

    /// The next length-prefixed byte string.
    fn field(&mut self) -> Result<&'b [u8]> {
        let len = self.length()?;
        let end = self
            .at
            .checked_add(len)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.corrupt("a length past its end"))?;
        let field = &self.bytes[self.at..end];
        self.at = end;
        Ok(field)
    }
}
