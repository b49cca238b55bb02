//! Removing objects: [`gc`] (the debris of dead processes) and [`remove`]
//! (one object, by name, only if it is ours). How gc decides is in the
//! docs of [`gc`].

use nix::errno::Errno;
use serde::Serialize;

use super::info::{Info, Status, Unreadable};
use crate::error::{Error, Result};
use crate::segment::name;
use crate::sys::shm;

/// What [`gc`] should do. `GcOptions::new()` removes every piece of debris
/// of every user it may remove.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcOptions {
    /// Report what would be removed, and remove nothing.
    pub dry_run: bool,
    /// Consider only names that start with one of these (all, if empty).
    pub prefixes: Vec<String>,
    /// Consider only `K::new()` objects and unfinished creates, never named
    /// objects (whose state a later `open_or_create` may still want).
    pub ephemeral_only: bool,
}

impl GcOptions {
    /// Remove all debris, for real.
    pub fn new() -> GcOptions {
        GcOptions::default()
    }

    /// Only report (`true`), or remove (`false`, the default).
    pub fn dry_run(mut self, dry_run: bool) -> GcOptions {
        self.dry_run = dry_run;
        self
    }

    /// Also consider names starting with `prefix` (with none given, every
    /// name is considered).
    pub fn prefix(mut self, prefix: &str) -> GcOptions {
        self.prefixes.push(prefix.to_string());
        self
    }

    /// Only `K::new()` objects and unfinished creates (`true`), or named
    /// objects too (`false`, the default).
    pub fn ephemeral_only(mut self, only: bool) -> GcOptions {
        self.ephemeral_only = only;
        self
    }

    fn admits(&self, name: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }
}

/// What gc did with one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Action {
    /// Unlinked.
    Removed,
    /// Debris, left in place by a dry run.
    WouldRemove,
    /// Not debris, or not removable by the caller.
    Kept,
    /// Debris, but unlinking it failed.
    Failed,
}

/// One object gc considered, what it did, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Decision {
    /// What gc did.
    pub action: Action,
    /// Why, in words.
    pub reason: String,
    /// The object as gc saw it.
    pub object: Info,
}

/// What [`gc`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GcReport {
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// Every shmsync object it considered (foreign files are not), by name.
    pub decisions: Vec<Decision>,
    /// Processes whose mappings could not be read.
    pub unreadable_processes: Vec<Unreadable>,
}

impl GcReport {
    /// The decisions with action `action`.
    pub fn with(&self, action: Action) -> impl Iterator<Item = &Decision> + '_ {
        self.decisions.iter().filter(move |d| d.action == action)
    }
}

/// Removes the objects in `/dev/shm` that no live process maps and whose
/// creator is dead, and reports what it removed and why. It never removes an
/// object a live process maps, nor a file that is not a shmsync object.
///
/// An object is debris when both hold:
/// - its creator is dead: the pid *and* start time recorded in its header
///   (or, for a temporary file whose header was never claimed, the pid in
///   its name) name no running process, so a recycled pid does not pass for
///   the creator;
/// - no live process maps it: no `/proc/<pid>/maps` names its inode, and
///   the kernel confirms that nobody has it open or mapped (below).
///
/// That covers the `K::new()` objects of a killed creator (marked
/// ephemeral in the header), named objects whose every user is gone, and
/// the temporary files of a creator killed mid-create. An object that any
/// live process maps is never removed, whoever created it.
///
/// Before it removes anything, gc asks the kernel: it takes an exclusive
/// lease on the object (`F_SETLEASE`), which is granted only while no other
/// process has the object open or mapped, in any pid namespace, whatever
/// `/proc` lets the caller see. Holding the lease, it renames the object
/// aside and checks that nobody began to open it meanwhile (an open breaks
/// the lease); if somebody did, the name is put back, otherwise the object
/// is unlinked. What remains is an opener that had looked the name up but
/// not yet reached the file's open in the instant between the rename and
/// that check: it gets a working object without a name. A gc killed
/// between the rename and the unlink leaves the object under a temporary
/// `.shmsync-init.*` name, which the next gc removes as an unfinished
/// create. A dry run takes and drops the same lease, so it reports what a
/// real run would do.
///
/// Where leases are unavailable (`fs.leases-enable = 0`, or the caller may
/// not take one), gc falls back on `/proc` alone: then a process whose maps
/// could not be read is taken to map an object when it runs as the
/// object's owner or the object's mode lets other users open it (a root
/// process is taken not to map another user's private object).
///
/// A long-running service that makes `K::new()` objects, or whose workers
/// do, runs it now and then, so the objects of workers killed by a signal
/// (which never reach their drop) do not pile up in `/dev/shm`:
///
/// ```no_run
/// use std::time::Duration;
/// use shmsync::inspect::GcOptions;
///
/// fn collect_debris() {
///     // ephemeral_only: leave named objects, which a restarted worker may
///     // open again, and take only what K::new() made.
///     match shmsync::gc(&GcOptions::new().ephemeral_only(true)) {
///         Ok(report) => {
///             for d in report.with(shmsync::inspect::Action::Removed) {
///                 log::info!("removed {}: {}", d.object.name, d.reason);
///             }
///         }
///         Err(e) => log::warn!("shmsync gc: {e}"),
///     }
/// }
///
/// // In the service: a thread that collects every minute.
/// std::thread::spawn(|| loop {
///     collect_debris();
///     std::thread::sleep(Duration::from_secs(60));
/// });
/// ```
///
/// Objects of other users are removed only when the caller may (root);
/// otherwise they are kept with that reason. Errors: only when `/dev/shm`
/// itself cannot be read; a file that cannot be removed is a
/// [`Action::Failed`] decision.
pub fn gc(opts: &GcOptions) -> Result<GcReport> {
    let (mut reader, listing) = super::read_all(|name| opts.admits(name))?;
    let mut decisions: Vec<Decision> = listing
        .objects
        .into_iter()
        .map(|info| match verdict(&info, opts.ephemeral_only) {
            Ok(reason) => Decision { action: Action::WouldRemove, reason, object: info },
            Err(reason) => Decision { action: Action::Kept, reason, object: info },
        })
        .collect();
    if decisions.iter().any(|d| d.action == Action::WouldRemove) {
        // Look again, just before acting: a process may have mapped a
        // candidate, or its name may name another object now.
        reader.rescan();
        for d in decisions.iter_mut().filter(|d| d.action == Action::WouldRemove) {
            let Some(now) = reader.read(&d.object.name) else {
                (d.action, d.reason) = (Action::Kept, "someone else removed it meanwhile".to_string());
                continue;
            };
            let same = now.id == d.object.id && now.header == d.object.header && now.status == d.object.status;
            (d.action, d.reason) = match verdict(&now, opts.ephemeral_only) {
                Ok(_) if !same => (Action::Kept, "it changed since the first look; left for the next gc".to_string()),
                Ok(reason) => collect(&now, reason, &reader.mappers.unreadable, opts.dry_run),
                Err(reason) => (Action::Kept, reason),
            };
            d.object = now;
        }
    }
    let unreadable_processes = reader.mappers.unreadable.clone();
    Ok(GcReport { dry_run: opts.dry_run, decisions, unreadable_processes })
}

/// Removes (or, in a dry run, would remove) one object that `/proc` shows
/// as debris, if the kernel agrees that nobody has it open or mapped.
fn collect(info: &Info, reason: String, unreadable: &[Unreadable], dry_run: bool) -> (Action, String) {
    let lease = match shm::Lease::take(&info.name) {
        Ok(lease) => lease,
        Err(Errno::EAGAIN | Errno::EBUSY) => {
            return (
                Action::Kept,
                "the kernel says a process has it open or mapped (one /proc does not show: it may be opening \
                 it, be unreadable, or live in another pid namespace)"
                    .to_string(),
            )
        }
        Err(Errno::ENOENT) => return (Action::Kept, "someone else removed it meanwhile".to_string()),
        Err(e) => return collect_without_lease(info, reason, unreadable, dry_run, e),
    };
    if lease.stat().map(|st| (st.dev, st.ino)).ok() != Some(info.id) {
        return (Action::Kept, "its name names another object now; left for the next gc".to_string());
    }
    if dry_run {
        return (Action::WouldRemove, reason);
    }
    // Aside first: an opener that found the name before the rename breaks
    // the lease, and then gets the object back under its name.
    let aside = name::temp();
    if let Err(e) = shm::rename_no_replace(&info.name, &aside) {
        return (Action::Failed, format!("{reason}, but renaming it aside failed: {}", e.desc()));
    }
    if lease.is_breaking() {
        return match shm::rename_no_replace(&aside, &info.name) {
            Ok(()) => (Action::Kept, "a process began to open it as it was being removed; left in place".to_string()),
            Err(e) => (
                Action::Failed,
                format!("a process opened it as it was being removed, and putting its name back failed ({}); it is now '{aside}'", e.desc()),
            ),
        };
    }
    match shm::unlink(&aside) {
        Ok(()) => (Action::Removed, reason),
        Err(e) => (Action::Failed, format!("{reason}, but unlinking it (as '{aside}') failed: {}", e.desc())),
    }
}

/// [`collect`] where the kernel cannot be asked: `/proc` alone decides,
/// with processes that could not be read taken to map what they might.
fn collect_without_lease(
    info: &Info,
    reason: String,
    unreadable: &[Unreadable],
    dry_run: bool,
    why: Errno,
) -> (Action, String) {
    if let Some(p) = unreadable.iter().find(|p| may_map(p, info)) {
        return (
            Action::Kept,
            format!("process {} could not be read and may map it (no lease to ask the kernel: {})", p.pid, why.desc()),
        );
    }
    let reason = format!("{reason} (judged from /proc alone: no lease to ask the kernel: {})", why.desc());
    if dry_run {
        return (Action::WouldRemove, reason);
    }
    match shm::unlink(&info.name) {
        Ok(()) => (Action::Removed, reason),
        Err(e) => (Action::Failed, format!("{reason}, but unlinking it failed: {}", e.desc())),
    }
}

/// Whether the object is debris by what `/proc` shows: `Ok(why it is)` or
/// `Err(why it is kept)`. [`gc`] then asks the kernel before it acts.
pub(crate) fn verdict(info: &Info, ephemeral_only: bool) -> std::result::Result<String, String> {
    let origin = if info.temporary {
        "an unfinished create"
    } else if info.ephemeral {
        "a K::new() object"
    } else {
        "a named object"
    };
    let what = match info.status {
        Status::Ok | Status::Initialising | Status::Abandoned => origin.to_string(),
        damaged => format!("{origin} ({})", damaged.word()),
    };
    if !info.status.is_ours() {
        return Err(format!("not known to be a shmsync object ({})", info.status.word()));
    }
    if info.status == Status::Incompatible && info.header.is_none() {
        return Err("made by another shmsync layout: its creator cannot be read".to_string());
    }
    if ephemeral_only && !info.ephemeral && !info.temporary {
        return Err("a named object (only K::new() objects were asked for)".to_string());
    }
    let Some(creator) = info.creator else {
        return Err("it records no creator".to_string());
    };
    if creator.alive {
        return Err(format!("its creator, pid {}, is alive", creator.pid));
    }
    if !info.mapped_by.is_empty() {
        return Err(format!("its creator, pid {}, is dead, but {} maps it", creator.pid, pids(&info.mapped_by)));
    }
    let euid = shm::euid();
    if euid != 0 && info.uid != euid {
        return Err(format!("it belongs to uid {}; only its owner or root may remove it", info.uid));
    }
    Ok(format!("{what} whose creator, pid {}, is dead, and no process maps it", creator.pid))
}

/// Whether a process whose maps could not be read may map the object.
fn may_map(p: &Unreadable, info: &Info) -> bool {
    let open_to_others = info.mode & 0o066 != 0;
    open_to_others || p.uid.is_none_or(|uid| uid == info.uid)
}

fn pids(pids: &[u32]) -> String {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    match pids.len() {
        1 => format!("pid {}", list[0]),
        _ => format!("pids {}", list.join(", ")),
    }
}

/// Removes the object `name` from `/dev/shm`, only if it is a shmsync object
/// (it has the magic, or is a temporary file of an unfinished create),
/// whatever its state, and returns what it was. Handles that are open keep
/// working, as with [`unlink`](crate::unlink).
///
/// Errors: [`Error::NotFound`]; [`Error::Corrupt`] for a file that is not a
/// shmsync object (nothing is removed); [`Error::PermissionDenied`] when the
/// caller may not read or remove it.
pub fn remove(name: &str) -> Result<Info> {
    let info = super::inspect(name)?;
    match info.status {
        Status::Unreadable => return Err(Error::PermissionDenied { name: info.name }),
        Status::Foreign => {
            return Err(Error::Corrupt {
                name: info.name.clone(),
                detail: info.problem.unwrap_or_else(|| "not a shmsync object".to_string()),
            })
        }
        _ => {}
    }
    crate::unlink(&info.name)?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_lease_is_refused_while_the_file_is_open_and_breaks_when_someone_opens_it() {
        let name = format!("shmsync-unit.{}.lease", std::process::id());
        let path = format!("{}/{name}", shm::DIR);
        std::fs::write(&path, [0u8; 64]).unwrap();
        let held = std::fs::File::open(&path).unwrap();
        assert_eq!(shm::Lease::take(&name).err(), Some(Errno::EAGAIN), "an open file is in use");
        drop(held);
        let lease = shm::Lease::take(&name).unwrap();
        assert!(!lease.is_breaking());
        // An opener blocks in the kernel until the lease goes, and the
        // holder sees the break begin (no signal reaches this process).
        let opener = std::thread::spawn({
            let path = path.clone();
            move || std::fs::File::open(path).is_ok()
        });
        let start = Instant::now();
        while !lease.is_breaking() {
            assert!(start.elapsed() < Duration::from_secs(10), "the open never broke the lease");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(lease);
        assert!(opener.join().unwrap());
        std::fs::remove_file(&path).unwrap();
    }
}
