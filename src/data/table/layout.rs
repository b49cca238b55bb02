//! [`Table`], the shared header before the two halves: its layout, its
//! parameter, `init` and the checks on open, the packed state words, and
//! its lock.

use std::mem::size_of;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::entries::Entry;
use crate::data::codec;
use crate::error::{Error, Result};
use crate::raw::RawLock;

/// The smallest half: room for a few small entries.
pub const MIN_CAPACITY: usize = 16;
/// The largest half (lengths are 32-bit).
pub const MAX_CAPACITY: usize = 1 << 31;
/// The default half size: 64 KiB.
const DEFAULT_CAPACITY: usize = 64 << 10;

pub(super) fn pack(count: u32, len: u32) -> u64 {
    (u64::from(count) << 32) | u64::from(len)
}

pub(super) fn unpack(word: u64) -> (usize, usize) {
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
    pub(super) half_size: u64,
    pub(super) active: AtomicU32,
    _reserved: u32,
    pub(super) state: [AtomicU64; 2],
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
    pub(super) fn lock(&self) -> Held<'_> {
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
pub(super) struct Held<'a>(&'a RawLock);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // SAFETY: a Held is made only by `Table::lock`, which took the lock,
        // and lives within one call of a `View` method on the same thread, so
        // this thread holds the lock.
        unsafe { self.0.unlock() }
    }
}
