//! Reading one file of `/dev/shm` into an [`Info`], trusting nothing in it.
//!
//! The steps, each checked before the next relies on it:
//! 1. open it read-only (`O_NONBLOCK`, `O_NOFOLLOW`) and `fstat` it;
//! 2. `pread` at most the header's 128 bytes (a read of a hole allocates
//!    nothing, so even a sparse foreign file is safe to read this way);
//! 3. the magic, then the header's fields: layout version, kind, state,
//!    sizes against `fstat`, the fingerprint against this build;
//! 4. only then map the header and the raw object (`PROT_READ`, never the
//!    trailing bytes), after making sure no page of it is a hole, and let
//!    [`decode`](super::decode) read the object with plain loads.
//!
//! Nothing here takes a lock, writes a byte, or waits.

use std::collections::HashMap;
use std::fs::File;
use std::mem::offset_of;
use std::os::unix::fs::FileExt;

use nix::errno::Errno;

use super::decode::{self, Problem};
use super::info::{Creator, HeaderInfo, Info, Status};
use super::procs::{Liveness, Mappers};
use crate::segment::header::{self, Header, Kind};
use crate::segment::name;
use crate::sys::shm::{self, Stat};

/// Reads files for one listing: the mappings scan, and the answers about
/// users and processes, are shared by every file it reads.
pub(crate) struct Reader {
    dev: u64,
    pub(crate) mappers: Mappers,
    live: Liveness,
    users: HashMap<u32, Option<String>>,
}

impl Reader {
    /// Scans the mappings of every process once.
    pub(crate) fn new() -> std::io::Result<Reader> {
        let dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(shm::DIR)?);
        Ok(Reader { dev, mappers: Mappers::scan(dev), live: Liveness::default(), users: HashMap::new() })
    }

    /// Whether the process `pid` that started at `start` runs.
    pub(crate) fn is_alive(&mut self, pid: u32, start: u64) -> bool {
        self.live.is_alive(pid, start)
    }

    /// Everything about the file `name` (a valid segment name); `None` if it
    /// no longer exists.
    pub(crate) fn read(&mut self, name: &str) -> Option<Info> {
        let file = match shm::open_read_only(name) {
            Ok(file) => file,
            Err(Errno::ENOENT) => return None,
            Err(e) => return Some(self.unopenable(name, e)),
        };
        let st = match shm::stat(&file) {
            Ok(st) => st,
            Err(e) => return Some(self.unopenable(name, Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))),
        };
        let mut info = self.blank(name, &st);
        if let Err(problem) = self.fill(&mut info, &file, &st) {
            info.status = problem.status;
            info.problem = Some(problem.text);
            info.detail = None;
        }
        if info.status != Status::Ok {
            info.state = info.status.word();
        }
        info.orphan = super::gc::verdict(&info, false).is_ok();
        Some(info)
    }

    /// Scans the mappings again, and forgets who was alive.
    pub(crate) fn rescan(&mut self) {
        self.mappers = Mappers::scan(self.dev);
        self.live = Liveness::default();
    }

    /// An `Info` with what `fstat` says and the status still unknown.
    fn blank(&mut self, name: &str, st: &Stat) -> Info {
        Info {
            name: name.to_string(),
            status: Status::Ok,
            problem: None,
            kind: None,
            size: st.size,
            mode: st.mode,
            uid: st.uid,
            user: self.user(st.uid),
            ephemeral: false,
            temporary: name.starts_with(name::TEMP_PREFIX),
            creator: None,
            mapped_by: self.mappers.of((st.dev, st.ino)).to_vec(),
            state: "ok",
            orphan: false,
            header: None,
            detail: None,
            id: (st.dev, st.ino),
        }
    }

    fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
            })
            .clone()
    }

    /// A file that could not be opened: what `stat` says, and why.
    fn unopenable(&mut self, name: &str, e: Errno) -> Info {
        let st = shm::stat_name(name).unwrap_or(Stat { size: 0, allocated: 0, uid: u32::MAX, mode: 0, dev: 0, ino: 0 });
        let mut info = self.blank(name, &st);
        let owner = info.user.clone().unwrap_or_else(|| format!("uid {}", st.uid));
        let who = if st.uid == 0 { "root".to_string() } else { format!("{owner} or as root") };
        let (status, text) = match e {
            Errno::EACCES | Errno::EPERM => (
                Status::Unreadable,
                format!("permission denied: it belongs to {owner} with mode {:04o}; run as {who} to read it", st.mode),
            ),
            Errno::ELOOP => (Status::Foreign, "it is a symbolic link, not a shmsync object".to_string()),
            e => (Status::Unreadable, format!("cannot open it: {}", e.desc())),
        };
        info.status = status;
        info.problem = Some(text);
        info.state = status.word();
        info
    }

    /// Reads the header and the object into `info`; the first problem found
    /// ends the reading.
    fn fill(&mut self, info: &mut Info, file: &File, st: &Stat) -> Result<(), Problem> {
        let mut bytes = [0u8; header::OBJECT_OFFSET];
        let len = usize::try_from(st.size).unwrap_or(usize::MAX).min(bytes.len());
        file.read_exact_at(&mut bytes[..len], 0).map_err(|e| match e.raw_os_error() {
            Some(libc::ESPIPE | libc::EISDIR | libc::EINVAL) => {
                Problem::new(Status::Foreign, "it is not a regular file")
            }
            _ => Problem::new(Status::Unreadable, format!("cannot read it: {e}")),
        })?;
        let raw = RawHeader(&bytes[..len]);
        if info.temporary {
            return self.temporary(info, &raw);
        }
        if !raw.has_magic() {
            return Err(Problem::new(
                Status::Foreign,
                match st.size {
                    0 => "it is empty: not a shmsync object".to_string(),
                    _ => "it does not start with the shmsync magic: not a shmsync object".to_string(),
                },
            ));
        }
        if len < header::OBJECT_OFFSET {
            return Err(Problem::new(
                Status::Truncated,
                format!("it is {} bytes, shorter than the {}-byte header", st.size, header::OBJECT_OFFSET),
            ));
        }
        let version = raw.u32(offset_of!(Header, layout_version));
        if version != header::LAYOUT_VERSION {
            // Another layout: where its other fields sit is unknown.
            return Err(Problem::new(
                Status::Incompatible,
                format!(
                    "made by a shmsync build with layout version {version}; this build reads version {}",
                    header::LAYOUT_VERSION
                ),
            ));
        }
        let h = raw.fields();
        info.ephemeral = h.flags & header::EPHEMERAL != 0;
        info.creator = self.creator(h.creator_pid, h.creator_start);
        info.header = Some(h.clone());
        let kind = Kind::from_u32(h.kind).ok_or_else(|| Problem::corrupt(format!("unknown object kind {}", h.kind)))?;
        info.kind = Some(kind.name());
        match h.state {
            header::READY => {}
            header::UNINIT | header::INITIALISING => return Err(unfinished(info.creator)),
            other => return Err(Problem::corrupt(format!("its init-state word is {other}, not 0, 1 or 2"))),
        }
        if h.total_size != st.size {
            let status = if st.size < h.total_size { Status::Truncated } else { Status::Corrupt };
            return Err(Problem::new(
                status,
                format!("the header says {} bytes, the file has {}", h.total_size, st.size),
            ));
        }
        check_fingerprint(&h, raw.u32(offset_of!(Header, libc)))?;
        let object_size = usize::try_from(h.object_size).unwrap_or(usize::MAX);
        let mapped = header::OBJECT_OFFSET.saturating_add(object_size);
        if mapped as u64 > st.size {
            return Err(Problem::corrupt(format!(
                "its {}-byte object does not fit in the {}-byte file",
                h.object_size, st.size
            )));
        }
        // Reading a page that is a hole would make tmpfs allocate it, and
        // fault on a full /dev/shm. shmsync allocates every page at create.
        if st.allocated < st.size {
            let hole = shm::first_hole(file).map_err(|e| Problem::new(Status::Unreadable, e.desc().to_string()))?;
            if hole < mapped as u64 {
                return Err(Problem::corrupt(format!(
                    "its storage is not allocated from byte {hole} (a sparse file); its state is not read"
                )));
            }
        }
        let map =
            shm::map_read_only(file, mapped).map_err(|e| Problem::new(Status::Unreadable, format!("mmap: {e}")))?;
        let trailing = usize::try_from(st.size).unwrap_or(usize::MAX) - mapped;
        let decoded = decode::decode(kind, &map, h.object_size, h.object_align, trailing, &mut self.live)?;
        info.detail = Some(decoded.detail);
        info.state = decoded.state;
        Ok(())
    }

    fn creator(&mut self, pid: u32, start: u64) -> Option<Creator> {
        (pid != 0).then(|| Creator { pid, start, alive: self.is_alive(pid, start) })
    }

    /// A `.shmsync-init.<pid>.<n>` file: a create in progress, or the debris
    /// of a creator killed in it. The creator is the header's, if it got as
    /// far as claiming it, else the pid in the name.
    fn temporary(&mut self, info: &mut Info, raw: &RawHeader<'_>) -> Result<(), Problem> {
        let (pid, start) =
            match (raw.try_u32(offset_of!(Header, creator_pid)), raw.try_u64(offset_of!(Header, creator_start))) {
                (Some(pid), start) if pid != 0 => (pid, start.unwrap_or(0)),
                _ => match pid_in_temp_name(&info.name) {
                    Some(pid) => (pid, 0),
                    None => {
                        return Err(Problem::new(
                            Status::Foreign,
                            "it has shmsync's temporary-name prefix but no creator pid: not a shmsync object",
                        ))
                    }
                },
            };
        info.creator = self.creator(pid, start);
        if raw.has_magic() {
            info.kind = raw.try_u32(offset_of!(Header, kind)).and_then(Kind::from_u32).map(Kind::name);
            info.ephemeral = raw.try_u32(offset_of!(Header, flags)).is_some_and(|f| f & header::EPHEMERAL != 0);
        }
        Err(unfinished(info.creator))
    }
}

/// The problem of a segment whose create never finished.
fn unfinished(creator: Option<Creator>) -> Problem {
    match creator {
        Some(c) if c.alive => Problem::new(Status::Initialising, format!("pid {} is creating it", c.pid)),
        Some(c) => Problem::new(Status::Abandoned, format!("its creator, pid {}, died before finishing it", c.pid)),
        None => Problem::new(Status::Abandoned, "no creator ever claimed it"),
    }
}

/// The pid in a temporary name `.shmsync-init.<pid>.<n>`.
fn pid_in_temp_name(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(name::TEMP_PREFIX)?;
    let (pid, n) = rest.split_once('.')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok().filter(|&p| p != 0)
}

/// The layout facts this build needs to read the object at all.
fn check_fingerprint(h: &HeaderInfo, libc_tag: u32) -> Result<(), Problem> {
    let (ptr_width, mutex_size) =
        (std::mem::size_of::<usize>() as u32, std::mem::size_of::<libc::pthread_mutex_t>() as u32);
    if h.ptr_width != ptr_width || h.mutex_size != mutex_size || libc_tag != header::LIBC {
        return Err(Problem::new(
            Status::Incompatible,
            format!(
                "made for libc '{}' with {}-byte pointers and {}-byte mutexes; this build is for '{}', {ptr_width}, {mutex_size}",
                h.libc,
                h.ptr_width,
                h.mutex_size,
                tag(header::LIBC),
            ),
        ));
    }
    Ok(())
}

/// A four-byte tag as text: "gnu", or its number if it is not printable.
fn tag(value: u32) -> String {
    let bytes = value.to_le_bytes();
    let text: Vec<u8> = bytes.iter().copied().take_while(|&b| b != 0).collect();
    if !text.is_empty() && text.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(&text).into_owned()
    } else {
        format!("{value:#x}")
    }
}

/// Header bytes as read, possibly fewer than a whole header: fields read by
/// their offsets in [`Header`], in this machine's byte order (as written).
struct RawHeader<'a>(&'a [u8]);

impl RawHeader<'_> {
    fn has_magic(&self) -> bool {
        self.0.get(..header::MAGIC.len()) == Some(&header::MAGIC[..])
    }

    fn try_u32(&self, at: usize) -> Option<u32> {
        Some(u32::from_ne_bytes(self.0.get(at..at + 4)?.try_into().ok()?))
    }

    fn try_u64(&self, at: usize) -> Option<u64> {
        Some(u64::from_ne_bytes(self.0.get(at..at + 8)?.try_into().ok()?))
    }

    /// A field of a whole header (the caller checked the length).
    fn u32(&self, at: usize) -> u32 {
        self.try_u32(at).unwrap_or(0)
    }

    fn u64(&self, at: usize) -> u64 {
        self.try_u64(at).unwrap_or(0)
    }

    fn fields(&self) -> HeaderInfo {
        HeaderInfo {
            layout_version: self.u32(offset_of!(Header, layout_version)),
            kind: self.u32(offset_of!(Header, kind)),
            total_size: self.u64(offset_of!(Header, total_size)),
            ptr_width: self.u32(offset_of!(Header, ptr_width)),
            mutex_size: self.u32(offset_of!(Header, mutex_size)),
            object_size: self.u32(offset_of!(Header, object_size)),
            object_align: self.u32(offset_of!(Header, object_align)),
            type_hash: format!("{:#018x}", self.u64(offset_of!(Header, type_hash))),
            state: self.u32(offset_of!(Header, state)),
            creator_pid: self.u32(offset_of!(Header, creator_pid)),
            creator_start: self.u64(offset_of!(Header, creator_start)),
            libc: tag(self.u32(offset_of!(Header, libc))),
            flags: self.u32(offset_of!(Header, flags)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_give_their_pid() {
        assert_eq!(pid_in_temp_name(".shmsync-init.123.4"), Some(123));
        assert_eq!(pid_in_temp_name(".shmsync-init.0.4"), None);
        assert_eq!(pid_in_temp_name(".shmsync-init.x.4"), None);
        assert_eq!(pid_in_temp_name(".shmsync-init.12"), None);
        assert_eq!(pid_in_temp_name("jobs"), None);
    }

    #[test]
    fn tags_read_as_text_or_numbers() {
        assert_eq!(tag(header::LIBC), "gnu");
        assert_eq!(tag(u32::from_le_bytes(*b"musl")), "musl");
        assert_eq!(tag(0), "0x0");
        assert_eq!(tag(0xffff_ffff), "0xffffffff");
    }

    #[test]
    fn a_short_header_reads_what_it_has() {
        let raw = RawHeader(&header::MAGIC);
        assert!(raw.has_magic());
        assert_eq!(raw.try_u32(offset_of!(Header, kind)), None);
        assert!(!RawHeader(b"SHMS").has_magic());
    }
}
