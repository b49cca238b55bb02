//! The shared storage behind `Dict` and `Namespace`: a whole map, encoded,
//! in one of two halves, switched by one store.
//!
//! | field       | meaning |
//! |-------------|---------|
//! | `lock`      | robust lock over everything below; a dead holder's lock is recovered silently |
//! | `half_size` | bytes in each half; written once by `init`, read-only after |
//! | `active`    | 0 or 1: the half that holds the map. Written only under the lock, by one Release store |
//! | `state[h]`  | `count << 32 \| len` for half `h`: its entries and its encoded length in bytes |
//!
//! The trailing bytes are two halves of `half_size` bytes. The active half
//! holds the map as postcard's encoding of a `Vec<(key, value)>`, where keys
//! and values are themselves postcard bytes and the entries are sorted by
//! key bytes (so equal keys are equal bytes, and a lookup is a binary
//! search). All-zero bytes are not a valid table: `init` must run first.
//!
//! Count and length share one word per half so that any single load of it,
//! even outside the lock, gives a pair that describes the same encoding.
//!
//! A mutation, under the lock: decode the active half `a`, change the map in
//! memory, encode it into half `1 - a` (if it does not fit: `Full`, nothing
//! written), store `state[1 - a]`, then store `active = 1 - a` (Release).
//!
//! Crash safety. Nothing ever writes the active half or its state word:
//! writers write only the other half, and only under the lock. So at every
//! instruction of a mutation, `active` names a half whose bytes and state
//! word were written whole before `active` was last stored:
//! - killed before the store to `active`: it still names the old half,
//!   untouched, so the old map stands. The half it was writing is read by
//!   nobody, and the next writer overwrites it (bytes, then state) before it
//!   could become active;
//! - killed after that store: the new half and its state were written before
//!   it in program order, and the store is Release, so whoever reads
//!   `active` (Acquire, under the lock the kernel handed over) sees them: the
//!   new map stands;
//! - the store itself is one aligned 4-byte store: it happens or it does not.
//!
//! So the next locker, told by the robust mutex that the holder died, clears
//! the poison and goes on: there is nothing to repair.

use std::cell::RefCell;
use std::mem::size_of;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::codec;
use crate::error::{Error, Result};
use crate::raw::RawLock;
use crate::segment::Segment;

/// This module's crash points (see [`crate::crash`]).
pub(crate) const CRASH_POINTS: &[&str] = &["dict.commit.written", "dict.commit.flipped"];

/// One entry: postcard bytes of a key and of its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The smallest half: room for a few small entries.
pub const MIN_CAPACITY: usize = 16;
/// The largest half (lengths are 32-bit).
pub const MAX_CAPACITY: usize = 1 << 31;
/// The default half size: 64 KiB.
const DEFAULT_CAPACITY: usize = 64 << 10;

thread_local! {
    /// The encode buffer for a new half, reused between mutations.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn pack(count: u32, len: u32) -> u64 {
    (u64::from(count) << 32) | u64::from(len)
}

fn unpack(word: u64) -> (usize, usize) {
    ((word >> 32) as usize, (word & 0xffff_ffff) as usize)
}

/// The parameter of a table: the size of each half in bytes.
#[derive(Clone, Copy, Debug)]
pub struct TableParams {
    /// Bytes per half.
    pub capacity: usize,
}

impl Default for TableParams {
    fn default() -> Self {
        TableParams { capacity: DEFAULT_CAPACITY }
    }
}

/// The table's shared header. Its two halves follow it in the segment.
///
/// Layout: `#[repr(C)]`, 80 bytes, 8-byte aligned on 64-bit Linux.
#[repr(C)]
pub struct Table {
    lock: RawLock,
    half_size: u64,
    active: AtomicU32,
    _reserved: u32,
    state: [AtomicU64; 2],
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<Table>() == 80 && std::mem::align_of::<Table>() == 8);

// SAFETY: every field is atomic, a process-shared lock, or read-only after
// init; the halves are touched only under the lock.
unsafe impl Sync for Table {}

impl Table {
    /// Rejects a half size outside `MIN_CAPACITY..=MAX_CAPACITY`.
    pub fn validate(name: &str, params: &TableParams) -> Result<()> {
        if params.capacity < MIN_CAPACITY || params.capacity > MAX_CAPACITY {
            return Err(Error::InvalidArgument {
                name: name.to_string(),
                detail: format!(
                    "a dict's capacity must be {MIN_CAPACITY} to {MAX_CAPACITY} bytes, not {}",
                    params.capacity
                ),
            });
        }
        Ok(())
    }

    /// The bytes to ask for after the header: two halves.
    pub fn trailing_bytes(params: &TableParams) -> usize {
        params.capacity.saturating_mul(2)
    }

    /// Initialises an empty table over `trailing` bytes: each half gets half
    /// of them, rounded down to 8 bytes, so page rounding enlarges both.
    ///
    /// # Safety
    /// `this` is valid for writes of a `Table` followed by `trailing` bytes,
    /// aligned, and not yet visible to any other thread or process.
    pub unsafe fn init(this: *mut Self, trailing: usize) -> Result<()> {
        let half = (trailing / 2 / 8 * 8).min(MAX_CAPACITY);
        let mut empty = Vec::new();
        codec::encode_into(&Vec::<Entry>::new(), &mut empty)?;
        let len = u32::try_from(empty.len()).unwrap_or(u32::MAX);
        // `validate` makes this impossible; it is checked because the copy
        // below relies on it.
        if half < MIN_CAPACITY.max(empty.len()) {
            return Err(Error::InvalidArgument {
                name: "dict".to_string(),
                detail: format!("a dict needs at least {MIN_CAPACITY} bytes per half, the segment gave {half}"),
            });
        }
        // SAFETY: forwarded from the caller: the fields are in bounds and
        // unshared; half 0 starts right after the header and `empty` (a
        // separate Rust buffer) fits in it, which was checked above.
        unsafe {
            RawLock::init(&raw mut (*this).lock);
            (&raw mut (*this).half_size).write(half as u64);
            (&raw mut (*this).active).write(AtomicU32::new(0));
            (&raw mut (*this)._reserved).write(0);
            (&raw mut (*this).state).write([AtomicU64::new(pack(0, len)), AtomicU64::new(0)]);
            std::ptr::copy_nonoverlapping(empty.as_ptr(), this.add(1).cast::<u8>(), empty.len());
        }
        Ok(())
    }

    /// On open: the recorded halves must fit in the `trailing` bytes there.
    pub fn check_trailing(&self, trailing: usize) -> std::result::Result<(), String> {
        let half = self.half_size;
        if half < MIN_CAPACITY as u64 || half > MAX_CAPACITY as u64 || half.saturating_mul(2) > trailing as u64 {
            return Err(format!("its two halves claim {half} bytes each but {trailing} are there"));
        }
        Ok(())
    }

    /// Takes the lock. A holder's death is repaired silently: the active
    /// half is always whole (see the module docs), so the poison only says so.
    fn lock(&self) -> Held<'_> {
        self.lock.lock_recovering();
        Held(&self.lock)
    }

    /// Bytes per half, as recorded (check it against the segment first).
    pub(crate) fn half_size(&self) -> u64 {
        self.half_size
    }

    /// The active half's entries and encoded bytes, from one load of its
    /// state word, without the lock (for the inspector); `None` if the
    /// active-half word names neither half.
    pub(crate) fn active_counts(&self) -> Option<(usize, usize)> {
        match self.active.load(Ordering::Acquire) {
            a @ (0 | 1) => Some(unpack(self.state[a as usize].load(Ordering::Acquire))),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A snapshot without the lock: one load of `active`, one of its word.
        let active = self.active.load(Ordering::Acquire);
        let (count, len) = unpack(self.state[active as usize & 1].load(Ordering::Acquire));
        f.debug_struct("Table")
            .field("lock", &self.lock)
            .field("half_size", &self.half_size)
            .field("active", &active)
            .field("len", &count)
            .field("encoded_bytes", &len)
            .finish()
    }
}

/// Proof that the calling thread holds the table's lock; unlocks on drop.
struct Held<'a>(&'a RawLock);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // SAFETY: a Held is made only by `Table::lock`, which took the lock,
        // and lives within one call of a `View` method on the same thread, so
        // this thread holds the lock.
        unsafe { self.0.unlock() }
    }
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

/// Where `key` is in the sorted `entries`, or where it would go.
pub fn find(entries: &[Entry], key: &[u8]) -> std::result::Result<usize, usize> {
    entries.binary_search_by(|(k, _)| k.as_slice().cmp(key))
}

/// Sets `key` to `value`; returns the old value's bytes, if any.
pub fn insert(entries: &mut Vec<Entry>, key: Vec<u8>, value: Vec<u8>) -> Option<Vec<u8>> {
    match find(entries, &key) {
        Ok(i) => Some(std::mem::replace(&mut entries[i].1, value)),
        Err(i) => {
            entries.insert(i, (key, value));
            None
        }
    }
}

/// Removes `key`; returns its value's bytes, if it was there.
pub fn remove(entries: &mut Vec<Entry>, key: &[u8]) -> Option<Vec<u8>> {
    find(entries, key).ok().map(|i| entries.remove(i).1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{self, Options};

    fn table() -> Segment<Table> {
        let mut opts = Options::new("unused");
        opts.name = segment::name::generate();
        opts.unlink_on_drop = true;
        segment::create::<crate::data::Dict<u32, String>>(&opts, &TableParams { capacity: 64 }).unwrap()
    }

    fn set(view: &View<'_>, key: u8, value: u8) -> Result<Option<Vec<u8>>> {
        view.update(|e| (insert(e, vec![key], vec![value]), true))
    }

    #[test]
    fn a_mutation_flips_halves_and_keeps_keys_sorted() {
        let seg = table();
        let view = View::of(&seg);
        assert_eq!(view.len(), 0);
        assert_eq!(set(&view, 2, 20).unwrap(), None);
        assert_eq!(set(&view, 1, 10).unwrap(), None);
        assert_eq!(set(&view, 2, 21).unwrap(), Some(vec![20]));
        assert_eq!(seg.object().active.load(Ordering::SeqCst), 1);
        let entries = view.read(|e| e).unwrap();
        assert_eq!(entries, vec![(vec![1], vec![10]), (vec![2], vec![21])]);
        assert_eq!(view.len(), 2);
        assert_eq!(view.update(|e| (remove(e, &[1]), true)).unwrap(), Some(vec![10]));
        assert_eq!(view.len(), 1);
    }

    #[test]
    fn a_map_that_does_not_fit_is_full_and_changes_nothing() {
        let seg = table();
        let view = View::of(&seg);
        set(&view, 1, 10).unwrap();
        let before = (seg.object().active.load(Ordering::SeqCst), view.read(|e| e).unwrap());
        let huge = vec![0u8; view.capacity()];
        let full = view.update(|e| (insert(e, vec![1], huge), true));
        assert!(matches!(full, Err(Error::Full { .. })));
        assert_eq!((seg.object().active.load(Ordering::SeqCst), view.read(|e| e).unwrap()), before);
    }

    #[test]
    fn a_corrupt_active_half_is_an_error_not_a_panic() {
        let seg = table();
        let view = View::of(&seg);
        set(&view, 1, 10).unwrap();
        let t = seg.object();
        let active = t.active.load(Ordering::SeqCst) as usize;
        let good = t.state[active].load(Ordering::SeqCst);
        let is_corrupt = |r: Result<Vec<Entry>>| matches!(r, Err(Error::Corrupt { .. }));

        // A length past the half: refused before any byte is read.
        t.state[active].store(good | 0xffff_ffff, Ordering::SeqCst);
        assert!(is_corrupt(view.read(|e| e)));
        assert!(matches!(set(&view, 2, 20), Err(Error::Corrupt { .. })));
        // A count that disagrees with the bytes.
        t.state[active].store(good + (5 << 32), Ordering::SeqCst);
        assert!(is_corrupt(view.read(|e| e)));
        // Keys out of order.
        t.state[active].store(good, Ordering::SeqCst);
        let mut unsorted = Vec::new();
        codec::encode_into(&vec![(vec![2u8], vec![0u8]), (vec![1u8], vec![0u8])], &mut unsorted).unwrap();
        let (ptr, _) = seg.trailing();
        // SAFETY: the active half is in the mapping, `unsorted` fits in it,
        // and nothing else uses this table.
        unsafe { std::ptr::copy_nonoverlapping(unsorted.as_ptr(), ptr.add(active * view.capacity()), unsorted.len()) };
        t.state[active].store(pack(2, unsorted.len() as u32), Ordering::SeqCst);
        assert!(is_corrupt(view.read(|e| e)));
        // Bytes that do not decode.
        // SAFETY: as above.
        unsafe { std::ptr::write_bytes(ptr.add(active * view.capacity()), 0xff, 8) };
        assert!(is_corrupt(view.read(|e| e)));
        // An active word that names neither half.
        t.active.store(7, Ordering::SeqCst);
        assert!(is_corrupt(view.read(|e| e)));
        assert_eq!(view.len(), 0);
        assert!(format!("{t:?}").contains("Table"));
    }
}
