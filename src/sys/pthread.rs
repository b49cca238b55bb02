//! The robust, process-shared pthread mutex.
//!
//! glibc's robust mutexes are the only owner-death detection Linux offers: each
//! thread registers a robust list with the kernel, and when a thread exits (or
//! its process is killed) holding a robust mutex, the kernel marks the lock
//! word `FUTEX_OWNER_DIED` and wakes a waiter, whose lock call then returns
//! `EOWNERDEAD`.
//!
//! The crate takes the mutex only with `pthread_mutex_trylock` and releases it
//! with `pthread_mutex_unlock`; glibc's blocking lock is never called. A
//! contended locker sleeps on the lock word itself (the robust-futex word
//! layout is kernel ABI: owner tid in the low 30 bits, `FUTEX_WAITERS`,
//! `FUTEX_OWNER_DIED`), in bounded slices, so that the raw layer can recover
//! from what glibc cannot: a waiter woken by an unlock and killed before it
//! re-marks the word, a word naming a thread that no longer exists, and a
//! mutex left `ENOTRECOVERABLE` by a foreign process.
//!
//! Layout facts this module relies on (glibc's `struct __pthread_mutex_s`, the
//! same on every 64-bit Linux target): `__lock` at offset 0, `__count` at 4,
//! `__owner` at 8 and `__kind` at 16. A unit test checks them against what
//! `pthread_mutex_init` writes.
//!
//! Every function takes a raw `*mut pthread_mutex_t`, because the mutex lives
//! in shared memory that other processes write concurrently; Rust references
//! to it would assert an exclusivity that does not hold.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::OnceLock;

#[cfg(not(all(target_env = "gnu", target_pointer_width = "64")))]
compile_error!("shmsync needs glibc on a 64-bit Linux target: it relies on glibc's robust mutex layout.");

/// Offset of `__count` (recursion depth).
const COUNT_OFFSET: usize = 4;
/// Offset of `__owner` (the owner's tid, or one of the two markers below).
const OWNER_OFFSET: usize = 8;
/// Offset of `__kind` (type, robust and pshared bits).
const KIND_OFFSET: usize = 16;
/// `__owner` of a mutex whose owner died and that was unlocked without being
/// made consistent: glibc's `PTHREAD_MUTEX_NOTRECOVERABLE`.
const OWNER_NOT_RECOVERABLE: i32 = 0x7fff_fffe;
/// The `__kind` bits that describe the mutex; higher ones (lock elision) may
/// differ between processes by glibc tunables.
const KIND_MASK: i32 = 0xff;

/// The waiters bit of a robust futex word.
pub const WAITERS: u32 = libc::FUTEX_WAITERS;
/// The owner-died bit of a robust futex word.
pub const OWNER_DIED: u32 = libc::FUTEX_OWNER_DIED;
/// The owner tid bits of a robust futex word.
pub const TID_MASK: u32 = libc::FUTEX_TID_MASK;

/// What a lock attempt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// The caller now holds the mutex.
    Acquired,
    /// The caller now holds the mutex, and the previous owner died holding
    /// it. The mutex has already been made consistent again.
    OwnerDied,
    /// The mutex is held by someone else.
    WouldBlock,
    /// The calling thread already holds this non-recursive mutex.
    Deadlock,
    /// A previous owner died and the mutex was unlocked without being made
    /// consistent (never by this crate). [`repair_not_recoverable`] fixes it.
    NotRecoverable,
    /// glibc rejected the mutex: its bytes are not a mutex of the kind made.
    Invalid,
    /// The calling thread holds this recursive mutex with its count at the
    /// limit (2^32 nested locks, or a count a peer overwrote).
    TooDeep,
}

/// The kind of mutex to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Locking twice on one thread reports [`Acquire::Deadlock`] instead of
    /// hanging (`PTHREAD_MUTEX_ERRORCHECK`; same cost as a normal robust mutex,
    /// since every robust mutex takes glibc's slow "full" path).
    ErrorCheck,
    /// Nests on one thread (`PTHREAD_MUTEX_RECURSIVE`).
    Recursive,
}

/// Destroys the attribute object on every path out of [`init`].
struct AttrGuard(MaybeUninit<libc::pthread_mutexattr_t>);

impl AttrGuard {
    fn as_mut_ptr(&mut self) -> *mut libc::pthread_mutexattr_t {
        self.0.as_mut_ptr()
    }
}

impl Drop for AttrGuard {
    fn drop(&mut self) {
        // SAFETY: an AttrGuard is only built after pthread_mutexattr_init
        // succeeded, so the attribute object is initialised, and it is destroyed
        // exactly once, here.
        unsafe { libc::pthread_mutexattr_destroy(self.0.as_mut_ptr()) };
    }
}

fn check(call: &str, rc: i32) {
    if rc != 0 {
        super::fail(call, rc);
    }
}

/// Initialises a robust, process-shared mutex of `kind` at `mutex`.
///
/// # Safety
/// `mutex` must be valid for writes of a `pthread_mutex_t`, suitably aligned,
/// and no thread in any process may use it until this returns.
pub unsafe fn init(mutex: *mut libc::pthread_mutex_t, kind: Kind) {
    let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is writable storage for an attribute object.
    check("pthread_mutexattr_init", unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) });
    let mut attr = AttrGuard(attr);
    let ty = match kind {
        Kind::ErrorCheck => libc::PTHREAD_MUTEX_ERRORCHECK,
        Kind::Recursive => libc::PTHREAD_MUTEX_RECURSIVE,
    };
    // SAFETY: `attr` was initialised above and is destroyed by its guard;
    // the values passed here and below are the documented constants.
    check("pthread_mutexattr_settype", unsafe { libc::pthread_mutexattr_settype(attr.as_mut_ptr(), ty) });
    // SAFETY: as above.
    check("pthread_mutexattr_setpshared", unsafe {
        libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED)
    });
    // SAFETY: as above.
    check("pthread_mutexattr_setrobust", unsafe {
        libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST)
    });
    // SAFETY: the caller guarantees `mutex` is valid, aligned and unused;
    // `attr` is initialised.
    check("pthread_mutex_init", unsafe { libc::pthread_mutex_init(mutex, attr.as_mut_ptr()) });
}

/// A view of one `int` field of the mutex as an atomic.
///
/// # Safety
/// `mutex` points to a mapped `pthread_mutex_t`; `offset` is one of the field
/// offsets above (4-byte aligned, inside the 40-byte object).
unsafe fn field<'a>(mutex: *const libc::pthread_mutex_t, offset: usize) -> &'a AtomicI32 {
    // SAFETY: forwarded from the caller; pthread_mutex_t is 8-byte aligned, so
    // the field is 4-byte aligned. glibc and the kernel change these fields
    // only with single aligned accesses (atomics for `__lock`), so reading them
    // through an atomic is a plain load that can at worst be stale.
    unsafe { &*mutex.cast::<u8>().add(offset).cast::<AtomicI32>() }
}

/// The `__kind` that [`init`] writes for `kind`, as this process's glibc
/// writes it.
fn expected_kind(kind: Kind) -> i32 {
    static KINDS: OnceLock<[i32; 2]> = OnceLock::new();
    let kinds = KINDS.get_or_init(|| {
        [Kind::ErrorCheck, Kind::Recursive].map(|k| {
            let mut scratch = MaybeUninit::<libc::pthread_mutex_t>::zeroed();
            // SAFETY: fresh, aligned, unshared storage; destroyed below.
            unsafe { init(scratch.as_mut_ptr(), k) };
            // SAFETY: `scratch` was just initialised.
            let value = unsafe { field(scratch.as_ptr(), KIND_OFFSET) }.load(Ordering::Relaxed);
            // SAFETY: initialised, unlocked, used by nobody else.
            unsafe { libc::pthread_mutex_destroy(scratch.as_mut_ptr()) };
            value
        })
    });
    kinds[kind as usize]
}

/// Whether the mutex's `__kind` is what [`init`] writes for `kind`. A mutex
/// of another kind would make glibc take other paths (non-robust, PI) or
/// fail with `EINVAL`.
///
/// # Safety
/// `mutex` points to a mapped `pthread_mutex_t`.
#[inline]
pub unsafe fn kind_matches(mutex: *const libc::pthread_mutex_t, kind: Kind) -> bool {
    // SAFETY: forwarded from the caller.
    let found = unsafe { field(mutex, KIND_OFFSET) }.load(Ordering::Relaxed);
    found & KIND_MASK == expected_kind(kind) & KIND_MASK
}

/// Writes the `__kind` that [`init`] writes for `kind`, over a corrupted one.
///
/// # Safety
/// `mutex` points to a mapped `pthread_mutex_t` that was initialised as `kind`.
pub unsafe fn restore_kind(mutex: *mut libc::pthread_mutex_t, kind: Kind) {
    // SAFETY: forwarded from the caller.
    unsafe { field(mutex, KIND_OFFSET) }.store(expected_kind(kind), Ordering::Relaxed);
}

/// Takes the mutex if it is free, without blocking.
///
/// # Safety
/// `mutex` must point to a mutex initialised by [`init`], in memory that stays
/// mapped for as long as the caller holds it.
#[inline]
pub unsafe fn try_lock(mutex: *mut libc::pthread_mutex_t) -> Acquire {
    // SAFETY: the caller guarantees `mutex` is an initialised, mapped mutex.
    let rc = unsafe { libc::pthread_mutex_trylock(mutex) };
    match rc {
        0 => Acquire::Acquired,
        libc::EOWNERDEAD => {
            // SAFETY: EOWNERDEAD means the caller now holds the mutex, which is
            // what pthread_mutex_consistent requires.
            check("pthread_mutex_consistent", unsafe { libc::pthread_mutex_consistent(mutex) });
            Acquire::OwnerDied
        }
        libc::EBUSY => Acquire::WouldBlock,
        libc::EDEADLK => Acquire::Deadlock,
        libc::ENOTRECOVERABLE => Acquire::NotRecoverable,
        libc::EINVAL => Acquire::Invalid,
        libc::EAGAIN => Acquire::TooDeep,
        _ => super::fail("pthread_mutex_trylock", rc),
    }
}

/// Releases the mutex.
///
/// # Safety
/// `mutex` must point to a mutex initialised by [`init`], held by the calling
/// thread.
#[inline]
pub unsafe fn unlock(mutex: *mut libc::pthread_mutex_t) {
    // SAFETY: the caller guarantees the mutex is initialised, mapped and held
    // by this thread. Robust mutexes check ownership, so a violation shows up as
    // EPERM rather than as silent corruption.
    let rc = unsafe { libc::pthread_mutex_unlock(mutex) };
    check("pthread_mutex_unlock", rc);
}

/// The lock word (`__lock`), for sleeping on it with a futex and for reading
/// the owner. Its layout is the kernel's robust-futex ABI.
///
/// # Safety
/// `mutex` points to a mapped `pthread_mutex_t`; the reference must not
/// outlive the mapping.
#[inline]
pub unsafe fn lock_word<'a>(mutex: *const libc::pthread_mutex_t) -> &'a AtomicU32 {
    // SAFETY: forwarded from the caller; `__lock` is the first, 4-byte aligned
    // int, changed only atomically by glibc and the kernel.
    unsafe { &*mutex.cast::<AtomicU32>() }
}

/// The kernel thread id that holds the mutex, or `None` when it is free.
/// A snapshot: the answer may be stale at once.
///
/// # Safety
/// `mutex` points to a mapped `pthread_mutex_t`.
pub unsafe fn owner(mutex: *const libc::pthread_mutex_t) -> Option<u32> {
    // SAFETY: forwarded from the caller.
    let tid = unsafe { lock_word(mutex) }.load(Ordering::Relaxed) & TID_MASK;
    (tid != 0).then_some(tid)
}

/// How deep the holder has nested a recursive mutex (a snapshot; meaningful
/// only while it is held).
///
/// # Safety
/// `mutex` points to a mapped `pthread_mutex_t`.
pub unsafe fn depth(mutex: *const libc::pthread_mutex_t) -> u32 {
    // SAFETY: forwarded from the caller.
    unsafe { field(mutex, COUNT_OFFSET) }.load(Ordering::Relaxed) as u32
}

/// Marks the mutex as if the kernel had seen its owner die: the lock word
/// `observed` (naming a dead owner) becomes `FUTEX_OWNER_DIED`, keeping the
/// waiters bit, so the next `try_lock` gets `EOWNERDEAD`. Returns `false` if
/// the word changed meanwhile (the caller re-examines it).
///
/// # Safety
/// `mutex` points to a mapped mutex initialised by [`init`], and the caller
/// has established that the thread `observed` names is dead.
pub unsafe fn declare_owner_dead(mutex: *const libc::pthread_mutex_t, observed: u32) -> bool {
    let marked = (observed & WAITERS) | OWNER_DIED;
    // SAFETY: forwarded from the caller.
    let word = unsafe { lock_word(mutex) };
    // AcqRel: the next locker sees whatever the dead owner had published,
    // as after a kernel-marked death.
    word.compare_exchange(observed, marked, Ordering::AcqRel, Ordering::Relaxed).is_ok()
}

/// Repairs a mutex that `try_lock` found `ENOTRECOVERABLE`, turning it into
/// one whose owner died: the next `try_lock` gets `EOWNERDEAD` and makes it
/// consistent. glibc's trylock leaves such a mutex's word holding the
/// caller's tid, so the caller owns the word while it repairs it.
///
/// # Safety
/// `mutex` points to a mapped mutex initialised by [`init`]; the caller's
/// last `try_lock` on it returned [`Acquire::NotRecoverable`].
pub unsafe fn repair_not_recoverable(mutex: *mut libc::pthread_mutex_t, caller_tid: u32) {
    // SAFETY: forwarded from the caller.
    let (word, owner) = unsafe { (lock_word(mutex), field(mutex, OWNER_OFFSET)) };
    let observed = word.load(Ordering::Acquire);
    if observed & TID_MASK != caller_tid && observed & TID_MASK != 0 {
        return; // someone else's word now: nothing of ours to repair
    }
    if owner.load(Ordering::Relaxed) == OWNER_NOT_RECOVERABLE {
        owner.store(0, Ordering::Relaxed);
    }
    // Release: the `__owner` store above is seen by whoever takes the word.
    let _ = word.compare_exchange(observed, (observed & WAITERS) | OWNER_DIED, Ordering::Release, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::UnsafeCell;

    struct Boxed(Box<UnsafeCell<libc::pthread_mutex_t>>);
    // SAFETY: the mutex is process-shared and made for concurrent use.
    unsafe impl Sync for Boxed {}

    fn new(kind: Kind) -> Boxed {
        // SAFETY: all-zero bytes are a valid bit pattern for storage that init overwrites.
        let m = Boxed(Box::new(UnsafeCell::new(unsafe { std::mem::zeroed() })));
        // SAFETY: fresh, aligned, unshared storage.
        unsafe { init(m.0.get(), kind) };
        m
    }

    #[test]
    fn the_fields_sit_where_this_module_says() {
        let m = new(Kind::ErrorCheck);
        // SAFETY: the mutex is initialised and lives in the box for the whole test.
        unsafe {
            assert!(kind_matches(m.0.get(), Kind::ErrorCheck));
            assert!(!kind_matches(m.0.get(), Kind::Recursive));
            assert_eq!(try_lock(m.0.get()), Acquire::Acquired);
            let me = crate::sys::proc::tid();
            assert_eq!(owner(m.0.get()), Some(me));
            assert_eq!(field(m.0.get(), OWNER_OFFSET).load(Ordering::Relaxed), me as i32);
            assert_eq!(depth(m.0.get()), 1);
            unlock(m.0.get());
        }
        assert_eq!(std::mem::size_of::<libc::pthread_mutex_t>(), 40);
    }

    #[test]
    fn errorcheck_reports_relock_instead_of_hanging() {
        let m = new(Kind::ErrorCheck);
        // SAFETY: as above.
        unsafe {
            assert_eq!(try_lock(m.0.get()), Acquire::Acquired);
            assert_eq!(try_lock(m.0.get()), Acquire::Deadlock);
            unlock(m.0.get());
            assert_eq!(owner(m.0.get()), None);
        }
    }

    #[test]
    fn recursive_nests() {
        let m = new(Kind::Recursive);
        // SAFETY: as above.
        unsafe {
            assert_eq!(try_lock(m.0.get()), Acquire::Acquired);
            assert_eq!(try_lock(m.0.get()), Acquire::Acquired);
            assert_eq!(depth(m.0.get()), 2);
            unlock(m.0.get());
            unlock(m.0.get());
            assert_eq!(owner(m.0.get()), None);
        }
    }

    #[test]
    fn thread_exit_is_owner_death() {
        let m = std::sync::Arc::new(new(Kind::ErrorCheck));
        let m2 = std::sync::Arc::clone(&m);
        // SAFETY: as above; the thread exits holding the lock on purpose.
        std::thread::spawn(move || unsafe { assert_eq!(try_lock(m2.0.get()), Acquire::Acquired) }).join().unwrap();
        // SAFETY: as above.
        unsafe {
            assert_eq!(try_lock(m.0.get()), Acquire::OwnerDied);
            unlock(m.0.get());
            assert_eq!(try_lock(m.0.get()), Acquire::Acquired);
            unlock(m.0.get());
        }
    }

    #[test]
    fn a_dead_owner_the_kernel_missed_and_an_unrecoverable_mutex_are_repaired() {
        let m = new(Kind::ErrorCheck);
        // SAFETY: as above; the words are forged on purpose, as a foreign
        // process could leave them.
        unsafe {
            let word = lock_word(m.0.get());
            word.store(0x3fff_fff0 | WAITERS, Ordering::Relaxed); // a tid nobody has
            assert_eq!(try_lock(m.0.get()), Acquire::WouldBlock);
            assert!(declare_owner_dead(m.0.get(), 0x3fff_fff0 | WAITERS));
            assert_eq!(try_lock(m.0.get()), Acquire::OwnerDied);
            unlock(m.0.get());

            // An owner that died, then an unlock without consistent: the
            // state glibc calls not recoverable.
            field(m.0.get(), OWNER_OFFSET).store(OWNER_NOT_RECOVERABLE, Ordering::Relaxed);
            assert_eq!(try_lock(m.0.get()), Acquire::NotRecoverable);
            repair_not_recoverable(m.0.get(), crate::sys::proc::tid());
            assert_eq!(try_lock(m.0.get()), Acquire::OwnerDied);
            unlock(m.0.get());
            assert_eq!(try_lock(m.0.get()), Acquire::Acquired);
            unlock(m.0.get());

            // A scribbled kind is seen, and restored.
            field(m.0.get(), KIND_OFFSET).store(12345, Ordering::Relaxed);
            assert!(!kind_matches(m.0.get(), Kind::ErrorCheck));
            assert_eq!(try_lock(m.0.get()), Acquire::Invalid);
            restore_kind(m.0.get(), Kind::ErrorCheck);
            assert_eq!(try_lock(m.0.get()), Acquire::Acquired);
            unlock(m.0.get());
        }
    }
}
