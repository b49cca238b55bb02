//! `Dict<K, V>`: a map of serde keys and values in a named segment (the
//! `dict` of Python's `Manager`), on the two-half [`Table`].

use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec;
use super::table::{self, Table, TableParams, View};
use crate::error::Result;
use crate::named::FromSegment;
use crate::segment::{self, Kind, Layout, Segment};
use crate::Builder;

/// A map from `K` to `V` shared by name between processes (the `dict` of
/// Python's `multiprocessing.Manager`).
///
/// Keys and values are serde values encoded with postcard; two keys are the
/// same key when their encodings are equal. Every operation takes a robust
/// lock, which it recovers silently if a holder died: the map is kept whole
/// in one of two halves and a change is committed by one store, so an
/// insert, remove or clear is wholly applied or not at all, even if its
/// process is killed in it, and [`len`](Self::len) always agrees with
/// [`to_map`](Self::to_map).
///
/// Cost: every operation decodes the whole map, and each mutation re-encodes
/// it, so each is O(size of the map). It is made for the small shared state
/// Python's `Manager` is used for, not for a database. The capacity bounds
/// the encoded map (each entry costs its key and value encodings plus a few
/// bytes); a change that would not fit is [`Error::Full`](crate::Error::Full)
/// and leaves the dict, including any old value of the key, unchanged.
///
/// ```
/// let ages = shmsync::Dict::<String, u32>::new(4096)?;
/// assert_eq!(ages.insert(&"ada".to_string(), &36)?, None);
/// assert_eq!(ages.insert(&"ada".to_string(), &37)?, Some(36));
/// ages.insert(&"alan".to_string(), &41)?;
/// assert_eq!(ages.get(&"ada".to_string())?, Some(37));
/// assert_eq!(ages.len(), 2);
/// assert_eq!(ages.remove(&"alan".to_string())?, Some(41));
/// let snapshot = ages.to_map()?; // a BTreeMap, consistent at one instant
/// assert_eq!(snapshot.len(), 1);
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct Dict<K, V> {
    seg: Segment<Table>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Layout for Dict<K, V> {
    type Object = Table;
    type Params = TableParams;
    const KIND: Kind = Kind::Dict;

    fn type_hash() -> u64 {
        segment::type_hash::<(K, V)>()
    }

    fn validate(name: &str, params: &TableParams) -> Result<()> {
        Table::validate(name, params)
    }

    fn trailing_bytes(params: &TableParams) -> usize {
        Table::trailing_bytes(params)
    }

    unsafe fn init(object: *mut Table, trailing: usize, _: &TableParams) -> Result<()> {
        // SAFETY: forwarded from the caller of Layout::init.
        unsafe { Table::init(object, trailing) }
    }

    fn check(table: &Table, trailing: usize) -> std::result::Result<(), String> {
        table.check_trailing(trailing)
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> FromSegment for Dict<K, V> {
    fn from_segment(seg: Segment<Table>) -> Self {
        Dict { seg, _types: PhantomData }
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Builder<Dict<K, V>> {
    /// The bytes the encoded map may take (default 64 KiB). The segment
    /// holds two copies, and rounding up to whole pages may add a little.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.params_mut().capacity = bytes;
        self
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    codec::encode_into(value, &mut bytes)?;
    Ok(bytes)
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Dict<K, V> {
    crate::named::lifecycle_fns!(Dict { capacity: usize });

    fn view(&self) -> View<'_> {
        View::of(&self.seg)
    }

    /// Sets `key` to `value`; returns the old value, if there was one.
    /// `Full` if the map would not fit, and `Decode` if the old value is not
    /// a `V`; either way the dict is unchanged.
    pub fn insert(&self, key: &K, value: &V) -> Result<Option<V>> {
        let (key, value) = (encode(key)?, encode(value)?);
        self.view().update(|entries| match table::find(entries, &key) {
            // The old value is decoded before anything changes: an error
            // leaves the dict as it was.
            Ok(i) => match codec::decode(&entries[i].1) {
                Ok(old) => {
                    entries[i].1 = value;
                    (Ok(Some(old)), true)
                }
                Err(e) => (Err(e), false),
            },
            Err(i) => {
                entries.insert(i, (key, value));
                (Ok(None), true)
            }
        })?
    }

    /// The value of `key`, if it is there.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let key = encode(key)?;
        self.view().lookup(&key)?.map(|bytes| codec::decode(&bytes)).transpose()
    }

    /// Removes `key`; returns its value, if it was there. `Decode` if the
    /// value is not a `V`, with the dict unchanged.
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        let key = encode(key)?;
        self.view().update(|entries| match table::find(entries, &key) {
            Ok(i) => match codec::decode(&entries[i].1) {
                Ok(old) => {
                    entries.remove(i);
                    (Ok(Some(old)), true)
                }
                Err(e) => (Err(e), false),
            },
            Err(_) => (Ok(None), false),
        })?
    }

    /// Whether `key` is there.
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        let key = encode(key)?;
        Ok(self.view().lookup(&key)?.is_some())
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        self.view().update(|entries| {
            let changed = !entries.is_empty();
            entries.clear();
            ((), changed)
        })
    }

    /// The number of entries. Taken under the lock, so it agrees with
    /// [`to_map`](Self::to_map) when nothing changes in between.
    pub fn len(&self) -> usize {
        self.view().len()
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes the encoded map may take (the capacity asked for, perhaps
    /// enlarged by page rounding).
    pub fn capacity(&self) -> usize {
        self.view().capacity()
    }

    /// A copy of the whole map, consistent at one instant. Changing it does
    /// not change the shared dict.
    pub fn to_map(&self) -> Result<BTreeMap<K, V>>
    where
        K: Ord,
    {
        let entries = self.view().read(|entries| entries)?;
        entries.iter().map(|(k, v)| Ok((codec::decode(k)?, codec::decode(v)?))).collect()
    }
}

impl<K, V> std::fmt::Debug for Dict<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dict").field("name", &self.seg.name()).field("table", self.seg.object()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn capacity_is_validated_and_rounded_up() {
        assert!(matches!(Dict::<u32, u32>::new(3), Err(Error::InvalidArgument { .. })));
        let d = Dict::<u32, u32>::new(16).unwrap();
        assert!(d.capacity() >= 16);
        assert!(d.is_empty());
        d.clear().unwrap();
        assert!(format!("{d:?}").contains("Dict"));
    }
}
