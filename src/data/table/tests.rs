//! Unit tests of the table: halves flipping, `Full`, and corrupt halves.

use std::sync::atomic::Ordering;

use super::entries::Entry;
use super::layout::pack;
use super::*;
use crate::data::codec;
use crate::error::{Error, Result};
use crate::segment::{self, Options, Segment};

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
