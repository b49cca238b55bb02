//! Handing control from one process to another and back, shared by
//! `benches/handoff.rs` and the ipc_cost study's section 2: the mechanisms
//! (an initiator's `ping`, a responder's `pong`) and the placements of the
//! two processes. Each caller forks its own initiator and responder and
//! times them its own way.

use std::cell::UnsafeCell;
use std::fs::File;
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use raw_sync::events::{Event as RawSyncEvent, EventImpl, EventInit, EventState};
use raw_sync::Timeout;

use super::{allowed_cpus, sem_init_shared, sem_post, sem_wait, Line};

/// Room for one raw_sync event (a pthread mutex, a condvar and two flags).
pub const RAW_SYNC_SLOT: usize = 256;

/// Storage for a process-shared POSIX semaphore, initialised before use and
/// reached through raw pointers only.
pub type SemSlot = Line<UnsafeCell<MaybeUninit<libc::sem_t>>>;

/// What some mechanisms keep in the shared mapping, as part of the caller's
/// shared struct. All-zero bytes are a valid value of every field (the
/// semaphores and raw_sync's storage are initialised before use and reached
/// through raw pointers only).
#[repr(C)]
pub struct Slots {
    /// The `futex` word: 1 the responder's move, 2 the initiator's.
    pub futex: Line<AtomicU32>,
    /// Whose move it is in the `Condition` ping-pong, as `futex`; 0 before
    /// the first round.
    pub turn: Line<AtomicU32>,
    /// The two POSIX semaphores, initiator-to-responder first.
    pub sems: [SemSlot; 2],
    /// Storage for raw_sync's two events, which it initialises itself.
    pub raw_sync: [Line<UnsafeCell<[u8; RAW_SYNC_SLOT]>>; 2],
}

impl Slots {
    fn sem(&self, i: usize) -> *mut libc::sem_t {
        self.sems[i].0.get().cast()
    }
}

/// One way to hand control over and get it back; `ping` runs in the
/// initiator, `pong` in the responder, each in its own forked process.
/// Failures panic (in a child: exit 101).
pub trait Handoff {
    /// The initiator's side of one round trip: signal, then wait for the reply.
    fn ping(&self);
    /// The responder's side: wait for the signal, then reply.
    fn pong(&self);
    /// Restores the initial state between samples; no child is alive then.
    fn reset(&self) {}
    /// Checked in the parent after both children exited cleanly: nothing
    /// pending in either direction.
    fn check_idle(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The mechanisms; each caller names them its own way.
#[derive(Clone, Copy)]
pub enum Mech {
    /// Two `shmsync::Semaphore::new(0)`.
    Semaphore,
    /// Two `shmsync::Event`s, each side clearing its own incoming event
    /// before signalling the other.
    Event,
    /// One `shmsync::Condition` and the `turn` word it guards.
    Condition,
    /// A bare shared futex word that each side sets and then always wakes.
    Futex,
    /// Two pipes, one byte each way.
    Pipe,
    /// One Unix stream socketpair, one byte each way.
    Socketpair,
    /// Two eventfds in counter mode.
    Eventfd,
    /// Two POSIX `sem_t`, `pshared = 1`.
    PosixSem,
    /// Two raw_sync 0.1 auto-reset events.
    RawSync,
}

impl Mech {
    /// Makes the mechanism, fresh, in (or beside) `slots`. Call it before any
    /// fork, so the children inherit it; shmsync's objects unlink their names
    /// when the result drops.
    pub fn make(self, slots: &Slots) -> Result<Box<dyn Handoff + '_>, String> {
        let e = |e: shmsync::Error| format!("creating it failed: {e}");
        Ok(match self {
            Mech::Semaphore => Box::new(ShmSemaphores {
                there: shmsync::Semaphore::new(0).map_err(e)?,
                back: shmsync::Semaphore::new(0).map_err(e)?,
            }),
            Mech::Event => Box::new(ShmEvents {
                there: shmsync::Event::new().map_err(e)?,
                back: shmsync::Event::new().map_err(e)?,
            }),
            Mech::Condition => {
                Box::new(ShmCondition { cond: shmsync::Condition::new().map_err(e)?, turn: &slots.turn.0 })
            }
            Mech::Futex => Box::new(Futex { word: &slots.futex.0 }),
            Mech::Pipe => Box::new(Streams::pipes()?),
            Mech::Socketpair => Box::new(Streams::socketpair()?),
            Mech::Eventfd => Box::new(Streams::eventfds()?),
            Mech::PosixSem => Box::new(PosixSems::new(slots)),
            Mech::RawSync => Box::new(RawSyncEvents::new(slots)?),
        })
    }
}

struct ShmSemaphores {
    /// Initiator to responder.
    there: shmsync::Semaphore,
    /// Responder to initiator.
    back: shmsync::Semaphore,
}

impl Handoff for ShmSemaphores {
    fn ping(&self) {
        self.there.release().expect("Semaphore::release");
        // The permit would release on drop; the unit is the responder's.
        self.back.acquire().forget();
    }
    fn pong(&self) {
        self.there.acquire().forget();
        self.back.release().expect("Semaphore::release");
    }
    fn check_idle(&self) -> Result<(), String> {
        match (self.there.value(), self.back.value()) {
            (0, 0) => Ok(()),
            (a, b) => Err(format!("semaphore values {a} and {b} after the run, expected 0 and 0")),
        }
    }
}

struct ShmEvents {
    there: shmsync::Event,
    back: shmsync::Event,
}

impl Handoff for ShmEvents {
    // Race-free: each side clears its own incoming event before it signals
    // the other, so no clear can undo a set that the next round needs.
    fn ping(&self) {
        self.there.set();
        self.back.wait();
        self.back.clear();
    }
    fn pong(&self) {
        self.there.wait();
        self.there.clear();
        self.back.set();
    }
    fn check_idle(&self) -> Result<(), String> {
        match (self.there.is_set(), self.back.is_set()) {
            (false, false) => Ok(()),
            (a, b) => Err(format!("events set ({a}, {b}) after the run, expected both clear")),
        }
    }
}

struct ShmCondition<'a> {
    cond: shmsync::Condition,
    turn: &'a AtomicU32,
}

impl Handoff for ShmCondition<'_> {
    // `turn` is only touched under the condition's lock, which orders it.
    fn ping(&self) {
        let g = self.cond.lock().expect("Condition poisoned");
        self.turn.store(1, Ordering::Relaxed);
        self.cond.notify_one();
        let g = self.cond.wait_while(g, || self.turn.load(Ordering::Relaxed) != 2).expect("Condition poisoned");
        drop(g);
    }
    fn pong(&self) {
        let g = self.cond.lock().expect("Condition poisoned");
        let g = self.cond.wait_while(g, || self.turn.load(Ordering::Relaxed) != 1).expect("Condition poisoned");
        self.turn.store(2, Ordering::Relaxed);
        self.cond.notify_one();
        drop(g);
    }
    fn reset(&self) {
        self.turn.store(0, Ordering::Relaxed);
    }
    fn check_idle(&self) -> Result<(), String> {
        match (self.turn.load(Ordering::Relaxed), self.cond.is_poisoned()) {
            (2, false) => Ok(()),
            (t, p) => Err(format!("turn {t}, poisoned {p} after the run, expected 2 and false")),
        }
    }
}

struct Futex<'a> {
    word: &'a AtomicU32,
}

impl Futex<'_> {
    fn wake(&self) {
        // SAFETY: FUTEX_WAKE only uses the address to find sleepers; the word
        // is an aligned AtomicU32 in a mapping that outlives the call. Not
        // FUTEX_PRIVATE_FLAG: the word is shared between processes.
        let rc = unsafe { libc::syscall(libc::SYS_futex, self.word.as_ptr(), libc::FUTEX_WAKE, 1) };
        assert!(rc >= 0, "FUTEX_WAKE: {}", std::io::Error::last_os_error());
    }

    /// Waits until the word is `want`.
    fn wait_for(&self, want: u32) {
        loop {
            let seen = self.word.load(Ordering::Acquire);
            if seen == want {
                return;
            }
            // SAFETY: as in `wake`; a null timeout waits without a bound of
            // its own (the child's alarm is the bound), and the kernel
            // returns at once if the word no longer holds `seen`.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.word.as_ptr(),
                    libc::FUTEX_WAIT,
                    seen,
                    std::ptr::null::<libc::timespec>(),
                )
            };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                let errno = err.raw_os_error();
                assert!(errno == Some(libc::EAGAIN) || errno == Some(libc::EINTR), "FUTEX_WAIT: {err}");
            }
        }
    }
}

impl Handoff for Futex<'_> {
    fn ping(&self) {
        self.word.store(1, Ordering::Release);
        self.wake();
        self.wait_for(2);
    }
    fn pong(&self) {
        self.wait_for(1);
        self.word.store(2, Ordering::Release);
        self.wake();
    }
    fn check_idle(&self) -> Result<(), String> {
        match self.word.load(Ordering::Relaxed) {
            2 => Ok(()),
            v => Err(format!("futex word {v} after the run, expected 2")),
        }
    }
}

/// A byte stream each way: `ping` writes `there.1` and reads `back.0`,
/// `pong` the other two. One byte per message (eight for an eventfd, whose
/// unit is a u64), checked on arrival. Both processes keep every end open;
/// nothing relies on EOF.
struct Streams {
    there: (File, File),
    back: (File, File),
    /// Bytes per message.
    len: usize,
}

impl Streams {
    fn pipes() -> Result<Streams, String> {
        let pipe = || -> Result<(File, File), String> {
            let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
            Ok((File::from(r), File::from(w)))
        };
        Ok(Streams { there: pipe()?, back: pipe()?, len: 1 })
    }

    /// One socketpair: each end is the read end of one direction and the
    /// write end of the other.
    fn socketpair() -> Result<Streams, String> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (a, b) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| format!("socketpair: {e}"))?;
        let (a, b) = (File::from(a), File::from(b));
        let (a2, b2) = (a.try_clone().map_err(|e| e.to_string())?, b.try_clone().map_err(|e| e.to_string())?);
        // Initiator writes a, responder reads b; responder writes b, initiator reads a.
        Ok(Streams { there: (b, a), back: (a2, b2), len: 1 })
    }

    /// Two eventfds in counter mode: a write adds 1, a read takes the count.
    fn eventfds() -> Result<Streams, String> {
        let efd = || -> Result<(File, File), String> {
            // SAFETY: eventfd takes an initial value and flags; checked below.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            let f = unsafe { File::from_raw_fd(fd) };
            let g = f.try_clone().map_err(|e| e.to_string())?;
            Ok((f, g))
        };
        Ok(Streams { there: efd()?, back: efd()?, len: 8 })
    }

    fn send(&self, mut to: &File) {
        let msg = 1u64.to_ne_bytes();
        to.write_all(&msg[..self.len]).expect("write");
    }

    fn recv(&self, mut from: &File) {
        let mut buf = [0u8; 8];
        from.read_exact(&mut buf[..self.len]).expect("read");
        assert_eq!(buf[..self.len], 1u64.to_ne_bytes()[..self.len], "wrong message");
    }
}

impl Handoff for Streams {
    fn ping(&self) {
        self.send(&self.there.1);
        self.recv(&self.back.0);
    }
    fn pong(&self) {
        self.recv(&self.there.0);
        self.send(&self.back.1);
    }
    fn check_idle(&self) -> Result<(), String> {
        let mut fds =
            [&self.there.0, &self.back.0].map(|f| libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        // SAFETY: `fds` is a live array of two pollfds; timeout 0 does not block.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 0) };
        match n {
            0 => Ok(()),
            n if n < 0 => Err(format!("poll: {}", std::io::Error::last_os_error())),
            _ => Err("unread bytes left after the run".to_string()),
        }
    }
}

struct PosixSems<'a> {
    slots: &'a Slots,
}

impl<'a> PosixSems<'a> {
    fn new(slots: &'a Slots) -> Self {
        for i in 0..2 {
            // SAFETY: the slot is aligned, mapped, and used by nobody yet.
            unsafe { sem_init_shared(slots.sem(i), 0) };
        }
        PosixSems { slots }
    }
}

impl Handoff for PosixSems<'_> {
    fn ping(&self) {
        // SAFETY: both semaphores were initialised in `new` and stay mapped
        // until `self` and the mapping drop, after every child is reaped.
        unsafe {
            sem_post(self.slots.sem(0));
            sem_wait(self.slots.sem(1));
        }
    }
    fn pong(&self) {
        // SAFETY: as in `ping`.
        unsafe {
            sem_wait(self.slots.sem(0));
            sem_post(self.slots.sem(1));
        }
    }
    fn check_idle(&self) -> Result<(), String> {
        let mut values = [-1; 2];
        for (i, v) in values.iter_mut().enumerate() {
            // SAFETY: initialised in `new`; no child is alive.
            unsafe { libc::sem_getvalue(self.slots.sem(i), v) };
        }
        match values {
            [0, 0] => Ok(()),
            [a, b] => Err(format!("sem_t values {a} and {b} after the run, expected 0 and 0")),
        }
    }
}

impl Drop for PosixSems<'_> {
    fn drop(&mut self) {
        for i in 0..2 {
            // SAFETY: initialised in `new`; no child is alive, so nobody
            // waits on it.
            unsafe { libc::sem_destroy(self.slots.sem(i)) };
        }
    }
}

struct RawSyncEvents {
    there: Box<dyn EventImpl>,
    back: Box<dyn EventImpl>,
}

impl RawSyncEvents {
    /// The events live in `slots`, which must outlive the result.
    fn new(slots: &Slots) -> Result<Self, String> {
        let make = |slot: &Line<UnsafeCell<[u8; RAW_SYNC_SLOT]>>| {
            let mem: *mut u8 = slot.0.get().cast();
            if RawSyncEvent::size_of(Some(mem)) > RAW_SYNC_SLOT {
                return Err("raw_sync Event does not fit its slot".to_string());
            }
            // SAFETY: `mem` is a 64-byte aligned, unused slot of
            // RAW_SYNC_SLOT bytes (checked to be enough just above) in a
            // mapping that outlives the event (the caller's contract).
            let (event, _) =
                unsafe { RawSyncEvent::new(mem, true) }.map_err(|e| format!("raw_sync Event::new: {e}"))?;
            Ok(event)
        };
        Ok(RawSyncEvents { there: make(&slots.raw_sync[0])?, back: make(&slots.raw_sync[1])? })
    }
}

impl Handoff for RawSyncEvents {
    // Auto-reset events: a successful wait clears the flag.
    fn ping(&self) {
        self.there.set(EventState::Signaled).expect("raw_sync set");
        self.back.wait(Timeout::Infinite).expect("raw_sync wait");
    }
    fn pong(&self) {
        self.there.wait(Timeout::Infinite).expect("raw_sync wait");
        self.back.set(EventState::Signaled).expect("raw_sync set");
    }
}

/// Where the two processes of a round trip run.
#[derive(Clone, Copy)]
pub struct Placement {
    pub name: &'static str,
    /// The CPU the initiator pins itself to, if any.
    pub initiator: Option<usize>,
    /// The CPU the responder pins itself to, if any.
    pub responder: Option<usize>,
}

/// The placements this machine allows, from the caller's own affinity (which
/// the children inherit unless they pin themselves), named by `names`:
/// cross-core (the first two allowed CPUs; left out on one CPU), same-core
/// (both on the first) and unpinned.
pub fn placements(names: [&'static str; 3]) -> Vec<Placement> {
    let [cross, same, unpinned] = names;
    let cpus = allowed_cpus();
    let mut out = Vec::new();
    if let [a, b, ..] = cpus[..] {
        out.push(Placement { name: cross, initiator: Some(a), responder: Some(b) });
    }
    if let Some(&a) = cpus.first() {
        out.push(Placement { name: same, initiator: Some(a), responder: Some(a) });
    }
    out.push(Placement { name: unpinned, initiator: None, responder: None });
    out
}
