//! Dict and Namespace across real processes: exact totals under concurrent
//! inserts, `Full` that changes nothing, writers killed inside a mutation,
//! type checks on open, and Namespace fields published behind an Event.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{await_value, fork, serial, Child, Names, Shared, DEADLINE};
use shmsync::{Dict, Error, Event, Namespace};

const PROCESSES: u32 = 10;
const PER_PROCESS: u32 = 50;

fn value_of(key: u32) -> String {
    format!("value-{key}-{}", "x".repeat((key % 17) as usize))
}

#[test]
fn ten_processes_insert_disjoint_keys_and_the_total_is_exact() {
    let _s = serial();
    let names = Names::new("disjoint");
    let name = names.get("dict");
    let d = Dict::<u32, String>::builder(&name).capacity(64 << 10).unlink_on_drop(true).create().unwrap();
    let children: Vec<Child> = (0..PROCESSES)
        .map(|p| {
            let name = &name;
            fork(move || {
                // Each child opens the dict by name, as an unrelated process would.
                let Ok(d) = Dict::<u32, String>::open_or_create(name, 64 << 10) else { return 2 };
                for k in 0..PER_PROCESS {
                    let key = p * 1000 + k;
                    if !matches!(d.insert(&key, &value_of(key)), Ok(None)) {
                        return 1;
                    }
                }
                0
            })
        })
        .collect();
    for c in children {
        c.expect_success();
    }
    let expected: BTreeMap<u32, String> =
        (0..PROCESSES).flat_map(|p| (0..PER_PROCESS).map(move |k| p * 1000 + k)).map(|k| (k, value_of(k))).collect();
    assert_eq!(d.len(), (PROCESSES * PER_PROCESS) as usize);
    assert_eq!(d.to_map().unwrap(), expected);
    assert_eq!(d.get(&3007).unwrap(), Some(value_of(3007)));
    assert!(d.contains_key(&9049).unwrap());
    assert!(!d.contains_key(&9050).unwrap());
    d.clear().unwrap();
    assert!(d.is_empty());
    assert!(d.to_map().unwrap().is_empty());
}

#[test]
fn full_leaves_the_dict_unchanged_including_the_old_value_of_the_key() {
    let _s = serial();
    let d = Dict::<u32, Vec<u8>>::new(256).unwrap();
    d.insert(&0, &vec![7u8; 10]).unwrap();
    let mut next = 1;
    let full = loop {
        match d.insert(&next, &vec![next as u8; 100]) {
            Ok(None) => next += 1,
            other => break other,
        }
        assert!(next < 10_000, "never became full");
    };
    assert!(matches!(full, Err(Error::Full { .. })), "{full:?}");
    assert!(!d.contains_key(&next).unwrap(), "a key that did not fit was stored");
    let before = d.to_map().unwrap();
    assert_eq!(d.len(), before.len());

    // A new value too big for an existing key: the old value stays.
    assert!(matches!(d.insert(&0, &vec![0u8; d.capacity()]), Err(Error::Full { .. })));
    assert_eq!(d.get(&0).unwrap(), Some(vec![7u8; 10]));
    assert_eq!(d.to_map().unwrap(), before);

    // Another process sees the same, unchanged map, and hits the same wall.
    let child = fork(|| {
        let same = d.to_map().is_ok_and(|m| m == before);
        let still_full = matches!(d.insert(&next, &vec![0u8; 100]), Err(Error::Full { .. }));
        i32::from(!(same && still_full))
    });
    child.expect_success();

    // Room made by a remove is usable again.
    assert_eq!(d.remove(&1).unwrap(), Some(vec![1u8; 100]));
    assert_eq!(d.insert(&next, &vec![0u8; 100]).unwrap(), None);
    assert_eq!(d.len(), before.len());
}

/// The writer's `i`-th operation: insert or remove one of 40 keys.
fn op(i: u32) -> (u32, Option<String>) {
    let key = i.wrapping_mul(7) % 40;
    if i % 3 == 2 {
        (key, None)
    } else {
        (key, Some(format!("{i}:{}", "v".repeat((i % 53) as usize))))
    }
}

fn apply(model: &mut BTreeMap<u32, String>, i: u32) {
    match op(i) {
        (key, Some(value)) => model.insert(key, value),
        (key, None) => model.remove(&key),
    };
}

/// A small xorshift, seeded from the clock, for kill times.
fn random_below(state: &mut u64, bound: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % bound
}

#[test]
fn a_writer_killed_inside_mutations_10_times_leaves_a_whole_map() {
    let _s = serial();
    let d = Dict::<u32, String>::new(16 << 10).unwrap();
    #[repr(C)]
    struct Progress {
        /// Operations the writer has completed (the next one's index).
        done: AtomicU32,
        /// From the checker: 1 + the number of operations the map reflects.
        matched: AtomicU32,
        /// From the checker: 1 if `len()` disagreed with `to_map()`.
        len_mismatch: AtomicU32,
    }
    let progress = Shared::<Progress>::new();
    let mut seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |t| t.as_nanos() as u64) | 1;
    let mut model = BTreeMap::new();
    let mut start = 0u32;
    for round in 0..10 {
        progress.done.store(start, Ordering::SeqCst);
        let (d_ref, progress_ref) = (&d, &progress);
        let mut writer = fork(move || {
            let mut i = start;
            loop {
                let ok = match op(i) {
                    (key, Some(value)) => d_ref.insert(&key, &value).is_ok(),
                    (key, None) => d_ref.remove(&key).is_ok(),
                };
                if !ok {
                    return 1;
                }
                i += 1;
                progress_ref.done.store(i, Ordering::SeqCst);
            }
        });
        // Let it run, then kill it at a random moment: nearly all of its time
        // is spent holding the lock, decoding and encoding the map.
        await_value(&progress.done, start + 20, "the writer to get going");
        std::thread::sleep(Duration::from_micros(random_below(&mut seed, 3_000)));
        writer.kill();
        let done = progress.done.load(Ordering::SeqCst);

        // The map must be the state after `done` operations, or after the one
        // in flight too.
        let mut after_done = model.clone();
        (start..done).for_each(|i| apply(&mut after_done, i));
        let mut after_next = after_done.clone();
        apply(&mut after_next, done);

        // Check in a child, so a lock that was never recovered fails the test
        // at the deadline instead of hanging it.
        progress.matched.store(0, Ordering::SeqCst);
        let (d_ref, progress_ref, a, b) = (&d, &progress, &after_done, &after_next);
        let mut checker = fork(move || {
            let Ok(map) = d_ref.to_map() else { return 1 };
            if d_ref.len() != map.len() {
                progress_ref.len_mismatch.store(1, Ordering::SeqCst);
            }
            let matched = if map == *a {
                done + 1
            } else if map == *b {
                done + 2
            } else {
                0
            };
            progress_ref.matched.store(matched, Ordering::SeqCst);
            0
        });
        assert_eq!(checker.wait_for(DEADLINE), common::End::Exited(0), "round {round}: the dict was not readable");
        assert_eq!(progress.len_mismatch.load(Ordering::SeqCst), 0, "round {round}: len() disagreed with to_map()");
        let matched = progress.matched.load(Ordering::SeqCst);
        assert!(matched != 0, "round {round}: the map is no state the writer could have produced (done = {done})");
        start = matched - 1;
        model = if start == done { after_done } else { after_next };
    }
    // Still fully usable here, after ten deaths.
    assert_eq!(d.to_map().unwrap(), model);
    assert_eq!(d.len(), model.len());
    d.insert(&1000, &"after".to_string()).unwrap();
    assert_eq!(d.get(&1000).unwrap().as_deref(), Some("after"));
}

#[test]
fn opening_with_other_key_or_value_types_is_incompatible() {
    let _s = serial();
    let d = Dict::<u32, String>::new(4096).unwrap();
    assert!(matches!(Dict::<u32, u64>::open(d.name()), Err(Error::IncompatibleLayout { .. })));
    assert!(matches!(Dict::<String, String>::open(d.name()), Err(Error::IncompatibleLayout { .. })));
    assert!(matches!(Dict::<String, u32>::open(d.name()), Err(Error::IncompatibleLayout { .. })));
    assert!(matches!(Namespace::open(d.name()), Err(Error::WrongKind { .. })));
    let same = Dict::<u32, String>::open(d.name()).unwrap();
    same.insert(&5, &"five".to_string()).unwrap();
    assert_eq!(d.get(&5).unwrap().as_deref(), Some("five"));
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct Config {
    workers: u32,
    label: String,
    ratios: Vec<f64>,
}

#[test]
fn namespace_fields_cross_processes_behind_an_event() {
    let _s = serial();
    let names = Names::new("namespace");
    let ns = Namespace::builder(&names.get("ns")).capacity(4096).unlink_on_drop(true).create().unwrap();
    let published = Event::new().unwrap();
    let config = Config { workers: 8, label: "nightly".to_string(), ratios: vec![0.5, 0.25] };

    let child = {
        let (name, published, config) = (ns.name().to_string(), &published, &config);
        fork(move || {
            let Ok(ns) = Namespace::open(&name) else { return 2 };
            let ok = ns.set("answer", &42u64).is_ok() && ns.set("config", config).is_ok();
            published.set();
            i32::from(!ok)
        })
    };
    assert!(published.wait_timeout(DEADLINE), "the child never published");
    assert_eq!(ns.get::<u64>("answer").unwrap(), Some(42));
    assert_eq!(ns.get::<Config>("config").unwrap(), Some(config.clone()));
    assert_eq!(ns.get::<u64>("missing").unwrap(), None);
    assert_eq!(ns.len(), 2);
    child.expect_success();

    // A value of another type is Decode, whichever types are involved.
    assert!(matches!(ns.get::<String>("answer"), Err(Error::Decode { .. })));
    assert!(matches!(ns.get::<u32>("answer"), Err(Error::Decode { .. })));
    assert!(matches!(ns.get::<i64>("answer"), Err(Error::Decode { .. })));
    assert!(matches!(ns.get::<u64>("config"), Err(Error::Decode { .. })));

    // Changing a copy changes nothing until it is set again, and then a
    // child sees it; a field may change type.
    let mut copy = ns.get::<Config>("config").unwrap().unwrap();
    copy.workers = 16;
    assert_eq!(ns.get::<Config>("config").unwrap().unwrap().workers, 8);
    ns.set("config", &copy).unwrap();
    ns.set("answer", &"forty-two".to_string()).unwrap();
    let reader = fork(|| {
        let workers = ns.get::<Config>("config").ok().flatten().map(|c| c.workers);
        let answer = ns.get::<String>("answer").ok().flatten();
        i32::from(!(workers == Some(16) && answer.as_deref() == Some("forty-two")))
    });
    reader.expect_success();

    assert!(ns.remove("answer").unwrap());
    assert!(!ns.remove("answer").unwrap());
    assert_eq!(ns.get::<String>("answer").unwrap(), None);
    assert_eq!(ns.len(), 1);
    assert!(matches!(ns.set("big", &vec![0u8; 8192]), Err(Error::Full { .. })));
    assert_eq!(ns.len(), 1);
}

/// Counts the calling thread's heap allocations, so tests can show what a
/// call allocates.
struct Counting;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the count
// is a thread-local Cell, which never allocates.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded from the caller.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(|n| n.get());
    f();
    ALLOCATIONS.with(|n| n.get()) - before
}

/// `get` decoded the whole map under the lock, with two allocations per
/// entry; it now finds the key in the encoded bytes.
#[test]
fn regression_get_finds_a_key_without_decoding_the_map() {
    let _s = serial();
    let d = Dict::<u32, String>::new(64 << 10).unwrap();
    for k in 0..1500 {
        d.insert(&k, &value_of(k)).unwrap();
    }
    let mut got = None;
    let allocations = allocations_in(|| got = Some(d.get(&1234).unwrap()));
    assert_eq!(got, Some(Some(value_of(1234))));
    assert!(allocations <= 4, "get allocated {allocations} times");
    assert!(allocations_in(|| assert!(d.contains_key(&77).unwrap())) <= 3);
    assert_eq!(d.get(&5000).unwrap(), None);
}

/// `insert` decoded the old value after the commit, so a value that does
/// not decode gave `Err` for a change that had been applied.
#[test]
fn regression_an_old_value_that_does_not_decode_fails_the_insert_before_any_change() {
    let _s = serial();
    let d = Dict::<u32, String>::new(4096).unwrap();
    d.insert(&1, &"ok".to_string()).unwrap();
    // Make the stored value invalid UTF-8, as a buggy peer could.
    let path = format!("/dev/shm/{}", d.name());
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(2).position(|w| w == b"ok").unwrap();
    bytes[at] = 0xff;
    bytes[at + 1] = 0xfe;
    common::scribble(d.name(), at as u64, &bytes[at..at + 2]);
    assert!(matches!(d.insert(&1, &"new".to_string()), Err(Error::Decode { .. })));
    assert!(matches!(d.get(&1), Err(Error::Decode { .. })), "the failed insert changed the value");
    assert!(matches!(d.remove(&1), Err(Error::Decode { .. })));
    assert_eq!(d.len(), 1);
}
