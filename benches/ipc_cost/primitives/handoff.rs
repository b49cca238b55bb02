//! Section 2: handing control from one process to another and back; µs per
//! round trip, with p50 and p99 of the individual round trips.
//!
//! A sample makes the mechanism afresh, forks a responder that answers every
//! round and an initiator that runs [`WARM_TRIPS`] untimed rounds and then
//! times each of the next `trips` rounds with one clock read per round trip.
//! Both are forked, so the bench process never pins itself; each child pins
//! itself (per placement) before it first touches the primitive, because
//! shmsync decides once per thread and pid whether spinning can help.
//!
//! `futex` is a bare shared futex word (no `FUTEX_PRIVATE_FLAG`, as shmsync
//! uses) that each side sets and then always wakes, never spinning: the
//! floor of a kernel-mediated handoff, not of the section (a spinning waiter
//! can beat it across cores).

use std::cell::UnsafeCell;
use std::fs::File;
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raw_sync::events::{Event as RawSyncEvent, EventImpl, EventInit, EventState};
use raw_sync::Timeout;

use super::reap_or_kill;
use crate::common::{allowed_cpus, sem_init_shared, sem_post, sem_wait, spawn_pinned, Line, Mapping, ZeroValid};
use crate::model::{Key, Probe, Sample, Section, Unit};

/// Timed round trips per sample, full and quick.
const TRIPS: [usize; 2] = [3000, 200];
/// Untimed round trips first, so both sides are up and past their faults.
const WARM_TRIPS: usize = 20;
/// Room for the per-trip times of the longest sample.
const MAX_TRIPS: usize = 4096;
/// Room for one raw_sync event (a pthread mutex, a condvar and two flags).
const RAW_SYNC_SLOT: usize = 256;

/// What the two processes of a sample share. All-zero bytes are a valid
/// value of every field (the semaphores and raw_sync's storage are
/// initialised before use and reached through raw pointers only).
#[repr(C)]
struct Shared {
    /// Each timed round trip, ns, written by the initiator.
    trip_ns: [AtomicU64; MAX_TRIPS],
    /// How many round trips the initiator timed, written at its end.
    timed: Line<AtomicU64>,
    /// How many rounds the responder answered, written at its end.
    answered: Line<AtomicU64>,
    /// The `futex` word: 1 the responder's move, 2 the initiator's.
    futex: Line<AtomicU32>,
    /// Whose move it is in the `shmsync Condition` ping-pong, as `futex`.
    turn: Line<AtomicU32>,
    /// The two POSIX semaphores, initiator-to-responder first.
    sems: [Line<UnsafeCell<MaybeUninit<libc::sem_t>>>; 2],
    /// Storage for raw_sync's two events.
    raw_sync: [Line<UnsafeCell<[u8; RAW_SYNC_SLOT]>>; 2],
}

impl Shared {
    fn sem(&self, i: usize) -> *mut libc::sem_t {
        self.sems[i].0.get().cast()
    }
}

// SAFETY: every field is an atomic, or storage that is initialised before use
// and reached through raw pointers only, as `Shared`'s docs say.
unsafe impl ZeroValid for Shared {}

/// One way to hand control over and get it back; `ping` runs in the
/// initiator, `pong` in the responder. Failures panic (in a child: exit 101).
trait Handoff {
    /// The initiator's side of one round trip: signal, then wait for the reply.
    fn ping(&self);
    /// The responder's side: wait for the signal, then reply.
    fn pong(&self);
    /// Checked in the parent after both children exited cleanly: nothing
    /// pending in either direction.
    fn check_idle(&self) -> Result<(), String> {
        Ok(())
    }
}

struct ShmSemaphores {
    there: shmsync::Semaphore,
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
/// unit is a u64). Both processes keep every end open; nothing relies on EOF.
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
    shared: &'a Shared,
}

impl<'a> PosixSems<'a> {
    fn new(shared: &'a Shared) -> Self {
        for i in 0..2 {
            // SAFETY: the slot is aligned, mapped, and used by nobody yet.
            unsafe { sem_init_shared(shared.sem(i), 0) };
        }
        PosixSems { shared }
    }
}

impl Handoff for PosixSems<'_> {
    fn ping(&self) {
        // SAFETY: both semaphores were initialised in `new` and stay mapped
        // until `self` and the mapping drop, after every child is reaped.
        unsafe {
            sem_post(self.shared.sem(0));
            sem_wait(self.shared.sem(1));
        }
    }
    fn pong(&self) {
        // SAFETY: as in `ping`.
        unsafe {
            sem_wait(self.shared.sem(0));
            sem_post(self.shared.sem(1));
        }
    }
    fn check_idle(&self) -> Result<(), String> {
        let mut values = [-1; 2];
        for (i, v) in values.iter_mut().enumerate() {
            // SAFETY: initialised in `new`; no child is alive.
            unsafe { libc::sem_getvalue(self.shared.sem(i), v) };
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
            unsafe { libc::sem_destroy(self.shared.sem(i)) };
        }
    }
}

struct RawSyncEvents {
    there: Box<dyn EventImpl>,
    back: Box<dyn EventImpl>,
}

impl RawSyncEvents {
    /// The events live in `shared`, which must outlive the result.
    fn new(shared: &Shared) -> Result<Self, String> {
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
        Ok(RawSyncEvents { there: make(&shared.raw_sync[0])?, back: make(&shared.raw_sync[1])? })
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

#[derive(Clone, Copy)]
enum Mech {
    Semaphore,
    Event,
    Condition,
    Futex,
    Pipe,
    Socketpair,
    Eventfd,
    PosixSem,
    RawSync,
}

impl Mech {
    const ALL: [Mech; 9] = [
        Mech::Semaphore,
        Mech::Event,
        Mech::Condition,
        Mech::Futex,
        Mech::Pipe,
        Mech::Socketpair,
        Mech::Eventfd,
        Mech::PosixSem,
        Mech::RawSync,
    ];

    fn name(self) -> &'static str {
        match self {
            Mech::Semaphore => "shmsync Semaphore",
            Mech::Event => "shmsync Event",
            Mech::Condition => "shmsync Condition",
            Mech::Futex => "futex",
            Mech::Pipe => "pipe",
            Mech::Socketpair => "socketpair",
            Mech::Eventfd => "eventfd",
            Mech::PosixSem => "POSIX sem_t",
            Mech::RawSync => "raw_sync Event",
        }
    }

    /// Makes the mechanism, fresh, in (or beside) `shared`.
    fn make(self, shared: &Shared) -> Result<Box<dyn Handoff + '_>, String> {
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
                Box::new(ShmCondition { cond: shmsync::Condition::new().map_err(e)?, turn: &shared.turn.0 })
            }
            Mech::Futex => Box::new(Futex { word: &shared.futex.0 }),
            Mech::Pipe => Box::new(Streams::pipes()?),
            Mech::Socketpair => Box::new(Streams::socketpair()?),
            Mech::Eventfd => Box::new(Streams::eventfds()?),
            Mech::PosixSem => Box::new(PosixSems::new(shared)),
            Mech::RawSync => Box::new(RawSyncEvents::new(shared)?),
        })
    }
}

/// Where the two processes of a round trip run.
#[derive(Clone, Copy)]
struct Placement {
    name: &'static str,
    initiator: Option<usize>,
    responder: Option<usize>,
}

/// The placements this machine allows, from the bench's own affinity (which
/// the children inherit unless they pin themselves). No `cross-core` on one CPU.
fn placements() -> Vec<Placement> {
    let cpus = allowed_cpus();
    let mut out = Vec::new();
    if let [a, b, ..] = cpus[..] {
        out.push(Placement { name: "cross-core", initiator: Some(a), responder: Some(b) });
    }
    if let Some(&a) = cpus.first() {
        out.push(Placement { name: "same-core", initiator: Some(a), responder: Some(a) });
    }
    out.push(Placement { name: "unpinned", initiator: None, responder: None });
    out
}

struct HandoffProbe {
    mech: Mech,
    place: Placement,
}

impl HandoffProbe {
    fn run(&self, trips: usize) -> Result<Sample, String> {
        let map = Mapping::<Shared>::new();
        let shared = map.shared();
        // Made before the forks, so both children inherit it; dropped here
        // (shmsync's unlink their names) after both are reaped.
        let h = self.mech.make(shared)?;
        let h = &*h;
        let rounds = (WARM_TRIPS + trips) as u64;
        // SAFETY: the harness runs on one thread; the body touches only the
        // inherited mapping and the mechanism under test.
        let responder = unsafe {
            spawn_pinned("responder", self.place.responder, &|| {
                for _ in 0..rounds {
                    h.pong();
                }
                shared.answered.0.store(rounds, Ordering::Relaxed);
                0
            })
        };
        // SAFETY: as for the responder.
        let initiator = unsafe {
            spawn_pinned("initiator", self.place.initiator, &|| {
                // Fault the result slots in before the clock starts.
                for slot in &shared.trip_ns[..trips] {
                    slot.store(0, Ordering::Relaxed);
                }
                for _ in 0..WARM_TRIPS {
                    h.ping();
                }
                let mut last = Instant::now();
                for slot in &shared.trip_ns[..trips] {
                    h.ping();
                    let now = Instant::now();
                    slot.store((now - last).as_nanos() as u64, Ordering::Relaxed);
                    last = now;
                }
                shared.timed.0.store(trips as u64, Ordering::Relaxed);
                0
            })
        };
        reap_or_kill(&mut [initiator, responder], Duration::from_secs(70))?;
        // Visible: waitpid synchronises with the children's exits.
        let (timed, answered) = (shared.timed.0.load(Ordering::Relaxed), shared.answered.0.load(Ordering::Relaxed));
        if timed != trips as u64 || answered != rounds {
            return Err(format!(
                "initiator timed {timed} of {trips} round trips, responder answered {answered} of {rounds} rounds"
            ));
        }
        h.check_idle()?;
        let mut ns: Vec<u64> = shared.trip_ns[..trips].iter().map(|s| s.load(Ordering::Relaxed)).collect();
        let total: u64 = ns.iter().sum();
        ns.sort_unstable();
        let pct = |p: f64| ns[((p * trips as f64).ceil() as usize).clamp(1, trips) - 1] as f64 / 1e3;
        Ok(Sample { value: total as f64 / trips as f64 / 1e3, p50: Some(pct(0.50)), p99: Some(pct(0.99)) })
    }
}

impl Probe for HandoffProbe {
    fn key(&self) -> Key {
        Key { section: Section::Handoff, mechanism: self.mech.name().to_string(), variant: self.place.name.to_string() }
    }

    fn unit(&self) -> Unit {
        Unit::MicrosPerOp
    }

    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        self.run(TRIPS[usize::from(quick)])
    }
}

pub fn probes() -> Vec<Box<dyn Probe>> {
    let mut out: Vec<Box<dyn Probe>> = Vec::new();
    for place in placements() {
        for mech in Mech::ALL {
            out.push(Box::new(HandoffProbe { mech, place }));
        }
    }
    out
}
