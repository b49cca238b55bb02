//! What `/proc` says about other processes: who maps which file of
//! `/dev/shm`, which process a thread belongs to, and who runs.
//!
//! Mappings are matched by device and inode, not by path: a path in
//! `/proc/<pid>/maps` follows renames (a segment is built under a temporary
//! name), gains " (deleted)" after an unlink, and may contain spaces, while
//! the inode names the object itself. A process whose maps cannot be read
//! (another user's, without privilege; `hidepid`) is reported, never
//! silently taken as mapping nothing.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use super::info::Unreadable;
use crate::sys::proc::Identity;

/// Who maps the files of one directory's file system.
#[derive(Debug, Default)]
pub(crate) struct Mappers {
    /// (device, inode) to the pids that map it, sorted.
    by_inode: HashMap<(u64, u64), Vec<u32>>,
    /// Processes whose maps could not be read.
    pub(crate) unreadable: Vec<Unreadable>,
}

impl Mappers {
    /// Scans `/proc/*/maps` for mappings of files on device `dev`.
    pub(crate) fn scan(dev: u64) -> Mappers {
        let mut mappers = Mappers::default();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return mappers;
        };
        let mut text = Vec::new();
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            text.clear();
            let read = std::fs::File::open(format!("/proc/{pid}/maps")).and_then(|mut f| f.read_to_end(&mut text));
            match read {
                Ok(_) => {
                    let mut seen = HashSet::new();
                    for inode in mapped_inodes(&text, dev) {
                        if seen.insert(inode) {
                            mappers.by_inode.entry((dev, inode)).or_default().push(pid);
                        }
                    }
                }
                // Ended meanwhile: it maps nothing now.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(_) => mappers.unreadable.push(Unreadable { pid, uid: effective_uid(pid) }),
            }
        }
        for pids in mappers.by_inode.values_mut() {
            pids.sort_unstable();
        }
        mappers.unreadable.sort_by_key(|u| u.pid);
        mappers
    }

    /// The pids that map the object (device, inode).
    pub(crate) fn of(&self, id: (u64, u64)) -> &[u32] {
        self.by_inode.get(&id).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The inodes on device `dev` that a maps file maps. A line reads
/// `start-end perms offset major:minor inode [path]`, numbers in hex but
/// the inode in decimal.
fn mapped_inodes(text: &[u8], dev: u64) -> impl Iterator<Item = u64> + '_ {
    text.split(|&b| b == b'\n').filter_map(move |line| {
        let line = std::str::from_utf8(line).ok()?;
        let mut fields = line.split_ascii_whitespace();
        let device = fields.nth(3)?;
        let inode: u64 = fields.next()?.parse().ok()?;
        let (major, minor) = device.split_once(':')?;
        let device =
            nix::sys::stat::makedev(u64::from_str_radix(major, 16).ok()?, u64::from_str_radix(minor, 16).ok()?);
        (inode != 0 && device == dev).then_some(inode)
    })
}

/// A process's effective uid, from `/proc/<pid>/status` (readable for every
/// process, unlike its maps).
fn effective_uid(pid: u32) -> Option<u32> {
    status_field(pid, "Uid:")?.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The process that thread `tid` belongs to (its thread group id), if the
/// thread runs.
pub(crate) fn process_of(tid: u32) -> Option<u32> {
    status_field(tid, "Tgid:")?.trim().parse().ok()
}

fn status_field(id: u32, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{id}/status")).ok()?;
    text.lines().find_map(|line| line.strip_prefix(key)).map(str::to_string)
}

/// Liveness answers, asked once per identity in one listing.
#[derive(Default)]
pub(crate) struct Liveness {
    known: HashMap<(u32, u64), bool>,
}

impl Liveness {
    /// Whether the process `pid` that started at `start` (0: unknown) runs.
    pub(crate) fn is_alive(&mut self, pid: u32, start: u64) -> bool {
        *self.known.entry((pid, start)).or_insert_with(|| Identity { id: pid, start }.is_alive())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_yield_the_inodes_on_the_device() {
        let dev = nix::sys::stat::makedev(0, 0x1a);
        let text = b"7f00-7f01 rw-s 00000000 00:1a 1234                       /dev/shm/jobs\n\
7f01-7f02 rw-s 00000000 00:1a 99 /dev/shm/name with spaces (deleted)\n\
7f02-7f03 r--p 00000000 08:01 1234 /usr/lib/libc.so.6\n\
7f03-7f04 rw-p 00000000 00:00 0 \n\
garbage line\n\
7f05-7f06 rw-s 00000000 zz:1a 5 /dev/shm/x\n";
        assert_eq!(mapped_inodes(text, dev).collect::<Vec<_>>(), vec![1234, 99]);
    }

    #[test]
    fn this_process_is_found_mapping_a_file_it_maps() {
        let file = tempfile_in_dev_shm();
        let st = crate::sys::shm::stat(&file.1).unwrap();
        let map = crate::sys::shm::map_read_only(&file.1, 4096).unwrap();
        let mappers = Mappers::scan(st.dev);
        assert_eq!(mappers.of((st.dev, st.ino)), &[std::process::id()]);
        drop(map);
        assert!(Mappers::scan(st.dev).of((st.dev, st.ino)).is_empty());
        assert_eq!(process_of(crate::sys::proc::tid()), Some(std::process::id()));
        let _ = std::fs::remove_file(&file.0);
    }

    fn tempfile_in_dev_shm() -> (String, std::fs::File) {
        let path = format!("/dev/shm/shmsync-unit.{}.maps", std::process::id());
        let file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
        file.set_len(4096).unwrap();
        (path, file)
    }
}
