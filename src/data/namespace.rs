//! `Namespace`: named fields of any serde type in a named segment (the
//! `Namespace` of Python's `Manager`), on the same two-half [`Table`] as
//! `Dict`.
//!
//! A field is an entry whose key is the field name (postcard bytes of the
//! string) and whose value is an 8-byte tag, the little-endian
//! [`type_hash`](crate::segment::type_hash) of the value's type, followed by
//! the value's postcard bytes. The tag is what lets `get` of another type be
//! `Decode` rather than a misread: postcard is not self-describing.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec;
use super::table::{self, Table, TableParams, View};
use crate::error::{Error, Result};
use crate::named::FromSegment;
use crate::segment::{self, Kind, Layout, Segment};
use crate::Builder;

/// Bytes of the type tag before each value.
const TAG: usize = 8;

/// Named fields of any serde type, shared by name between processes (the
/// `Namespace` of Python's `multiprocessing.Manager`).
///
/// [`set`](Self::set) stores a value under a field name; [`get`](Self::get)
/// returns a copy. As in Python, changing a value you got does not change the
/// shared one until you `set` it again. Getting a field as another type than
/// it was set with is [`Error::Decode`].
///
/// Fields live in one map under a robust lock, recovered silently if a holder
/// died; a `set` or `remove` is wholly applied or not at all, even if its
/// process is killed in it. Cost: every operation decodes the whole map, and
/// each mutation re-encodes it, so each is O(size of the namespace): made for
/// the small shared state Python's `Manager` is used for, not for a database.
/// A `set` that would not fit is [`Error::Full`], with the namespace
/// unchanged.
///
/// ```
/// let ns = shmsync::Namespace::new(4096)?;
/// ns.set("workers", &4u32)?;
/// ns.set("label", &"nightly".to_string())?;
/// assert_eq!(ns.get::<u32>("workers")?, Some(4));
/// assert_eq!(ns.get::<String>("label")?.as_deref(), Some("nightly"));
/// assert_eq!(ns.get::<u32>("missing")?, None);
/// assert!(matches!(ns.get::<String>("workers"), Err(shmsync::Error::Decode { .. })));
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct Namespace {
    seg: Segment<Table>,
}

impl Layout for Namespace {
    type Object = Table;
    type Params = TableParams;
    const KIND: Kind = Kind::Namespace;

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

impl Builder<Namespace> {
    /// The bytes the encoded fields may take (default 64 KiB). The segment
    /// holds two copies, and rounding up to whole pages may add a little.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.params_mut().capacity = bytes;
        self
    }
}

impl FromSegment for Namespace {
    fn from_segment(seg: Segment<Table>) -> Self {
        Namespace { seg }
    }
}

fn key(field: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    codec::encode_into(field, &mut bytes)?;
    Ok(bytes)
}

impl Namespace {
    crate::named::lifecycle_fns!(Namespace { capacity: usize });

    fn view(&self) -> View<'_> {
        View::of(&self.seg)
    }

    /// Sets `field` to `value`, replacing any value (of any type) it had.
    /// `Full` if the namespace would not fit, with nothing changed.
    ///
    /// The value is stored with its type's fingerprint, and read back only as
    /// that type, so `T` is an owned type: pass `&"text".to_string()` (a
    /// `String`), not `"text"` (a `str`), and read it with `get::<String>`.
    pub fn set<T: Serialize + DeserializeOwned>(&self, field: &str, value: &T) -> Result<()> {
        let key = key(field)?;
        let mut encoded = Vec::new();
        codec::encode_into(value, &mut encoded)?;
        let mut bytes = Vec::with_capacity(TAG + encoded.len());
        bytes.extend_from_slice(&segment::type_hash::<T>().to_le_bytes());
        bytes.extend_from_slice(&encoded);
        self.view().update(|entries| {
            table::insert(entries, key, bytes);
            ((), true)
        })
    }

    /// A copy of `field`'s value, or `None` if it is not set. `Decode` if it
    /// was set with another type.
    pub fn get<T: DeserializeOwned>(&self, field: &str) -> Result<Option<T>> {
        let key = key(field)?;
        let Some(bytes) = self.view().lookup(&key)? else { return Ok(None) };
        let (tag, value) = bytes.split_at(TAG.min(bytes.len()));
        if tag != segment::type_hash::<T>().to_le_bytes() {
            return Err(Error::Decode {
                detail: format!("field '{field}' holds another type than {}", std::any::type_name::<T>()),
            });
        }
        codec::decode(value).map(Some)
    }

    /// Removes `field`; whether it was set.
    pub fn remove(&self, field: &str) -> Result<bool> {
        let key = key(field)?;
        self.view().update(|entries| {
            let removed = table::remove(entries, &key).is_some();
            (removed, removed)
        })
    }

    /// The number of fields set.
    pub fn len(&self) -> usize {
        self.view().len()
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("name", &self.seg.name()).field("table", self.seg.object()).finish()
    }
}
