//! Each kind's state, read from a read-only mapping with plain loads.
//!
//! The object is reached as the raw type its kind says, after the same
//! checks `open` makes (its size, then the kind's own `Layout::check`), and
//! read only through accessors that load: never a lock, never a store. The
//! mapping is `PROT_READ`, so a store would fault rather than change a byte.
//! Every value is a snapshot: other processes keep changing them.
//!
//! One-word states, per kind:
//!
//! | kind | words |
//! |------|-------|
//! | Lock, RLock, Mutex | `free`, `held`, `poisoned` (free, flag set), `owner-dead` (its holder died: the next lock reports poison) |
//! | Condition | its lock's `owner-dead` or `poisoned`, else `waiting` (someone waits), `held`, `idle` |
//! | Event | `set`, `clear` |
//! | Semaphore, BoundedSemaphore | `available` (value > 0), `exhausted` |
//! | Barrier | `broken`, `waiting` (parties wait), `idle` |
//! | RwLock | `poisoned`, `owner-dead` (the writer or upgradable reader died), `write-locked`, `upgradable`, `read-locked`, `free` |
//! | Queue, JoinableQueue, Dict, Namespace | `empty`, `nonempty` |

use std::mem::{align_of, size_of};

use memmap2::MmapRaw;

use super::info::{Detail, LockDetail, Status};
use super::procs::{self, Liveness};
use crate::segment::header::{Kind, OBJECT_OFFSET};
use crate::segment::Layout;

/// Why a file's state could not be decoded.
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) status: Status,
    pub(crate) text: String,
}

impl Problem {
    pub(crate) fn new(status: Status, text: impl Into<String>) -> Problem {
        Problem { status, text: text.into() }
    }

    pub(crate) fn corrupt(text: impl Into<String>) -> Problem {
        Problem::new(Status::Corrupt, text)
    }
}

/// A decoded object.
pub(crate) struct Decoded {
    pub(crate) detail: Detail,
    pub(crate) state: &'static str,
}

/// Decodes the object of `kind` in `map`, which covers the header and the
/// `object_size`-byte object after it; `trailing` bytes follow in the file.
pub(crate) fn decode(
    kind: Kind,
    map: &MmapRaw,
    object_size: u32,
    object_align: u32,
    trailing: usize,
    live: &mut Liveness,
) -> Result<Decoded, Problem> {
    let at = Object { map, size: object_size, align: object_align, trailing };
    Ok(match kind {
        Kind::Lock => {
            let l = at.get::<crate::Lock>(kind)?;
            lock_state(lock(l.owner_tid(), l.depth(), l.is_poisoned(), l.owner_died(), live), Detail::Lock)
        }
        Kind::RLock => {
            let l = at.get::<crate::RLock>(kind)?;
            lock_state(lock(l.owner_tid(), l.depth(), l.is_poisoned(), l.owner_died(), live), Detail::Lock)
        }
        Kind::Mutex => {
            let cell = at.cell::<crate::Mutex<()>>("Mutex")?;
            let l = cell.raw_lock();
            let (value_size, value_align) = (object_size - size_of::<crate::raw::RawLock>() as u32, object_align);
            let lock = lock(l.owner_tid(), l.depth(), l.is_poisoned(), l.owner_died(), live);
            lock_state(lock, |lock| Detail::Mutex { lock, value_size, value_align })
        }
        Kind::RwLock => {
            let l = at.cell::<crate::RwLock<()>>("RwLock")?.raw_lock();
            let holder = l.exclusive_holder();
            let holder_alive = holder.map(|tid| live.is_alive(tid, 0));
            let (readers, writing, poisoned) = (l.readers(), l.is_write_locked(), l.is_poisoned());
            let state = match (poisoned, holder_alive, writing) {
                (true, ..) => "poisoned",
                (_, Some(false), _) => "owner-dead",
                (_, Some(true), true) => "write-locked",
                (_, Some(true), false) => "upgradable",
                _ if readers > 0 => "read-locked",
                _ => "free",
            };
            let detail = Detail::RwLock {
                readers,
                holder_tid: holder,
                holder_pid: holder.filter(|_| holder_alive == Some(true)).and_then(procs::process_of),
                holder_alive,
                writing,
                poisoned,
                value_size: object_size - size_of::<crate::raw::RawRwLock>() as u32,
                value_align: object_align,
            };
            Decoded { detail, state }
        }
        Kind::Condition => {
            let c = at.get::<crate::Condition>(kind)?;
            let l = c.lock();
            let lock = lock(l.owner_tid(), l.depth(), l.is_poisoned(), l.owner_died(), live);
            let waiters = c.waiters();
            let state = match lock_word(&lock) {
                word @ ("owner-dead" | "poisoned") => word,
                _ if waiters > 0 => "waiting",
                "held" => "held",
                _ => "idle",
            };
            Decoded { detail: Detail::Condition { lock, waiters }, state }
        }
        Kind::Event => {
            let set = at.get::<crate::Event>(kind)?.is_set();
            Decoded { detail: Detail::Event { set }, state: if set { "set" } else { "clear" } }
        }
        Kind::Semaphore | Kind::BoundedSemaphore => {
            let s = if kind == Kind::Semaphore {
                at.get::<crate::Semaphore>(kind)?
            } else {
                at.get::<crate::BoundedSemaphore>(kind)?
            };
            let value = s.value();
            Decoded {
                detail: Detail::Semaphore { value, max: s.max(), bounded: kind == Kind::BoundedSemaphore },
                state: if value > 0 { "available" } else { "exhausted" },
            }
        }
        Kind::Barrier => {
            let b = at.get::<crate::Barrier>(kind)?;
            let (waiting, broken) = (b.n_waiting(), b.is_broken());
            Decoded {
                detail: Detail::Barrier { parties: b.parties(), waiting, generation: b.generation(), broken },
                state: if broken {
                    "broken"
                } else if waiting > 0 {
                    "waiting"
                } else {
                    "idle"
                },
            }
        }
        Kind::Queue | Kind::JoinableQueue => {
            let ring = if kind == Kind::Queue {
                at.get::<crate::Queue<()>>(kind)?
            } else {
                at.get::<crate::JoinableQueue<()>>(kind)?
            };
            let messages = ring.len() as u64;
            Decoded {
                detail: Detail::Queue {
                    messages,
                    bytes_used: ring.used_bytes() as u64,
                    capacity: ring.capacity() as u64,
                    unfinished: (kind == Kind::JoinableQueue).then(|| ring.unfinished()),
                },
                state: emptiness(messages),
            }
        }
        Kind::Dict | Kind::Namespace => {
            let table = if kind == Kind::Dict {
                at.get::<crate::Dict<(), ()>>(kind)?
            } else {
                at.get::<crate::Namespace>(kind)?
            };
            let capacity = table.half_size();
            let (entries, bytes) =
                table.active_counts().ok_or_else(|| Problem::corrupt("its active-half word names neither half"))?;
            if bytes as u64 > capacity {
                return Err(Problem::corrupt(format!(
                    "its active half claims {bytes} bytes, more than its {capacity}"
                )));
            }
            Decoded {
                detail: Detail::Table { entries: entries as u64, bytes: bytes as u64, capacity },
                state: emptiness(entries as u64),
            }
        }
    })
}

fn emptiness(n: u64) -> &'static str {
    if n == 0 {
        "empty"
    } else {
        "nonempty"
    }
}

/// The object area of a mapping, and what the header says of it.
struct Object<'a> {
    map: &'a MmapRaw,
    size: u32,
    align: u32,
    trailing: usize,
}

impl<'a> Object<'a> {
    /// The object as `L`'s raw type, after `open`'s checks: its size and
    /// alignment as this build has them, then `L::check`.
    fn get<L: Layout>(&self, kind: Kind) -> Result<&'a L::Object, Problem> {
        let (size, align) = (size_of::<L::Object>(), align_of::<L::Object>());
        if self.size as usize != size || self.align as usize != align {
            return Err(Problem::new(
                Status::Incompatible,
                format!(
                    "its {} is {} bytes aligned to {}; this build's is {size} aligned to {align}",
                    kind.name(),
                    self.size,
                    self.align
                ),
            ));
        }
        self.checked::<L>()
    }

    /// A lock-then-value cell (`Mutex<T>`, `RwLock<T>`) of unknown `T`,
    /// read as `L`, its `T = ()` form: the lock, then at least nothing, in a
    /// cell aligned to at least the lock's alignment.
    fn cell<L: Layout>(&self, what: &str) -> Result<&'a L::Object, Problem> {
        let lock = size_of::<L::Object>();
        let align = self.align as usize;
        let aligned = align.is_power_of_two() && (align_of::<L::Object>()..=OBJECT_OFFSET).contains(&align);
        if (self.size as usize) < lock || !aligned || self.size as usize % align != 0 {
            return Err(Problem::corrupt(format!(
                "its {what} cell is {} bytes aligned to {}: not a lock followed by a value",
                self.size, self.align
            )));
        }
        self.checked::<L>()
    }

    fn checked<L: Layout>(&self) -> Result<&'a L::Object, Problem> {
        const { assert!(align_of::<L::Object>() <= OBJECT_OFFSET) };
        // The callers checked that the header's object size covers the type;
        // the mapping covers header and object (the reader mapped exactly
        // that), and this is checked again here rather than trusted.
        if self.map.len() < OBJECT_OFFSET + size_of::<L::Object>() {
            return Err(Problem::corrupt("its object is cut short"));
        }
        // SAFETY: the mapping is page-aligned and at least OBJECT_OFFSET +
        // size_of::<L::Object>() bytes (checked above), so the object is in
        // bounds and aligned (OBJECT_OFFSET is a multiple of its alignment,
        // asserted above). Every raw object is made of integers, atomics and
        // pthread mutex bytes, so any bit pattern is a valid value. Other
        // processes change it only through atomics or under the pthread
        // mutex, both inside `UnsafeCell`s, so a shared reference to it is
        // sound; this process only loads through it (the mapping is
        // read-only), and the reference lives no longer than the mapping.
        let object = unsafe { &*self.map.as_ptr().add(OBJECT_OFFSET).cast::<L::Object>() };
        L::check(object, self.trailing).map_err(Problem::corrupt)?;
        Ok(object)
    }
}

/// A lock's state from its accessors' snapshot.
fn lock(owner: Option<u32>, depth: u32, poisoned: bool, owner_died: bool, live: &mut Liveness) -> LockDetail {
    let owner_alive = owner.map(|tid| live.is_alive(tid, 0));
    let owner_pid = owner.filter(|_| owner_alive == Some(true)).and_then(procs::process_of);
    let dead_owner = owner_died || owner_alive == Some(false);
    LockDetail {
        owner_tid: owner,
        owner_pid,
        owner_alive,
        depth: if owner.is_some() { depth } else { 0 },
        poisoned,
        owner_died,
        poisoned_on_next_lock: poisoned || dead_owner,
    }
}

fn lock_word(lock: &LockDetail) -> &'static str {
    if lock.owner_died || lock.owner_alive == Some(false) {
        "owner-dead"
    } else if lock.owner_tid.is_some() {
        "held"
    } else if lock.poisoned {
        "poisoned"
    } else {
        "free"
    }
}

fn lock_state(lock: LockDetail, detail: impl FnOnce(LockDetail) -> Detail) -> Decoded {
    let state = lock_word(&lock);
    Decoded { detail: detail(lock), state }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_words_follow_the_owner() {
        let mut live = Liveness::default();
        let me = crate::sys::proc::tid();
        let free = lock(None, 7, false, false, &mut live);
        assert_eq!((lock_word(&free), free.depth, free.poisoned_on_next_lock), ("free", 0, false));
        let held = lock(Some(me), 1, false, false, &mut live);
        assert_eq!((lock_word(&held), held.owner_pid), ("held", Some(std::process::id())));
        let died = lock(None, 0, false, true, &mut live);
        assert_eq!((lock_word(&died), died.poisoned_on_next_lock), ("owner-dead", true));
        let gone = lock(Some(u32::MAX >> 2), 1, false, false, &mut live);
        assert_eq!((lock_word(&gone), gone.owner_alive, gone.owner_pid), ("owner-dead", Some(false), None));
        let poisoned = lock(None, 0, true, false, &mut live);
        assert_eq!((lock_word(&poisoned), poisoned.poisoned_on_next_lock), ("poisoned", true));
    }
}
