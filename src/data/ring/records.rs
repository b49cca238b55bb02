//! Records and positions: the record header, the packing of the sides'
//! words, and the checks that every position, length, kind and count read
//! from the segment passes before use (see the ring's module docs).

use super::view::View;

/// Record header size and alignment.
pub(super) const HEADER: usize = 8;
/// The largest ring (positions run to `2C`, in 32 bits).
pub const MAX_CAPACITY: usize = 1 << 31;
/// The smallest ring.
pub const MIN_CAPACITY: usize = 32;

pub(super) const MESSAGE: u32 = 1;
pub(super) const PAD: u32 = 2;

/// Bytes a message of `len` bytes takes in the ring.
pub(super) fn record_size(len: usize) -> usize {
    HEADER + len.next_multiple_of(HEADER)
}

pub(super) fn unpack(word: u64) -> (u32, usize) {
    ((word >> 32) as u32, (word & 0xffff_ffff) as usize)
}

pub(super) fn pack(count: u32, pos: usize) -> u64 {
    (u64::from(count) << 32) | pos as u64
}

/// The largest message a ring of `capacity` bytes takes.
pub fn max_message(capacity: usize) -> usize {
    capacity.saturating_sub(2 * HEADER)
}

impl View<'_> {
    pub(super) fn corrupt(&self, what: &str, value: impl std::fmt::Display) -> String {
        format!("its ring's {what} is {value}, impossible in a ring of {} bytes", self.cap)
    }

    /// A position read from a side's word, checked.
    fn position(&self, pos: usize, what: &str) -> Result<usize, String> {
        if pos < 2 * self.cap && pos % HEADER == 0 {
            Ok(pos)
        } else {
            Err(self.corrupt(what, pos))
        }
    }

    fn used(&self, tail: usize, head: usize) -> Result<usize, String> {
        let used = (tail + 2 * self.cap - head) % (2 * self.cap);
        if used > self.cap {
            return Err(self.corrupt("bytes in use", used));
        }
        Ok(used)
    }

    /// The two sides' words, checked against each other: both positions in
    /// range, at most `C` bytes in use, none without a message (a PAD is only
    /// ever committed with the message behind it) and no more messages than
    /// the bytes could hold. Returns the positions and the bytes in use.
    pub(super) fn span(&self, put_word: u64, get_word: u64) -> Result<(usize, usize, usize), String> {
        let (puts, tail) = unpack(put_word);
        let (gets, head) = unpack(get_word);
        let tail = self.position(tail, "write position")?;
        let head = self.position(head, "read position")?;
        let used = self.used(tail, head)?;
        let count = puts.wrapping_sub(gets) as usize;
        if (count == 0) != (used == 0) || count > used / HEADER {
            return Err(self.corrupt("message count", format!("{count} in {used} bytes")));
        }
        Ok((tail, head, used))
    }

    pub(super) fn advance(&self, pos: usize, by: usize) -> usize {
        (pos + by) % (2 * self.cap)
    }

    pub(super) fn offset(&self, pos: usize) -> usize {
        pos % self.cap
    }

    /// # Safety
    /// The caller owns the 8 bytes at `at` (holds the side lock, reserved).
    pub(super) unsafe fn write_header(&self, at: usize, kind: u32, len: usize) {
        let header = (u64::from(kind) << 32 | len as u64).to_le_bytes();
        // SAFETY: forwarded from the caller; `at + 8 <= cap`.
        unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), self.data.add(at), HEADER) };
    }

    /// # Safety
    /// The caller holds the consumers' lock, and `at` is the offset of a
    /// committed record, which no producer writes until it is consumed.
    pub(super) unsafe fn read_header(&self, at: usize) -> (u32, usize) {
        let mut header = [0u8; HEADER];
        // SAFETY: `at + 8 <= cap` (offsets are multiples of 8, and so is the
        // ring's size); no producer writes the record (forwarded from the
        // caller).
        unsafe { std::ptr::copy_nonoverlapping(self.data.add(at), header.as_mut_ptr(), HEADER) };
        let word = u64::from_le_bytes(header);
        ((word >> 32) as u32, (word & 0xffff_ffff) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_positions() {
        assert_eq!(record_size(0), 8);
        assert_eq!(record_size(1), 16);
        assert_eq!(record_size(8), 16);
        assert_eq!(unpack(pack(7, 4096)), (7, 4096));
        assert_eq!(max_message(64), 48);
    }
}
