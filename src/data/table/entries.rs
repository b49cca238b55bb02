//! The decoded map: entries sorted by key bytes, and the edits a mutation
//! makes to them.

/// One entry: postcard bytes of a key and of its value.
pub type Entry = (Vec<u8>, Vec<u8>);

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
