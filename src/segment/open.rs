//! Opening a segment: wait (bounded) until it is whole and ready, check its
//! header against this build and against `fstat`, then the object itself;
//! and `open_or_create`, which does one or the other.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::errno::Errno;

use super::create::{create, no_space};
use super::handle::{segment, Segment};
use super::header::{self, Header, Kind};
use super::layout::{expected_fingerprint, min_size, Layout};
use super::mapping;
use super::name;
use super::options::Options;
use crate::error::{Error, Result};
use crate::sys::futex;
use crate::sys::shm::{self, Stat};
use crate::sys::time::Deadline;

/// How often an opener waiting on a creator checks that the creator lives.
const CREATOR_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// How many times `open_or_create` retries when the name vanishes between a
/// failed create and the open (another process unlinked it).
const OPEN_OR_CREATE_TRIES: usize = 16;

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
