//! One mapping per segment per process.
//!
//! glibc links a held robust mutex into its thread's robust list *by
//! address*. Were two handles to one object mapped at two addresses, a
//! thread could lock through one (a nested `RLock`, say), drop that handle,
//! and leave the list pointing into unmapped memory: the next lock of any
//! mutex faults, and the kernel's walk of the list at thread death stops
//! there, so the lock is never marked dead. So every handle and guard to the
//! same inode in this process shares one [`Mapping`], counted by `Arc`, and
//! the last one out leaves the memory mapped when a thread of this process
//! still holds a mutex in it (a guard forgotten with `mem::forget`): such a
//! mapping is pinned until the process ends.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use memmap2::MmapRaw;

use crate::sys::shm::{self, Stat};

/// A mapped segment, shared by every handle to it in this process.
pub struct Mapping {
    map: MmapRaw,
    /// Device and inode: the object's identity.
    id: (u64, u64),
}

impl Mapping {
    /// The first byte, with the whole mapping's provenance.
    pub fn ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The mapped object's device and inode.
    pub fn id(&self) -> (u64, u64) {
        self.id
    }
}

#[derive(Default)]
struct Registry {
    /// The live mapping of each inode this process maps.
    live: HashMap<(u64, u64), Weak<Mapping>>,
    /// Mappings kept past their last handle because a thread of this process
    /// holds a mutex in them.
    pinned: Vec<Arc<Mapping>>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn registry() -> MutexGuard<'static, Option<Registry>> {
    // Poison here means a panic in this module's short critical sections,
    // which leave the maps whole; keep going.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mapping of `file` (whose `fstat` is `stat`): the one this process
/// already has for that inode, or a new one of `stat.size` bytes.
pub fn get_or_map(file: &File, stat: &Stat, len: usize) -> std::io::Result<Arc<Mapping>> {
    let id = (stat.dev, stat.ino);
    let mut guard = registry();
    let reg = guard.get_or_insert_with(Registry::default);
    if let Some(map) = reg.live.get(&id).and_then(Weak::upgrade) {
        if map.len() >= len {
            return Ok(map);
        }
    }
    let map = Arc::new(Mapping { map: shm::map(file, len)?, id });
    reg.live.insert(id, Arc::downgrade(&map));
    Ok(map)
}

/// Drops a handle's share of a mapping. The last share unmaps it, unless
/// `held_here` says a thread of this process holds a mutex in it; then it
/// is pinned for the life of the process (and later opens reuse it).
pub fn release(map: Arc<Mapping>, held_here: impl FnOnce(&Mapping) -> bool) {
    let mut guard = registry();
    let Some(reg) = guard.as_mut() else { return };
    // Every clone and drop of a registered Arc happens under this lock, so
    // the count cannot change between this check and the drop below.
    if Arc::strong_count(&map) == 1 {
        if held_here(&map) {
            log::debug!("shmsync: keeping a segment mapped: a thread of this process still holds a lock in it");
            reg.pinned.push(map);
            return;
        }
        reg.live.remove(&map.id());
    }
    drop(map);
}

/// Held across a `fork` by the process launcher, so that the child's copy
/// of the registry is never caught mid-change by another thread.
pub struct ForkGuard {
    _registry: MutexGuard<'static, Option<Registry>>,
}

/// Locks the registry for a fork; drop the guard on both sides after it.
pub fn fork_guard() -> ForkGuard {
    ForkGuard { _registry: registry() }
}
