//! How to create or open a segment: [`Options`], and whose segments
//! `open` accepts ([`Owners`]).

use std::time::Duration;

use crate::sys::shm;

/// The default permission bits: owner read and write.
pub const DEFAULT_MODE: u32 = 0o600;
/// How long `open` waits for a creator to finish, by default.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Whose segments `open` accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Owners {
    /// Only the caller's effective uid (the default).
    #[default]
    Caller,
    /// The caller's, or one of these uids.
    AlsoUids(Vec<u32>),
    /// Any owner.
    Any,
}

impl Owners {
    pub(super) fn admit(&self, uid: u32) -> bool {
        uid == shm::euid()
            || match self {
                Owners::Caller => false,
                Owners::AlsoUids(uids) => uids.contains(&uid),
                Owners::Any => true,
            }
    }
}

/// How to create or open a segment.
#[derive(Clone, Debug)]
pub struct Options {
    /// The name as the user gave it (validated when used).
    pub name: String,
    /// Permission bits for a new segment.
    pub mode: u32,
    /// How long `open` waits for the creator.
    pub open_timeout: Duration,
    /// Whether the creating handle removes the name when dropped.
    pub unlink_on_drop: bool,
    /// Whose segments `open` accepts.
    pub owners: Owners,
    /// Marks the segment as made by `K::new()`: debris once its creator is
    /// dead and nobody maps it.
    pub ephemeral: bool,
}

impl Options {
    /// Defaults for `name`.
    pub fn new(name: &str) -> Options {
        Options {
            name: name.to_string(),
            mode: DEFAULT_MODE,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            unlink_on_drop: false,
            owners: Owners::Caller,
            ephemeral: false,
        }
    }
}
