//! The named objects, and the one builder that creates and opens them all.
//!
//! Every lifecycle call (`create`, `open`, `open_or_create`, `new`, `builder`,
//! `name`) of every named type comes from [`Builder`] and the
//! `named_lifecycle!` macro below, which write each call once; the types
//! themselves only add their own operations.

mod barrier;
mod condition;
mod event;
mod guard;
mod lock;
mod mutex;
mod rwlock;
mod semaphore;

use std::marker::PhantomData;
use std::time::Duration;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard, WaitTimeoutResult};
pub use event::Event;
pub use guard::LockGuard;
pub use lock::{Lock, RLock, RLockGuard};
pub use mutex::{Mutex, MutexGuard};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockUpgradableReadGuard, RwLockWriteGuard};
pub use semaphore::{BoundedSemaphore, Permit, Semaphore};

use crate::error::{Error, Result};
use crate::segment::{self, Layout, Options};

/// A named object type: [`Lock`], [`RLock`], [`Event`], [`Condition`],
/// [`Semaphore`], [`BoundedSemaphore`], [`Barrier`], [`RwLock`] and the
/// typed data objects. Sealed: implemented only inside shmsync.
pub trait NamedObject: Layout + Sized + private::FromSegment {}

mod private {
    /// Builds the public handle from its mapped segment.
    pub trait FromSegment: crate::segment::Layout {
        fn from_segment(seg: crate::segment::Segment<Self::Object>) -> Self;
    }
}
pub(crate) use private::FromSegment;

impl<K: Layout + private::FromSegment> NamedObject for K {}

/// Creates or opens a named object of type `K` with options.
///
/// Get one from `K::builder(name)`, e.g. [`Lock::builder`].
///
/// ```
/// use std::time::Duration;
/// use shmsync::Lock;
///
/// let lock = Lock::builder("doc-builder-lock")
///     .mode(0o600)
///     .open_timeout(Duration::from_secs(1))
///     .unlink_on_drop(true)
///     .open_or_create()?;
/// assert_eq!(lock.name(), "doc-builder-lock");
/// # Ok::<(), shmsync::Error>(())
/// ```
#[must_use = "a builder does nothing until create, open or open_or_create"]
pub struct Builder<K: NamedObject> {
    opts: Options,
    params: K::Params,
    _kind: PhantomData<fn() -> K>,
}

impl<K: NamedObject> Builder<K>
where
    K::Params: Default,
{
    pub(crate) fn new(name: &str) -> Builder<K> {
        Builder { opts: Options::new(name), params: K::Params::default(), _kind: PhantomData }
    }
}

impl<K: NamedObject> Builder<K> {
    /// Permission bits for a new segment (default `0o600`). Applied exactly,
    /// not narrowed by the umask. Only the `0o777` bits are allowed.
    pub fn mode(mut self, mode: u32) -> Self {
        self.opts.mode = mode;
        self
    }

    /// How long `open` waits for a creator in another process to finish
    /// initialising (default 5 s). A creator found dead ends the wait at once
    /// with [`Error::InitTimeout`].
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.opts.open_timeout = timeout;
        self
    }

    /// Whether the handle that *creates* the segment removes its name when
    /// dropped (default `false`). Opened handles never unlink, and neither do
    /// copies inherited by forked children.
    pub fn unlink_on_drop(mut self, unlink: bool) -> Self {
        self.opts.unlink_on_drop = unlink;
        self
    }

    /// Also accept, at `open`, a segment whose file belongs to `uid` (repeat
    /// for several). By default `open` and `open_or_create` refuse a segment
    /// owned by any uid but the caller's effective one with
    /// [`Error::ForeignOwner`]: another user could have made it first under
    /// the name you expect, to feed you forged state.
    pub fn allow_owner(mut self, uid: u32) -> Self {
        self.opts.owners = match self.opts.owners {
            segment::Owners::Any => segment::Owners::Any,
            segment::Owners::Caller => segment::Owners::AlsoUids(vec![uid]),
            segment::Owners::AlsoUids(mut uids) => {
                uids.push(uid);
                segment::Owners::AlsoUids(uids)
            }
        };
        self
    }

    /// Accept, at `open`, a segment whatever user owns its file: for setups
    /// that share objects across users on purpose and trust every user who
    /// can create files in `/dev/shm`.
    pub fn any_owner(mut self) -> Self {
        self.opts.owners = segment::Owners::Any;
        self
    }

    pub(crate) fn params_mut(&mut self) -> &mut K::Params {
        &mut self.params
    }

    /// Creates the object. [`Error::AlreadyExists`] if the name is taken.
    pub fn create(self) -> Result<K> {
        segment::create::<K>(&self.opts, &self.params).map(K::from_segment)
    }

    /// Opens an existing object: [`Error::NotFound`], [`Error::WrongKind`],
    /// [`Error::IncompatibleLayout`], [`Error::Corrupt`],
    /// [`Error::InitTimeout`] or [`Error::PermissionDenied`] when it cannot.
    /// Parameters given to the builder are ignored.
    pub fn open(self) -> Result<K> {
        segment::open::<K>(&self.opts).map(K::from_segment)
    }

    /// Creates the object, or opens it if the name exists (then the
    /// parameters are ignored). Exactly one process initialises it.
    pub fn open_or_create(self) -> Result<K> {
        segment::open_or_create::<K>(&self.opts, &self.params).map(K::from_segment)
    }

    /// Creates the object under a generated unique name, removed when this
    /// handle drops.
    pub(crate) fn create_unique(mut self) -> Result<K> {
        self.opts.unlink_on_drop = true;
        self.opts.ephemeral = true;
        // A stale segment from a dead process with a recycled pid could hold
        // the generated name; O_EXCL reports it, and the next name is new.
        for _ in 0..8 {
            self.opts.name = segment::name::generate();
            match segment::create::<K>(&self.opts, &self.params) {
                Err(Error::AlreadyExists { .. }) => continue,
                done => return done.map(K::from_segment),
            }
        }
        Err(Error::AlreadyExists { name: self.opts.name })
    }
}

/// Removes the name of a segment. Handles that are already open keep
/// working; later `open` calls get [`Error::NotFound`].
///
/// ```
/// let lock = shmsync::Lock::create("doc-unlink")?;
/// shmsync::unlink("doc-unlink")?;
/// assert!(matches!(shmsync::Lock::open("doc-unlink"), Err(shmsync::Error::NotFound { .. })));
/// drop(lock.lock()); // still works
/// # Ok::<(), shmsync::Error>(())
/// ```
pub fn unlink(name: &str) -> Result<()> {
    segment::unlink(name)
}

/// Writes the lifecycle calls of a named type once, inside an `impl` block
/// of any shape (generic types use it too). `$param: $ty` are the creation
/// parameters, each with a builder method of the same name. The type keeps
/// its segment in a field called `seg`.
macro_rules! lifecycle_fns {
    ($ty:ident { $($param:ident : $pty:ty),* }) => {
        #[doc = concat!("Creates a new ", stringify!($ty), " named `name`.")]
        ///
        /// [`Error::AlreadyExists`](crate::Error::AlreadyExists) if the
        /// name is taken; [`Error::InvalidName`](crate::Error::InvalidName)
        /// if it breaks the rules (1 to 200 bytes of `[A-Za-z0-9._-]`).
        pub fn create(name: &str $(, $param: $pty)*) -> $crate::Result<Self> {
            Self::builder(name)$(.$param($param))*.create()
        }

        #[doc = concat!("Opens the existing ", stringify!($ty), " named `name`.")]
        ///
        /// Waits up to 5 s (see `builder().open_timeout`) for a creator
        /// in another process to finish. Errors: `NotFound`, `WrongKind`,
        /// `IncompatibleLayout` (another build, or other types), `Corrupt`,
        /// `InitTimeout`, `PermissionDenied`.
        pub fn open(name: &str) -> $crate::Result<Self> {
            Self::builder(name).open()
        }

        #[doc = concat!("Opens the ", stringify!($ty), " named `name`, creating it first if it does not exist.")]
        ///
        /// Any number of processes may race here: exactly one creates and
        /// initialises, the others open. The parameters of an existing
        /// object are kept.
        pub fn open_or_create(name: &str $(, $param: $pty)*) -> $crate::Result<Self> {
            Self::builder(name)$(.$param($param))*.open_or_create()
        }

        #[doc = concat!("Creates a new ", stringify!($ty), " under a generated unique name, removed when this handle drops.")]
        ///
        /// Forked children inherit it; other processes open it by
        /// [`name`](Self::name).
        pub fn new($($param: $pty),*) -> $crate::Result<Self> {
            Self::builder("unnamed")$(.$param($param))*.create_unique()
        }

        #[doc = concat!("A [`Builder`](crate::Builder) for a ", stringify!($ty), " named `name`, to set the mode, open timeout and unlink-on-drop.")]
        pub fn builder(name: &str) -> $crate::Builder<Self> {
            $crate::Builder::new(name)
        }

        /// The segment's name, without a leading `/`.
        pub fn name(&self) -> &str {
            self.seg.name()
        }

        /// The pid of the process that created the segment, as the segment
        /// records it: a peer could have written anything there, so treat it
        /// as a hint (see [`owner_uid`](Self::owner_uid) for who made the file).
        pub fn creator_pid(&self) -> Option<u32> {
            self.seg.creator_pid()
        }

        /// The uid that owns the segment's file, as the kernel reports it.
        pub fn owner_uid(&self) -> u32 {
            self.seg.owner_uid()
        }
    };
}
pub(crate) use lifecycle_fns;

/// The lifecycle calls, `FromSegment` and `Debug` of a non-generic named
/// type whose only field is `seg`.
macro_rules! named_lifecycle {
    ($ty:ident { $($param:ident : $pty:ty),* }) => {
        impl $ty {
            crate::named::lifecycle_fns!($ty { $($param: $pty),* });
        }

        impl crate::named::FromSegment for $ty {
            fn from_segment(seg: crate::segment::Segment<Self::Object>) -> Self {
                $ty { seg }
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty)).field("name", &self.name()).field("object", self.seg.object()).finish()
            }
        }
    };
}
pub(crate) use named_lifecycle;
