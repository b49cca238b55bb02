//! Garbage in a segment is an error, never a crash or a hang.
//!
//! For every kind, a segment is made and used, then bytes of it are
//! overwritten with garbage (random bytes, or whole words set to values
//! chosen to break assumptions: 0, all ones, the sign bit, tids nobody has,
//! tids of processes that exist but never mapped it), either before a
//! process opens it or while that process holds it open. The process then
//! runs every bounded operation of the kind, and the unbounded ones whose
//! only wait is for a lock (a lock word naming a dead or foreign task is
//! recovered). It may get errors (`Corrupt`, `Decode`, poison, timeouts); it
//! must not panic, crash or outlive its deadline. A failure prints the seed,
//! to replay it. The one garbage left out is a word naming a live task whose
//! memory maps cannot be read (see `names_an_uninspectable_task`).
//!
//! `SHMSYNC_FUZZ_ROUNDS` (default 12) sets the rounds per kind; each round
//! forks a few processes at once.

mod common;

use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::{fork, serial, Child, End, Names};

/// A short timeout for every operation that waits.
const T: Duration = Duration::from_millis(5);
/// How long one process may take over its operations, recoveries included
/// (a lock whose word names a dead or foreign owner is recovered after a
/// re-check slice, up to `raw::RECHECK`).
const CHILD_DEADLINE: Duration = Duration::from_secs(20);
/// Processes forked at once in a round.
const AT_ONCE: u64 = 4;

/// xorshift64*: deterministic garbage from a seed.
struct Rng(u64);

impl Rng {
    /// Seeds through splitmix64, so nearby seeds give unrelated streams.
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Overwrites 1 to 8 places of the segment file `name` with garbage; most
/// land after the 128-byte header, in the object itself.
fn scribble(name: &str, rng: &mut Rng) {
    let path = format!("/dev/shm/{name}");
    let Ok(file) = std::fs::OpenOptions::new().write(true).read(true).open(&path) else { return };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len < 8 {
        return;
    }
    for _ in 0..=rng.below(8) {
        let start = if rng.below(5) == 0 { 0 } else { 128.min(len - 4) };
        let at = (start + rng.below(len - start)) & !3;
        let bytes = match rng.below(4) {
            0 => vec![rng.next() as u8],
            1 => {
                let word: u32 = match rng.below(10) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => 0x8000_0000,
                    3 => 0x7fff_ffff,
                    4 => 1,                                      // init: alive, never maps it
                    5 => 0x3fff_0000 | rng.below(0xffff) as u32, // a tid nobody has
                    6 => 0x4000_0000 | 0x3fff_fff0,              // owner-died bit and a dead tid
                    7 => 1 << 22,                                // an RwLock writer bit, no holder
                    8 => 1 << 16,                                // an RwLock reader's queue mark
                    _ => rng.next() as u32,
                };
                word.to_ne_bytes().to_vec()
            }
            2 => (rng.next() as u32 | 0xc000_0000).to_ne_bytes().to_vec(),
            _ => rng.next().to_ne_bytes().to_vec(),
        };
        let at = at.min(len - bytes.len() as u64);
        if names_an_uninspectable_task(&file, at, &bytes) {
            continue;
        }
        let _ = file.write_at(&bytes, at);
    }
}

/// Whether writing `bytes` at `at` would make a 4-byte word name a live task
/// whose memory maps this process may not read (on some machines the
/// threads of pid 1). A lock word naming such a task reads as held by it,
/// by design: nothing shows that it does not map the lock, and taking a lock
/// from a live holder would break exclusion. A plain `lock()` then waits, as
/// it would for any holder, so the fuzz leaves such words out.
fn names_an_uninspectable_task(file: &std::fs::File, at: u64, bytes: &[u8]) -> bool {
    let start = at & !3;
    let end = (at + bytes.len() as u64 + 3) & !3;
    let mut window = vec![0u8; (end - start) as usize];
    if file.read_at(&mut window, start).map_or(true, |n| n < window.len()) {
        return false;
    }
    let skip = (at - start) as usize;
    window[skip..skip + bytes.len()].copy_from_slice(bytes);
    window.chunks_exact(4).any(|w| {
        let tid = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) & 0x3fff_ffff;
        tid != 0
            && std::path::Path::new(&format!("/proc/{tid}/stat")).exists()
            && std::fs::read(format!("/proc/{tid}/maps")).is_err()
    })
}

/// One kind under fuzz: how to make and use it before the scribbling, and
/// every bounded operation to run after it.
struct Kind {
    name: &'static str,
    make: fn(&str),
    ops: fn(&str) -> shmsync::Result<()>,
}

/// Ignores what an operation returns: errors are allowed, panics are not.
fn any<T>(_: T) {}

const KINDS: &[Kind] = &[
    Kind {
        name: "Lock",
        make: |n| {
            let l = shmsync::Lock::create(n).unwrap();
            drop(l.lock());
        },
        ops: |n| {
            let l = shmsync::Lock::open(n)?;
            any(l.try_lock());
            any(l.try_lock_for(T).map(drop));
            any((l.is_locked(), l.owner_tid(), l.is_poisoned()));
            l.clear_poison();
            any(l.lock().map(drop));
            Ok(())
        },
    },
    Kind {
        name: "RLock",
        make: |n| drop(shmsync::RLock::create(n).unwrap()),
        ops: |n| {
            let l = shmsync::RLock::open(n)?;
            if let Ok(g) = l.try_lock_for(T) {
                any(l.try_lock().map(drop));
                drop(g);
            }
            any(l.lock().map(drop));
            Ok(())
        },
    },
    Kind {
        name: "Event",
        make: |n| drop(shmsync::Event::create(n).unwrap()),
        ops: |n| {
            let e = shmsync::Event::open(n)?;
            any(e.wait_timeout(T));
            e.set();
            any(e.is_set());
            any(e.wait_timeout(T));
            e.clear();
            any(e.wait_timeout(T));
            Ok(())
        },
    },
    Kind {
        name: "Condition",
        make: |n| drop(shmsync::Condition::create(n).unwrap()),
        ops: |n| {
            let c = shmsync::Condition::open(n)?;
            c.notify_one();
            c.notify_all();
            c.notify(3);
            if let Ok(g) = c.try_lock_for(T) {
                any(c.wait_timeout(g, T));
            }
            any(c.lock().map(|g| c.wait_timeout(g, T).map(drop)));
            c.notify_all();
            Ok(())
        },
    },
    Kind {
        name: "Semaphore",
        make: |n| drop(shmsync::Semaphore::create(n, 2).unwrap()),
        ops: |n| {
            let s = shmsync::Semaphore::open(n)?;
            any(s.try_acquire());
            any(s.try_acquire_for(T));
            any(s.value());
            any(s.release());
            any(s.try_acquire_for(T).map(shmsync::Permit::forget));
            Ok(())
        },
    },
    Kind {
        name: "BoundedSemaphore",
        make: |n| drop(shmsync::BoundedSemaphore::create(n, 2).unwrap()),
        ops: |n| {
            let s = shmsync::BoundedSemaphore::open(n)?;
            any(s.try_acquire_for(T));
            any(s.release());
            any((s.value(), s.max_value()));
            any(s.try_acquire());
            Ok(())
        },
    },
    Kind {
        name: "Barrier",
        make: |n| drop(shmsync::Barrier::create(n, 2).unwrap()),
        ops: |n| {
            let b = shmsync::Barrier::open(n)?;
            any((b.parties(), b.n_waiting(), b.is_broken()));
            any(b.wait_timeout(T));
            b.reset();
            any(b.wait_timeout(T));
            b.abort();
            b.reset();
            Ok(())
        },
    },
    Kind {
        name: "Mutex",
        make: |n| drop(shmsync::Mutex::<[u64; 4]>::create(n, [7; 4]).unwrap()),
        ops: |n| {
            let m = shmsync::Mutex::<[u64; 4]>::open(n)?;
            if let Ok(mut g) = m.try_lock_for(T) {
                g[0] = g[0].wrapping_add(1);
            }
            any(m.lock().map(drop));
            Ok(())
        },
    },
    Kind {
        name: "RwLock",
        make: |n| {
            let l = shmsync::RwLock::<[u64; 4]>::create(n, [1; 4]).unwrap();
            drop(l.read());
            drop(l.write());
        },
        ops: |n| {
            let l = shmsync::RwLock::<[u64; 4]>::open(n)?;
            any(l.try_read_for(T).map(drop));
            any(l.try_write_for(T).map(drop));
            if let Ok(u) = l.try_upgradable_read_for(T) {
                any(shmsync::RwLockUpgradableReadGuard::try_upgrade_for(u, T).map(drop));
            }
            any(l.is_poisoned());
            l.clear_poison();
            Ok(())
        },
    },
    Kind {
        name: "Queue",
        make: |n| {
            let q = shmsync::Queue::<Vec<u8>>::create(n, 4096).unwrap();
            for i in 0..20u8 {
                q.put(&vec![i; usize::from(i) * 7]).unwrap();
            }
            for _ in 0..7 {
                q.get().unwrap();
            }
            drop(q);
        },
        ops: |n| {
            let q = shmsync::Queue::<Vec<u8>>::open(n)?;
            any((q.len(), q.is_empty(), q.capacity()));
            for _ in 0..4 {
                any(q.try_get());
                any(q.get_timeout(T));
                any(q.get_with_timeout(T, |b| b.len()));
            }
            any(q.try_put(&vec![9; 100]));
            any(q.put_timeout(&vec![9; 10], T));
            any(q.put_with_timeout(33, T, |b| b.fill(3)));
            any(q.get_timeout(T));
            Ok(())
        },
    },
    Kind {
        name: "JoinableQueue",
        make: |n| {
            let q = shmsync::JoinableQueue::<u32>::create(n, 4096).unwrap();
            for i in 0..10 {
                q.put(&i).unwrap();
            }
            q.get().unwrap();
            drop(q);
        },
        ops: |n| {
            let q = shmsync::JoinableQueue::<u32>::open(n)?;
            any(q.get_timeout(T));
            any(q.task_done());
            any(q.unfinished());
            any(q.join_timeout(T));
            any(q.put_timeout(&5, T));
            Ok(())
        },
    },
    Kind {
        name: "Dict",
        make: |n| {
            let d = shmsync::Dict::<u32, String>::create(n, 4096).unwrap();
            for i in 0..20 {
                d.insert(&i, &format!("value {i}")).unwrap();
            }
            drop(d);
        },
        ops: |n| {
            let d = shmsync::Dict::<u32, String>::open(n)?;
            any((d.len(), d.is_empty(), d.capacity()));
            any(d.get(&3));
            any(d.contains_key(&4));
            any(d.insert(&99, &"new".to_string()));
            any(d.remove(&5));
            any(d.to_map());
            any(d.clear());
            Ok(())
        },
    },
    Kind {
        name: "Namespace",
        make: |n| {
            let ns = shmsync::Namespace::create(n, 4096).unwrap();
            ns.set("x", &1u64).unwrap();
            ns.set("name", &"text".to_string()).unwrap();
            drop(ns);
        },
        ops: |n| {
            let ns = shmsync::Namespace::open(n)?;
            any(ns.get::<u64>("x"));
            any(ns.get::<String>("name"));
            any(ns.set("y", &2u32));
            any(ns.remove("x"));
            any(ns.len());
            Ok(())
        },
    },
];

/// Runs `kind`'s operations in a child on the segment `name`, scribbled on
/// with `seed` before the open or after it.
fn spawn(kind: &'static Kind, name: String, seed: u64) -> Child {
    let mut rng = Rng::new(seed);
    let before_open = rng.below(2) == 0;
    if before_open {
        scribble(&name, &mut rng);
    }
    fork(move || {
        let mut rng = rng;
        if !before_open {
            // Open first, so the checks at open pass; then the garbage.
            let _held = (kind.ops)(&name); // one clean pass
            scribble(&name, &mut rng);
        }
        any((kind.ops)(&name));
        any((kind.ops)(&name)); // and again, after whatever the first pass repaired
        0
    })
}

/// Replays one failure: `SHMSYNC_FUZZ_REPLAY=Kind:seed` (as the failure
/// printed it) runs that kind with that seed only.
fn replay() -> Option<(&'static Kind, u64)> {
    let spec = std::env::var("SHMSYNC_FUZZ_REPLAY").ok()?;
    let (name, seed) = spec.split_once(':')?;
    Some((KINDS.iter().find(|k| k.name == name)?, seed.parse().ok()?))
}

#[test]
fn garbage_in_any_kind_is_an_error_never_a_panic_a_crash_or_a_hang() {
    let _s = serial();
    let rounds: u64 = std::env::var("SHMSYNC_FUZZ_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let base: u64 = std::env::var("SHMSYNC_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    if let Some((kind, seed)) = replay() {
        let names = Names::new("fuzz-replay");
        let name = names.get("0");
        (kind.make)(&name);
        let end = spawn(kind, name.clone(), seed).wait_for(CHILD_DEADLINE);
        let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
        assert_eq!(end, End::Exited(0), "{}:{seed} failed", kind.name);
        return;
    }
    for (k, kind) in KINDS.iter().enumerate() {
        let names = Names::new(&format!("fuzz-{}", kind.name.to_lowercase()));
        for round in 0..rounds {
            let mut children = Vec::new();
            for i in 0..AT_ONCE {
                let seed = base ^ ((k as u64) << 40) ^ (round << 20) ^ i;
                let name = names.get(&format!("{round}-{i}"));
                (kind.make)(&name);
                children.push((seed, name.clone(), spawn(kind, name, seed)));
            }
            for (seed, name, mut child) in children {
                let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child.wait_for(CHILD_DEADLINE)));
                let end =
                    waited.unwrap_or_else(|_| panic!("hung: replay with SHMSYNC_FUZZ_REPLAY={}:{seed}", kind.name));
                let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
                assert_eq!(end, End::Exited(0), "failed: replay with SHMSYNC_FUZZ_REPLAY={}:{seed}", kind.name);
            }
        }
    }
}
