//! Creating a segment: the whole object is built under a temporary name and
//! then renamed into place (the steps are in the [`segment`](super) docs).

use std::fs::File;
use std::sync::atomic::Ordering;

use nix::errno::Errno;

use super::handle::{segment, Segment};
use super::header::{self, Header};
use super::layout::{expected_fingerprint, min_size, total_size, Layout};
use super::mapping;
use super::name;
use super::options::Options;
use crate::error::{Error, Result};
use crate::sys::proc::{self, Identity};
use crate::sys::shm;

pub(super) fn no_space(name: &str, bytes: usize) -> Error {
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
