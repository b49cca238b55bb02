//! Named shared memory: one segment per object, a header, the create/open
//! handshake, names, the owner check, one mapping per inode, and lifecycle.
//! Written once, generic over the object [`Layout`]; every named type uses it.
//!
//! Create builds the whole object under a temporary name and then renames it
//! into place, so its real name only ever names a whole object:
//! `shm_open(O_CREAT | O_EXCL)` of a fresh temporary name, `fchmod` (the exact
//! mode, beyond the umask), `ftruncate`, reserve the first page, map, claim
//! the header (`creator_pid`, `creator_start`, `state = INITIALISING`),
//! reserve the rest with `posix_fallocate` (so a full `/dev/shm` fails here,
//! never as `SIGBUS` later), write the header and the object, store
//! `state = READY` (Release), then `renameat2(RENAME_NOREPLACE)` to the real
//! name. A creator killed at any step leaves nothing under the real name
//! (only a temporary file that `gc` removes); a failed init is unlinked; a
//! lost race to the name is `AlreadyExists`; another user never meets the
//! object in the instant before its mode is set.
//!
//! Open: `shm_open(O_RDWR)`, `fstat` (the owner must be the caller, or one
//! the builder allows), map (sharing this process's mapping of the inode if
//! it has one), wait (bounded) for `state == READY` (only a foreign or
//! damaged file can be caught before it), check magic, version, kind,
//! fingerprint and size against what `fstat` says, make sure the file's
//! storage is allocated, and check the object itself.

pub(crate) mod header;
mod mapping;
pub(crate) mod name;

use std::fs::File;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;

pub use header::{type_hash, Kind};
use header::{Fingerprint, Header};
pub(crate) use mapping::fork_guard;
use mapping::Mapping;

use crate::error::{Error, Result};
use crate::sys::proc::{self, Identity};
use crate::sys::shm::{self, Stat};
use crate::sys::time::Deadline;
use crate::sys::{futex, pthread};

/// The default permission bits: owner read and write.
pub const DEFAULT_MODE: u32 = 0o600;
/// How long `open` waits for a creator to finish, by default.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an opener waiting on a creator checks that the creator lives.
const CREATOR_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// How many times `open_or_create` retries when the name vanishes between a
/// failed create and the open (another process unlinked it).
const OPEN_OR_CREATE_TRIES: usize = 16;

/// This module's crash points (see [`crate::crash`]).
pub(crate) const CRASH_POINTS: &[&str] = &["segment.create.claimed", "segment.create.ready"];

/// What a segment holds and how to initialise it. Implemented by each named
/// object type; not implementable outside the crate (the trait lives in a
/// private module).
pub trait Layout {
    /// The raw object stored after the header.
    type Object: Sync;
    /// What `create` needs to initialise the object.
    type Params;
    /// The kind recorded in the header.
    const KIND: Kind;

    /// Initialises the object in place. `trailing` is how many bytes follow
    /// it in the segment: at least [`trailing_bytes`](Self::trailing_bytes),
    /// plus whatever rounding up to whole pages added. An error here
    /// (parameters that `validate` let through) removes the new segment.
    ///
    /// # Safety
    /// `object` is valid for writes of `Self::Object` and `trailing` more
    /// bytes, aligned, and not yet visible to any other thread or process.
    unsafe fn init(object: *mut Self::Object, trailing: usize, params: &Self::Params) -> Result<()>;

    /// How many bytes the object needs after itself (a ring, an arena).
    fn trailing_bytes(_params: &Self::Params) -> usize {
        0
    }

    /// On open: checks the object's own fields (counts within bounds, lock
    /// kinds as `init` wrote them, what it records about its trailing bytes
    /// against the `trailing` bytes the file really has). A description of
    /// the first problem found becomes [`Error::Corrupt`].
    fn check(_object: &Self::Object, _trailing: usize) -> std::result::Result<(), String> {
        Ok(())
    }

    /// Rejects parameters the object cannot take, before anything is created.
    fn validate(_name: &str, _params: &Self::Params) -> Result<()> {
        Ok(())
    }

    /// A fingerprint of user-chosen types inside the object, or 0.
    fn type_hash() -> u64 {
        0
    }
}

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
    fn admit(&self, uid: u32) -> bool {
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

/// A mapped segment holding one `T` after the header.
pub struct Segment<T> {
    /// Shared with every other handle to the same inode in this process;
    /// `None` only inside `drop`.
    map: Option<Arc<Mapping>>,
    /// The object's address in that mapping, kept so that every operation
    /// reaches it in one load.
    object: *const u8,
    name: String,
    /// The pid that may unlink on drop: a forked child that drops an
    /// inherited handle must not remove its parent's name.
    unlinker: Option<u32>,
    /// The file's owner, from `fstat`.
    owner_uid: u32,
    _object: PhantomData<T>,
}

// SAFETY: the mapping is plain shared memory, valid from any thread; the only
// access it gives is `&T`, which needs `T: Sync` to cross threads.
unsafe impl<T: Sync> Send for Segment<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for Segment<T> {}

impl<T> Segment<T> {
    fn mapping(&self) -> &Mapping {
        // `map` is Some from construction until drop.
        self.map.as_deref().unwrap_or_else(|| unreachable!("segment used during drop"))
    }

    /// The name, without a leading `/`.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn header(&self) -> &Header {
        header_of(self.mapping())
    }

    /// The object after the header.
    #[inline]
    pub fn object(&self) -> &T {
        // SAFETY: a Segment<T> is only returned by `create` (which wrote the
        // object) or by `open` (which checked kind, layout and size), so a
        // valid, initialised T sits at OBJECT_OFFSET, aligned (the offset is a
        // multiple of T's alignment, asserted in `total_size`), and is mapped
        // for as long as `self` lives (`object` points into `map`, which
        // `self` holds). T is designed for shared `&` access.
        unsafe { &*self.object.cast::<T>() }
    }

    /// The pid of the process that created the segment, as the segment says.
    pub fn creator_pid(&self) -> Option<u32> {
        self.header().creator()
    }

    /// The uid that owns the segment's file.
    pub fn owner_uid(&self) -> u32 {
        self.owner_uid
    }

    /// The bytes after the object: a pointer with the whole mapping's
    /// provenance, and their length, bounded by the mapping itself (never by
    /// anything the segment says).
    pub fn trailing(&self) -> (*mut u8, usize) {
        let start = header::OBJECT_OFFSET + size_of::<T>();
        let map = self.mapping();
        // SAFETY: `start` is within the mapping: create sized it to hold the
        // header, the object and the trailing bytes, and open checked that
        // the file (and so the mapping) is at least that long.
        (unsafe { map.ptr().add(start) }, map.len().saturating_sub(start))
    }
}

impl<T> Drop for Segment<T> {
    fn drop(&mut self) {
        let Some(map) = self.map.take() else { return };
        if self.unlinker == Some(proc::pid()) {
            unlink_if_same(&self.name, map.id());
        }
        mapping::release(map, held_by_this_process);
    }
}

/// The header of a mapping (every mapping covers at least the header).
fn header_of(map: &Mapping) -> &Header {
    // SAFETY: every mapping a Segment holds is at least OBJECT_OFFSET long
    // (create sizes it; open checks the size before mapping), page-aligned,
    // and lives as long as `map`. Other processes change only the atomic
    // fields concurrently.
    unsafe { &*map.ptr().cast::<Header>() }
}

/// Whether a thread of this process holds the lock that `map`'s object
/// starts with (a guard forgotten with `mem::forget`): then the mapping must
/// stay, because glibc's robust list points into it.
fn held_by_this_process(map: &Mapping) -> bool {
    let h = header_of(map);
    let has_lock = h.state.load(Ordering::Acquire) == header::READY
        && Kind::from_u32(h.kind).is_some_and(Kind::starts_with_lock)
        && map.len() >= header::OBJECT_OFFSET + size_of::<libc::pthread_mutex_t>();
    if !has_lock {
        return false;
    }
    // SAFETY: the object at OBJECT_OFFSET starts with a pthread mutex (its
    // kind says so) inside the mapping, which is live for this call.
    let owner = unsafe { pthread::owner(map.ptr().add(header::OBJECT_OFFSET).cast()) };
    owner.is_some_and(proc::is_thread_of_this_process)
}

/// Removes `name` only if it still names the object `id` (device, inode):
/// if it was unlinked and re-created meanwhile, the new object stays.
fn unlink_if_same(name: &str, id: (u64, u64)) {
    match shm::stat_name(name) {
        Ok(st) if (st.dev, st.ino) == id => match shm::unlink(name) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => log::warn!("shmsync: could not unlink segment '{name}' on drop: {e}"),
        },
        Ok(_) => log::debug!("shmsync: '{name}' now names another object; left it in place"),
        Err(_) => {}
    }
}

/// The smallest segment that holds `L`'s header and object.
fn min_size<L: Layout>() -> usize {
    const { assert!(align_of::<L::Object>() <= header::OBJECT_OFFSET, "object alignment exceeds the header size") };
    header::OBJECT_OFFSET + size_of::<L::Object>()
}

/// The segment size for `L` with `trailing` bytes after the object, rounded
/// up to whole pages; `None` if it overflows.
fn total_size<L: Layout>(trailing: usize) -> Option<usize> {
    min_size::<L>().checked_add(trailing)?.checked_next_multiple_of(shm::page_size())
}

fn expected_fingerprint<L: Layout>() -> Fingerprint {
    let u32_of = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Fingerprint {
        ptr_width: u32_of(size_of::<usize>()),
        mutex_size: u32_of(size_of::<libc::pthread_mutex_t>()),
        object_size: u32_of(size_of::<L::Object>()),
        object_align: u32_of(align_of::<L::Object>()),
        type_hash: L::type_hash(),
        libc: header::LIBC,
    }
}

fn segment<T>(map: Arc<Mapping>, name: &str, unlinker: Option<u32>, owner_uid: u32) -> Segment<T> {
    // SAFETY: every mapping a Segment holds covers the header, so the object
    // offset is within it (or one past its end for a short foreign file,
    // which `open` refuses before anyone reads the object).
    let object = unsafe { map.ptr().add(header::OBJECT_OFFSET) }.cast_const();
    Segment { map: Some(map), object, name: name.to_string(), unlinker, owner_uid, _object: PhantomData }
}

fn no_space(name: &str, bytes: usize) -> Error {
    Error::NoSpace { name: name.to_string(), bytes }
}

/// Creates the segment; `AlreadyExists` if the name is taken.
pub fn create<L: Layout>(opts: &Options, params: &L::Params) -> Result<Segment<L::Object>> {
    let name = name::validate(&opts.name)?;
    if opts.mode & !0o777 != 0 {
        return Err(Error::InvalidArgument {
            name: name.to_string(),
            detail: format!("mode {:#o} has bits outside 0o777", opts.mode),
        });
    }
    L::validate(name, params)?;
    let len = total_size::<L>(L::trailing_bytes(params)).ok_or_else(|| Error::InvalidArgument {
        name: name.to_string(),
        detail: "the requested size overflows".to_string(),
    })?;
    let temp = name::temp();
    let file = shm::create(&temp, opts.mode, len).map_err(|e| match e {
        shm::CreateError::Open(Errno::EACCES) => Error::PermissionDenied { name: name.to_string() },
        shm::CreateError::Open(Errno::ENOSPC) | shm::CreateError::Size(Errno::ENOSPC | Errno::EFBIG) => {
            no_space(name, len)
        }
        shm::CreateError::Open(e) => Error::os("shm_open", name, e),
        shm::CreateError::Chmod(e) => Error::os("fchmod", name, e),
        shm::CreateError::Size(e) => Error::os("ftruncate", name, e),
    })?;
    // From here on, any failure removes the temporary name; the real name is
    // untouched until the rename.
    let built = build::<L>(&file, &temp, name, len, opts, params);
    let published = built.and_then(|seg| {
        crash_point!("segment.create.ready");
        publish(&temp, name).map(|()| seg)
    });
    match published {
        Ok(mut seg) => {
            seg.name = name.to_string();
            seg.unlinker = opts.unlink_on_drop.then(proc::pid);
            Ok(seg)
        }
        Err(e) => {
            let _ = shm::unlink(&temp);
            Err(e)
        }
    }
}

/// Everything of `create` between making the temporary file and renaming it.
fn build<L: Layout>(
    file: &File,
    temp: &str,
    name: &str,
    len: usize,
    opts: &Options,
    params: &L::Params,
) -> Result<Segment<L::Object>> {
    let page = shm::page_size().min(len);
    // The header's page first, so claiming it cannot fault on a full /dev/shm.
    shm::allocate(file, page).map_err(|e| match e {
        Errno::ENOSPC => no_space(name, len),
        e => Error::os("posix_fallocate", name, e),
    })?;
    let st = shm::stat(file).map_err(|e| Error::os("fstat", name, e))?;
    let map = mapping::get_or_map(file, &st, len).map_err(|e| Error::os("mmap", name, e))?;
    let seg = segment::<L::Object>(map, temp, None, st.uid);
    let me = Identity::this_process();
    let h = seg.mapping().ptr().cast::<Header>();
    // SAFETY: the mapping is `len` bytes, page-aligned, and its first page is
    // allocated and zero-filled, so every header field is valid and in
    // bounds. Nobody else knows the temporary name; the atomic fields are
    // reached through shared references, the plain ones through raw
    // pointers, creating no reference that could alias a reader.
    unsafe {
        (*h).creator_pid.store(me.id, Ordering::Relaxed);
        (&raw mut (*h).creator_start).write(me.start);
        (*h).state.store(header::INITIALISING, Ordering::Relaxed);
    }
    crash_point!("segment.create.claimed");
    shm::allocate(file, len).map_err(|e| match e {
        Errno::ENOSPC => no_space(name, len),
        e => Error::os("posix_fallocate", name, e),
    })?;
    let fp = expected_fingerprint::<L>();
    // SAFETY: as above; the whole mapping is allocated now.
    unsafe {
        (&raw mut (*h).magic).write(header::MAGIC);
        (&raw mut (*h).layout_version).write(header::LAYOUT_VERSION);
        (&raw mut (*h).kind).write(L::KIND as u32);
        (&raw mut (*h).total_size).write(len as u64);
        (&raw mut (*h).ptr_width).write(fp.ptr_width);
        (&raw mut (*h).mutex_size).write(fp.mutex_size);
        (&raw mut (*h).object_size).write(fp.object_size);
        (&raw mut (*h).object_align).write(fp.object_align);
        (&raw mut (*h).type_hash).write(fp.type_hash);
        (&raw mut (*h).libc).write(fp.libc);
        (&raw mut (*h).flags).write(if opts.ephemeral { header::EPHEMERAL } else { 0 });
    }
    // SAFETY: the object area starts at OBJECT_OFFSET, inside the mapping
    // (total_size covers it) and aligned for the object (total_size asserts
    // the alignment divides the offset); nobody else can read it yet.
    unsafe {
        L::init(seg.mapping().ptr().add(header::OBJECT_OFFSET).cast(), len - min_size::<L>(), params)
            .map_err(|e| with_name(e, name))?;
    }
    // Release: an opener that reads READY with Acquire sees the header and the
    // object fully written.
    seg.header().state.store(header::READY, Ordering::Release);
    Ok(seg)
}

/// Gives the object's name to an error raised before the object knew it.
fn with_name(e: Error, name: &str) -> Error {
    match e {
        Error::InvalidArgument { name: n, detail } if n.is_empty() => {
            Error::InvalidArgument { name: name.to_string(), detail }
        }
        e => e,
    }
}

/// Renames the finished segment from `temp` to `name`, never over another.
fn publish(temp: &str, name: &str) -> Result<()> {
    shm::rename_no_replace(temp, name).map_err(|e| match e {
        Errno::EEXIST => Error::AlreadyExists { name: name.to_string() },
        Errno::EACCES | Errno::EPERM => Error::PermissionDenied { name: name.to_string() },
        e => Error::os("renameat2", name, e),
    })
}

/// Opens an existing segment, waiting up to `opts.open_timeout` for its
/// creator to finish.
pub fn open<L: Layout>(opts: &Options) -> Result<Segment<L::Object>> {
    let name = name::validate(&opts.name)?;
    let deadline = Deadline::after(opts.open_timeout);
    let file = shm::open(name).map_err(|e| match e {
        Errno::ENOENT => Error::NotFound { name: name.to_string() },
        Errno::EACCES | Errno::EPERM => Error::PermissionDenied { name: name.to_string() },
        e => Error::os("shm_open", name, e),
    })?;
    let st = wait_for_size(&file, name, &deadline, opts.open_timeout)?;
    if !opts.owners.admit(st.uid) {
        return Err(Error::ForeignOwner { name: name.to_string(), uid: st.uid, caller: shm::euid() });
    }
    let size = usize::try_from(st.size).map_err(|_| Error::Corrupt {
        name: name.to_string(),
        detail: format!("its size, {} bytes, does not fit in memory", st.size),
    })?;
    let map = mapping::get_or_map(&file, &st, size).map_err(|e| Error::os("mmap", name, e))?;
    let seg = segment::<L::Object>(map, name, None, st.uid);
    wait_ready(seg.header(), name, &deadline, opts.open_timeout)?;
    check::<L>(seg.header(), size, name)?;
    // A file whose storage is not all allocated (a sparse foreign file) would
    // raise SIGBUS at the first touch of a missing page on a full /dev/shm.
    if st.allocated < st.size {
        shm::allocate(&file, size).map_err(|e| match e {
            Errno::ENOSPC => no_space(name, size),
            e => Error::os("posix_fallocate", name, e),
        })?;
    }
    L::check(seg.object(), size - min_size::<L>())
        .map_err(|detail| Error::Corrupt { name: name.to_string(), detail })?;
    Ok(seg)
}

/// Creates the segment, or opens it if it exists. Exactly one process
/// initialises it.
pub fn open_or_create<L: Layout>(opts: &Options, params: &L::Params) -> Result<Segment<L::Object>> {
    let mut last = None;
    for _ in 0..OPEN_OR_CREATE_TRIES {
        match create::<L>(opts, params) {
            Err(Error::AlreadyExists { .. }) => {}
            done => return done,
        }
        match open::<L>(opts) {
            // The name was unlinked between our create and our open: try again.
            Err(e @ Error::NotFound { .. }) => last = Some(e),
            done => return done,
        }
    }
    Err(last.unwrap_or_else(|| Error::NotFound { name: opts.name.clone() }))
}

/// Removes a segment's name. Handles that are open keep working.
pub fn unlink(name: &str) -> Result<()> {
    let name = name::validate(name)?;
    shm::unlink(name).map_err(|e| match e {
        Errno::ENOENT => Error::NotFound { name: name.to_string() },
        Errno::EACCES | Errno::EPERM => Error::PermissionDenied { name: name.to_string() },
        e => Error::os("shm_unlink", name, e),
    })
}

/// Waits until the file is at least a header long. shmsync's own creators
/// rename a segment into place only when it is whole, so an empty file was
/// made by someone else, perhaps still sizing it; there is no word to futex
/// on, so this sleeps in short, growing steps, bounded by the deadline.
fn wait_for_size(file: &File, name: &str, deadline: &Deadline, waited: Duration) -> Result<Stat> {
    let mut pause = Duration::from_micros(50);
    loop {
        let st = shm::stat(file).map_err(|e| Error::os("fstat", name, e))?;
        let size = st.size;
        if size >= header::OBJECT_OFFSET as u64 {
            return Ok(st);
        }
        if size > 0 {
            // The creator sizes the file in one step, so a short file was
            // never made by shmsync.
            return Err(Error::Corrupt {
                name: name.to_string(),
                detail: format!("it is {size} bytes, shorter than the {}-byte header", header::OBJECT_OFFSET),
            });
        }
        if deadline.has_passed() {
            return Err(Error::InitTimeout { name: name.to_string(), creator_pid: None, creator_alive: false, waited });
        }
        std::thread::sleep(pause.min(deadline.remaining()));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Waits on the state futex until the creator publishes READY. Ends early with
/// `InitTimeout` if the creator is found dead.
fn wait_ready(h: &Header, name: &str, deadline: &Deadline, waited: Duration) -> Result<()> {
    loop {
        // Acquire: pairs with the creator's Release store of READY.
        let state = h.state.load(Ordering::Acquire);
        match state {
            header::READY => return Ok(()),
            header::UNINIT | header::INITIALISING => {
                let creator = h.creator();
                let alive = h.creator_identity().is_some_and(|c| c.is_alive());
                let creator_died = creator.is_some() && !alive;
                if creator_died || deadline.has_passed() {
                    return Err(Error::InitTimeout {
                        name: name.to_string(),
                        creator_pid: creator,
                        creator_alive: alive,
                        waited,
                    });
                }
                let slice = Deadline::after(deadline.remaining().min(CREATOR_CHECK_INTERVAL));
                futex::wait(&h.state, state, Some(&slice));
            }
            other => {
                return Err(Error::Corrupt {
                    name: name.to_string(),
                    detail: format!("its init-state word is {other}, not 0, 1 or 2"),
                })
            }
        }
    }
}

/// Checks a READY header against what `L` expects and what `fstat` said.
fn check<L: Layout>(h: &Header, size: usize, name: &str) -> Result<()> {
    let corrupt = |detail: String| Error::Corrupt { name: name.to_string(), detail };
    let incompatible = |detail: String| Error::IncompatibleLayout { name: name.to_string(), detail };
    if h.magic != header::MAGIC {
        return Err(corrupt("it does not start with the shmsync magic".into()));
    }
    if h.layout_version != header::LAYOUT_VERSION {
        return Err(incompatible(format!(
            "layout version {} in the segment, {} in this build",
            h.layout_version,
            header::LAYOUT_VERSION
        )));
    }
    match Kind::from_u32(h.kind) {
        None => return Err(corrupt(format!("unknown object kind {}", h.kind))),
        Some(k) if k != L::KIND => {
            return Err(Error::WrongKind { name: name.to_string(), expected: L::KIND.name(), found: k.described() })
        }
        Some(_) => {}
    }
    let want = expected_fingerprint::<L>();
    let got = h.fingerprint();
    if got != want {
        return Err(incompatible(format!("segment {got:?}, this build expects {want:?}")));
    }
    let min = min_size::<L>();
    if h.total_size != size as u64 || size < min {
        return Err(corrupt(format!(
            "the header says {} bytes, the file has {size}, this kind needs at least {min}",
            h.total_size
        )));
    }
    Ok(())
}
