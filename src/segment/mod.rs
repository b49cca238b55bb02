//! Named shared memory: one segment per object, a header, the create/open
//! handshake, names and lifecycle. Written once, generic over the object
//! [`Layout`]; every named type uses it.
//!
//! Create: `shm_open(O_CREAT | O_EXCL)`, `fchmod`, `posix_fallocate`, map,
//! claim the header (`creator_pid`, `state = INITIALISING`), write the header
//! and the object, then publish `state = READY` (Release) and wake the state
//! futex.
//!
//! Open: `shm_open(O_RDWR)`, wait (bounded) for the size to cover the header
//! and for `state == READY`, then check magic, version, kind, fingerprint and
//! size against what `fstat` says.

mod header;
pub(crate) mod name;

use std::fs::File;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::sync::atomic::Ordering;
use std::time::Duration;

use memmap2::MmapRaw;
use nix::errno::Errno;

pub use header::{type_hash, Kind};
use header::{Fingerprint, Header};

use crate::error::{Error, Result};
use crate::sys::time::Deadline;
use crate::sys::{futex, proc, shm};

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
pub(crate) const CRASH_POINTS: &[&str] = &["segment.create.claimed"];

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

    /// On open: checks what the object records about its trailing bytes
    /// against the `trailing` bytes the file really has.
    fn check_trailing(_object: &Self::Object, _trailing: usize) -> std::result::Result<(), String> {
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
}

impl Options {
    /// Defaults for `name`.
    pub fn new(name: &str) -> Options {
        Options {
            name: name.to_string(),
            mode: DEFAULT_MODE,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            unlink_on_drop: false,
        }
    }
}

/// A mapped segment holding one `T` after the header.
pub struct Segment<T> {
    map: MmapRaw,
    name: String,
    /// The pid that may unlink on drop: a forked child that drops an
    /// inherited handle must not remove its parent's name.
    unlinker: Option<u32>,
    _object: PhantomData<T>,
}

// SAFETY: the mapping is plain shared memory, valid from any thread; the only
// access it gives is `&T`, which needs `T: Sync` to cross threads.
unsafe impl<T: Sync> Send for Segment<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for Segment<T> {}

impl<T> Segment<T> {
    /// The name, without a leading `/`.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn header(&self) -> &Header {
        // SAFETY: every Segment maps at least the header (create maps the
        // full size; open checks the size first), the mapping is page-aligned
        // and lives as long as `self`. Other processes change only the atomic
        // fields concurrently.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    /// The object after the header.
    #[inline]
    pub fn object(&self) -> &T {
        // SAFETY: a Segment<T> is only returned by `create` (which wrote the
        // object) or by `open` (which checked kind, layout and size), so a
        // valid, initialised T sits at OBJECT_OFFSET, aligned (the offset is a
        // multiple of T's alignment, asserted in `total_size`), and is mapped
        // for as long as `self` lives. T is designed for shared `&` access.
        unsafe { &*self.map.as_ptr().add(header::OBJECT_OFFSET).cast::<T>() }
    }

    /// The pid of the process that created the segment.
    pub fn creator_pid(&self) -> Option<u32> {
        self.header().creator()
    }

    /// The bytes after the object: a pointer with the whole mapping's
    /// provenance, and their length.
    pub fn trailing(&self) -> (*mut u8, usize) {
        let start = header::OBJECT_OFFSET + size_of::<T>();
        // SAFETY: `start` is within the mapping: create sized it to hold the
        // header, the object and the trailing bytes, and open checked that.
        (unsafe { self.map.as_mut_ptr().add(start) }, self.map.len() - start)
    }
}

impl<T> Drop for Segment<T> {
    fn drop(&mut self) {
        if self.unlinker == Some(proc::pid()) {
            match shm::unlink(&self.name) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => log::warn!("shmsync: could not unlink segment '{}' on drop: {e}", self.name),
            }
        }
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
    }
}

fn map_file<T>(file: &File, len: usize, name: &str, unlinker: Option<u32>) -> Result<Segment<T>> {
    let map = shm::map(file, len).map_err(|e| Error::os("mmap", name, e))?;
    Ok(Segment { map, name: name.to_string(), unlinker, _object: PhantomData })
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
    let file = shm::create(name, opts.mode, len).map_err(|e| match e {
        shm::CreateError::Open(Errno::EEXIST) => Error::AlreadyExists { name: name.to_string() },
        shm::CreateError::Open(Errno::EACCES) => Error::PermissionDenied { name: name.to_string() },
        shm::CreateError::Open(Errno::ENOSPC) | shm::CreateError::Setup(Errno::ENOSPC | Errno::EFBIG) => {
            Error::NoSpace { name: name.to_string(), bytes: len }
        }
        shm::CreateError::Open(e) => Error::os("shm_open", name, e),
        shm::CreateError::Setup(e) => Error::os("posix_fallocate", name, e),
    })?;
    let me = proc::pid();
    let seg = match map_file::<L::Object>(&file, len, name, opts.unlink_on_drop.then_some(me)) {
        Ok(seg) => seg,
        Err(e) => {
            let _ = shm::unlink(name);
            return Err(e);
        }
    };
    let h = seg.map.as_mut_ptr().cast::<Header>();
    // SAFETY: the mapping is `len` bytes, page-aligned and zero-filled, so
    // every header field is valid and in bounds. Until READY is published,
    // other processes only touch the atomic `state` and `creator_pid` (which we
    // reach through shared references); the plain fields are written through
    // raw pointers, creating no reference that could alias their reads.
    unsafe {
        (*h).creator_pid.store(me, Ordering::Relaxed);
        (*h).state.store(header::INITIALISING, Ordering::Relaxed);
        let fp = expected_fingerprint::<L>();
        (&raw mut (*h).magic).write(header::MAGIC);
        (&raw mut (*h).layout_version).write(header::LAYOUT_VERSION);
        (&raw mut (*h).kind).write(L::KIND as u32);
        (&raw mut (*h).total_size).write(len as u64);
        (&raw mut (*h).ptr_width).write(fp.ptr_width);
        (&raw mut (*h).mutex_size).write(fp.mutex_size);
        (&raw mut (*h).object_size).write(fp.object_size);
        (&raw mut (*h).object_align).write(fp.object_align);
        (&raw mut (*h).type_hash).write(fp.type_hash);
    }
    crash_point!("segment.create.claimed");
    // SAFETY: the object area starts at OBJECT_OFFSET, inside the mapping
    // (total_size covers it) and aligned for the object (total_size asserts
    // the alignment divides the offset); nobody else reads it before READY.
    let init =
        unsafe { L::init(seg.map.as_mut_ptr().add(header::OBJECT_OFFSET).cast(), len - min_size::<L>(), params) };
    if let Err(e) = init {
        let _ = shm::unlink(name);
        return Err(e);
    }
    // Release: an opener that reads READY with Acquire sees the header and the
    // object fully written.
    seg.header().state.store(header::READY, Ordering::Release);
    futex::wake_all(&seg.header().state);
    Ok(seg)
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
    let size = wait_for_size(&file, name, &deadline, opts.open_timeout)?;
    let seg = map_file::<L::Object>(&file, size, name, None)?;
    wait_ready(seg.header(), name, &deadline, opts.open_timeout)?;
    check::<L>(seg.header(), size, name)?;
    L::check_trailing(seg.object(), size - min_size::<L>())
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

/// Waits until the file is at least a header long. A size of 0 means the
/// creator has not reached `posix_fallocate` yet; there is no word to futex
/// on, so this sleeps in short, growing steps, bounded by the deadline.
fn wait_for_size(file: &File, name: &str, deadline: &Deadline, waited: Duration) -> Result<usize> {
    let mut pause = Duration::from_micros(50);
    loop {
        let size = shm::size(file).map_err(|e| Error::os("fstat", name, e))?;
        let size = usize::try_from(size).map_err(|_| Error::Corrupt {
            name: name.to_string(),
            detail: format!("its size, {size} bytes, does not fit in memory"),
        })?;
        if size >= header::OBJECT_OFFSET {
            return Ok(size);
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
                let alive = creator.is_some_and(proc::is_alive);
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
