//! Queue and JoinableQueue across real processes: exactly-once delivery,
//! per-producer order, and processes killed inside put and get.

mod common;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{fork, serial, Child, Shared, DEADLINE};
use shmsync::{Error, JoinableQueue, Queue};

const PRODUCERS: usize = 4;
const PER_PRODUCER: u32 = 5_000;
const TOTAL: usize = PRODUCERS * PER_PRODUCER as usize;

/// A message: who sent it, its number, and a body that proves it whole.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Msg {
    producer: u32,
    seq: u32,
    body: Vec<u8>,
}

impl Msg {
    fn new(producer: u32, seq: u32) -> Msg {
        let len = (seq % 61) as usize;
        Msg { producer, seq, body: (0..len).map(|i| (i as u32 ^ seq ^ producer) as u8).collect() }
    }

    fn is_whole(&self) -> bool {
        *self == Msg::new(self.producer, self.seq)
    }
}

/// What consumers record, in shared memory.
#[repr(C)]
struct Ledger {
    seen: [AtomicU64; TOTAL.div_ceil(64)],
    received: AtomicU32,
    duplicates: AtomicU32,
    disorder: AtomicU32,
    corrupt: AtomicU32,
}

impl Ledger {
    /// Records one message; `last` is this consumer's last seq per producer.
    fn record(&self, msg: &Msg, last: &mut [Option<u32>; PRODUCERS]) {
        if !msg.is_whole() || msg.producer as usize >= PRODUCERS || msg.seq >= PER_PRODUCER {
            self.corrupt.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let p = msg.producer as usize;
        if last[p].is_some_and(|l| msg.seq <= l) {
            self.disorder.fetch_add(1, Ordering::SeqCst);
        }
        last[p] = Some(msg.seq);
        let bit = p * PER_PRODUCER as usize + msg.seq as usize;
        if self.seen[bit / 64].fetch_or(1 << (bit % 64), Ordering::SeqCst) & (1 << (bit % 64)) != 0 {
            self.duplicates.fetch_add(1, Ordering::SeqCst);
        }
        self.received.fetch_add(1, Ordering::SeqCst);
    }

    fn has(&self, producer: usize, seq: u32) -> bool {
        let bit = producer * PER_PRODUCER as usize + seq as usize;
        self.seen[bit / 64].load(Ordering::SeqCst) & (1 << (bit % 64)) != 0
    }

    fn assert_clean(&self) {
        assert_eq!(self.duplicates.load(Ordering::SeqCst), 0, "duplicated messages");
        assert_eq!(self.disorder.load(Ordering::SeqCst), 0, "reordered messages");
        assert_eq!(self.corrupt.load(Ordering::SeqCst), 0, "corrupted messages");
    }
}

fn consumer<'a>(q: &'a Queue<Option<Msg>>, ledger: &'a Ledger) -> impl FnOnce() -> i32 + 'a {
    move || {
        let mut last = [None; PRODUCERS];
        loop {
            match q.get_timeout(DEADLINE) {
                Ok(Some(Some(msg))) => ledger.record(&msg, &mut last),
                Ok(Some(None)) => return 0,
                _ => return 1,
            }
        }
    }
}

#[test]
fn four_producers_three_consumers_every_message_exactly_once_in_producer_order() {
    let _s = serial();
    let q = Queue::<Option<Msg>>::new(16 << 10).unwrap();
    let ledger = Shared::<Ledger>::new();
    let consumers: Vec<Child> = (0..3).map(|_| fork(consumer(&q, &ledger))).collect();
    let producers: Vec<Child> = (0..PRODUCERS as u32)
        .map(|p| {
            let q = &q;
            fork(move || {
                for seq in 0..PER_PRODUCER {
                    if q.put_timeout(&Some(Msg::new(p, seq)), DEADLINE).is_err() {
                        return 1;
                    }
                }
                0
            })
        })
        .collect();
    for p in producers {
        p.expect_success();
    }
    for _ in 0..3 {
        q.put_timeout(&None, DEADLINE).unwrap();
    }
    for c in consumers {
        c.expect_success();
    }
    ledger.assert_clean();
    assert_eq!(ledger.received.load(Ordering::SeqCst), TOTAL as u32);
    assert!(q.is_empty());
}

#[test]
fn a_consumer_killed_inside_get_20_times_loses_at_most_its_one_message() {
    let _s = serial();
    // Room for every message of every round, so the parent never waits.
    let q = Queue::<Option<Msg>>::new(1 << 20).unwrap();
    let ledger = Shared::<Ledger>::new();
    let mut next = 0u32;
    let mut kills = 0;
    for round in 0..20u32 {
        // Keep the queue busy so the kill lands inside a get.
        for _ in 0..200 {
            q.put_timeout(&Some(Msg::new(0, next)), DEADLINE).unwrap();
            next += 1;
        }
        // Read before the fork: a fast consumer may drain the queue before
        // this thread runs again.
        let before = ledger.received.load(Ordering::SeqCst);
        let mut victim = fork(consumer(&q, &ledger));
        let start = Instant::now();
        while ledger.received.load(Ordering::SeqCst) < before + 50 + round {
            assert!(start.elapsed() < DEADLINE, "consumer made no progress");
            std::hint::spin_loop();
        }
        victim.kill();
        kills += 1;
    }
    // Drain what is left in this process.
    let mut last = [None; PRODUCERS];
    while let Some(Some(msg)) = q.try_get().unwrap() {
        ledger.record(&msg, &mut last);
    }
    ledger.assert_clean();
    // The seen bits are the truth: a consumer killed inside `record`, after
    // setting a message's bit and before counting it, leaves the count short.
    let missing: Vec<u32> = (0..next).filter(|&s| !ledger.has(0, s)).collect();
    let lost = missing.len() as u32;
    assert!(lost <= kills, "lost {lost} messages with {kills} kills: {missing:?}");
    let seen = next - lost;
    let received = ledger.received.load(Ordering::SeqCst);
    assert!(received <= seen && seen - received <= kills, "{received} counted, {seen} seen, {kills} kills");
}

#[test]
fn producers_and_consumers_killed_at_random_under_load() {
    let _s = serial();
    let q = Queue::<Option<Msg>>::new(8 << 10).unwrap();
    let ledger = Shared::<Ledger>::new();
    #[repr(C)]
    struct Progress {
        sent: [AtomicU32; PRODUCERS],
    }
    let progress = Shared::<Progress>::new();
    let mut consumers: Vec<Child> = (0..2).map(|_| fork(consumer(&q, &ledger))).collect();
    let mut producers: Vec<Child> = (0..PRODUCERS as u32)
        .map(|p| {
            let (q, progress) = (&q, &progress);
            fork(move || {
                for seq in 0..PER_PRODUCER {
                    if q.put_timeout(&Some(Msg::new(p, seq)), DEADLINE).is_err() {
                        return 1;
                    }
                    progress.sent[p as usize].store(seq + 1, Ordering::SeqCst);
                }
                0
            })
        })
        .collect();
    // Kill one producer and one consumer mid-stream, and start a fresh consumer.
    let start = Instant::now();
    while ledger.received.load(Ordering::SeqCst) < 2_000 {
        assert!(start.elapsed() < DEADLINE);
        std::thread::sleep(Duration::from_micros(100));
    }
    producers[1].kill();
    consumers[0].kill();
    consumers.push(fork(consumer(&q, &ledger)));
    for (i, p) in producers.into_iter().enumerate() {
        if i != 1 {
            p.expect_success();
        }
    }
    for _ in 0..consumers.len() {
        q.put_timeout(&None, DEADLINE).unwrap();
    }
    let mut dead_consumer = consumers.remove(0);
    dead_consumer.kill();
    for c in consumers {
        c.expect_success();
    }
    // The pill meant for the dead consumer is still there; drain the rest.
    let mut last = [None; PRODUCERS];
    while let Ok(Some(item)) = q.try_get() {
        if let Some(msg) = item {
            ledger.record(&msg, &mut last);
        }
    }
    ledger.assert_clean();
    // Each producer's messages that arrived form a prefix of what it sent, but
    // for the one message the killed consumer may have taken.
    let mut lost = 0;
    for p in 0..PRODUCERS {
        let sent = if p == 1 {
            // The killed producer's last put may have completed or not.
            let s = progress.sent[p].load(Ordering::SeqCst);
            s + u32::from(ledger.has(p, s.min(PER_PRODUCER - 1)) && s < PER_PRODUCER)
        } else {
            PER_PRODUCER
        };
        lost += (0..sent).filter(|&s| !ledger.has(p, s)).count();
        assert!((sent..PER_PRODUCER).all(|s| !ledger.has(p, s)), "producer {p}: a message past its last put arrived");
    }
    assert!(lost <= 1, "lost {lost} messages with one consumer killed");
}

#[test]
fn a_message_larger_than_the_ring_is_too_large_at_once() {
    let _s = serial();
    let q = Queue::<Vec<u8>>::new(4096).unwrap();
    q.put_timeout(&vec![1u8; 10], DEADLINE).unwrap();
    let huge = vec![0u8; q.capacity()];
    assert!(matches!(q.put_timeout(&huge, DEADLINE), Err(Error::TooLarge { .. })));
    assert!(matches!(q.try_put(&huge), Err(Error::TooLarge { .. })));
    assert_eq!(q.len(), 1);
    assert_eq!(q.get_timeout(DEADLINE).unwrap().unwrap(), vec![1u8; 10]);
    // The largest that fits does fit, in an empty ring.
    let fits = vec![7u8; q.capacity() - 16 - 4];
    q.put_timeout(&fits, DEADLINE).unwrap();
    assert_eq!(q.get_timeout(DEADLINE).unwrap().unwrap(), fits);
}

#[test]
fn put_timeout_on_a_full_queue_is_full_at_its_deadline() {
    let _s = serial();
    let q = Queue::<u64>::new(64).unwrap();
    let mut n = 0;
    while q.try_put(&n).is_ok() {
        n += 1;
    }
    assert!(n > 0);
    assert!(matches!(q.try_put(&n), Err(Error::Full { .. })));
    let start = Instant::now();
    assert!(matches!(q.put_timeout(&n, Duration::from_millis(100)), Err(Error::Full { .. })));
    assert!(start.elapsed() >= Duration::from_millis(100), "gave up before its deadline");
    // A getter in another process makes room for a blocked putter.
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(20));
        i32::from(q.get_timeout(DEADLINE).unwrap() != Some(0))
    });
    q.put_timeout(&n, DEADLINE).unwrap();
    child.expect_success();
    let drained: Vec<u64> = std::iter::from_fn(|| q.try_get().unwrap()).collect();
    assert_eq!(drained, (1..=n).collect::<Vec<_>>());
}

#[test]
fn opening_with_another_message_type_is_incompatible() {
    let _s = serial();
    let q = Queue::<u32>::new(4096).unwrap();
    assert!(matches!(Queue::<u64>::open(q.name()), Err(Error::IncompatibleLayout { .. })));
    assert!(matches!(JoinableQueue::<u32>::open(q.name()), Err(Error::WrongKind { .. })));
    let same = Queue::<u32>::open(q.name()).unwrap();
    same.put_timeout(&5, DEADLINE).unwrap();
    assert_eq!(q.get_timeout(DEADLINE).unwrap().unwrap(), 5);
}

#[test]
fn joinable_queue_join_returns_once_every_item_is_done() {
    let _s = serial();
    let q = JoinableQueue::<u32>::new(4096).unwrap();
    for i in 0..10 {
        q.put_timeout(&i, DEADLINE).unwrap();
    }
    assert_eq!(q.unfinished(), 10);
    assert!(!q.join_timeout(Duration::from_millis(10)).unwrap());
    let workers: Vec<Child> = (0..2)
        .map(|_| {
            fork(|| {
                while let Ok(Some(_)) = q.get_timeout(Duration::from_millis(200)) {
                    std::thread::sleep(Duration::from_millis(2));
                    q.task_done().unwrap();
                }
                0
            })
        })
        .collect();
    assert!(q.join_timeout(DEADLINE).unwrap());
    assert_eq!(q.unfinished(), 0);
    for w in workers {
        w.expect_success();
    }
    assert!(matches!(q.task_done(), Err(Error::TooManyTaskDone { .. })));
    q.join().unwrap();
}

/// Where the ring's fields and bytes sit in a queue's segment file (after
/// the 128-byte header; see `data::ring`'s layout test).
mod ring_layout {
    pub const CAPACITY: u64 = super::common::OBJECT_OFFSET;
    pub const PUT_WORD: u64 = CAPACITY + 128;
    pub const GET_WORD: u64 = CAPACITY + 256;
    pub const NOT_EMPTY: u64 = CAPACITY + 320;
    pub const DATA: u64 = CAPACITY + 576;
}

/// A tiny xorshift stream: random-looking, the same on every run.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The ring trusted its offsets and capacity: a tail just past the end made
/// `try_put` write into the page after the segment. Garbage in any of the
/// ring's words now gives `Corrupt` or a value, never a crash or a hang.
#[test]
fn regression_garbage_in_the_ring_words_is_corrupt_never_a_crash_or_a_hang() {
    let _s = serial();
    let q = Queue::<Vec<u8>>::new(4096).unwrap();
    let name = q.name().to_string();
    let cap = q.capacity() as u64;
    // The reported case: a write position just past the ring's end (its
    // positions run over two laps, 0..2C), and one that claims bytes in use
    // with no message.
    common::scribble(&name, ring_layout::PUT_WORD, &(2 * cap).to_ne_bytes());
    assert!(matches!(q.try_put(&vec![1; 16]), Err(Error::Corrupt { .. })));
    assert!(!matches!(q.try_get(), Ok(Some(_))));
    common::scribble(&name, ring_layout::PUT_WORD, &cap.to_ne_bytes());
    assert!(matches!(q.try_put(&vec![1; 16]), Err(Error::Corrupt { .. })));
    // Then a storm of garbage, in a child, so a crash would show as its death.
    let mut child = fork(|| {
        let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
        let words = [ring_layout::PUT_WORD, ring_layout::GET_WORD, ring_layout::NOT_EMPTY, ring_layout::DATA];
        for round in 0..400u64 {
            let at = words[(round % 4) as usize] + if round % 4 == 3 { (noise.next() % 64) * 8 } else { 0 };
            // Small positions are more interesting than huge ones: mix both.
            let value = match round % 3 {
                0 => noise.next(),
                1 => (noise.next() % 64) << 32 | (noise.next() % (4 * cap)),
                _ => (noise.next() % 8) << 32 | ((noise.next() % (2 * cap)) & !7),
            };
            common::scribble(&name, at, &value.to_ne_bytes());
            let _ = q.try_put(&vec![round as u8; (round % 100) as usize]);
            let _ = q.try_get();
            let _ = q.get_timeout(Duration::from_millis(1));
            let _ = q.len();
            let _ = Queue::<Vec<u8>>::open(&name).map(|other| other.try_get());
        }
        0
    });
    assert_eq!(child.wait(), common::End::Exited(0));
    // A capacity changed after open is never believed by an open handle,
    // and refused by a new opener.
    common::scribble(&name, ring_layout::CAPACITY, &(1u64 << 40).to_ne_bytes());
    assert!(matches!(Queue::<Vec<u8>>::open(&name), Err(Error::Corrupt { .. })));
    assert_eq!(q.capacity() as u64, cap);
}

/// `put` woke exactly one sleeping getter; killed after waking and before
/// taking the message, it left the other getters asleep beside it, and
/// `join` hung too.
#[cfg(feature = "failpoints")]
#[test]
fn regression_a_getter_woken_and_killed_strands_no_other_getter() {
    let _s = serial();
    let q = JoinableQueue::<u32>::new(4096).unwrap();
    let first = fork(|| {
        common::die_at("queue.getter.woken");
        i32::from(q.get_timeout(DEADLINE).is_err())
    });
    common::await_futex_sleep(&[first.pid()]);
    let second = fork(|| match q.get_timeout(DEADLINE) {
        Ok(Some(7)) => i32::from(q.task_done().is_err()),
        _ => 1,
    });
    common::await_futex_sleep(&[second.pid()]);
    q.put(&7).unwrap();
    let mut first = first;
    assert_eq!(first.wait(), common::End::Signaled(nix::sys::signal::Signal::SIGKILL));
    let mut second = second;
    assert_eq!(second.wait_for(Duration::from_secs(2)), common::End::Exited(0));
    assert!(q.join_timeout(Duration::from_secs(2)).unwrap());
}

/// `try_get`, `get_timeout`, `try_put` and `put_timeout` took the ring lock
/// with no deadline: a peer stopped inside its critical section made them
/// block for as long as it stayed stopped.
#[cfg(feature = "failpoints")]
#[test]
fn regression_timed_calls_end_in_time_while_a_peer_is_stopped_holding_a_side() {
    let _s = serial();
    let q = Queue::<u32>::new(4096).unwrap();
    q.put(&1).unwrap();
    q.put(&2).unwrap();
    // One peer parks inside a get's critical section, one inside a put's.
    let getter = fork(|| {
        shmsync::__private::fail::cfg("queue.get.copied", "sleep(60000)").unwrap();
        let _ = q.get();
        0
    });
    let putter = fork(|| {
        shmsync::__private::fail::cfg("queue.put.copied", "sleep(60000)").unwrap();
        let _ = q.put(&3);
        0
    });
    common::await_true(|| common::is_futex_sleeping(getter.pid()) || in_nanosleep(getter.pid()), "the getter to park");
    common::await_true(|| in_nanosleep(putter.pid()), "the putter to park");
    let mut probe = fork(|| {
        let calls_end = q.try_get().is_ok()
            && matches!(q.get_timeout(Duration::from_millis(50)), Ok(None))
            && matches!(q.try_put(&4), Err(Error::Full { .. }))
            && matches!(q.put_timeout(&4, Duration::from_millis(50)), Err(Error::Full { .. }));
        i32::from(!calls_end)
    });
    assert_eq!(probe.wait_for(Duration::from_secs(2)), common::End::Exited(0));
    drop((getter, putter)); // killed: their locks are recovered, silently
    assert!(matches!(q.get_timeout(DEADLINE), Ok(Some(_))));
    q.put_timeout(&5, DEADLINE).unwrap();
}

/// Whether the process sleeps in `nanosleep` (a failpoint's `sleep`).
#[cfg(feature = "failpoints")]
fn in_nanosleep(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
        tasks
            .filter_map(|t| t.ok())
            .any(|t| std::fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w.contains("nanosleep")))
    })
}

/// `len()` loaded the producers' word before the consumers': a put and a
/// get in between made it wrap to about 4.29 billion.
#[test]
fn regression_len_never_exceeds_what_the_ring_can_hold_under_churn() {
    let _s = serial();
    let q = Queue::<u8>::new(4096).unwrap();
    let most = q.capacity() / 8;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let _ = q.try_put(&1);
                let _ = q.try_get();
            }
        });
        for _ in 0..200_000 {
            assert!(q.len() <= most);
        }
        stop.store(true, Ordering::Relaxed);
    });
}

/// A message whose serde impl itself puts on a queue used to panic with
/// "already borrowed" (one thread-local buffer per thread, borrowed for the
/// whole put).
#[test]
fn regression_a_serde_impl_that_uses_a_queue_does_not_panic() {
    let _s = serial();
    static SIDE: std::sync::OnceLock<Queue<u32>> = std::sync::OnceLock::new();
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Loud(u32);
    impl serde::Serialize for Loud {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            let side = SIDE.get().expect("side queue");
            side.put(&(self.0 + 1)).map_err(serde::ser::Error::custom)?;
            s.serialize_u32(self.0)
        }
    }
    // A static is never dropped, so its segment is named and removed here.
    let names = common::Names::new("reentrant");
    let side = SIDE.get_or_init(|| Queue::<u32>::create(&names.get("side"), 4096).unwrap());
    let q = Queue::<Loud>::new(4096).unwrap();
    q.put(&Loud(5)).unwrap();
    assert_eq!(q.get().unwrap(), Loud(5));
    assert_eq!(side.try_get().unwrap(), Some(6));
    shmsync::unlink(side.name()).unwrap();
}

/// Getters killed while asleep left counts that made every later put pay a
/// `FUTEX_WAKE`.
#[test]
fn regression_getters_killed_asleep_cost_later_puts_no_syscall() {
    let _s = serial();
    let q = Queue::<u32>::new(4096).unwrap();
    let victims: Vec<Child> = (0..3).map(|_| fork(|| i32::from(q.get_timeout(DEADLINE).is_err()))).collect();
    common::await_futex_sleep(&victims.iter().map(Child::pid).collect::<Vec<_>>());
    common::kill_all(victims);
    assert!(common::futex_wakes_in_child(|| q.put(&1).unwrap()) <= 1);
    assert_eq!(
        common::futex_wakes_in_child(|| (0..50).for_each(|i| {
            q.put(&i).unwrap();
            q.get().unwrap();
        })),
        0
    );
}

#[test]
fn put_with_and_get_with_carry_bytes_in_place_and_mix_with_put_and_get() {
    let _s = serial();
    let q = Queue::<Vec<u8>>::new(4096).unwrap();
    q.put_with(5, |buf| buf.copy_from_slice(b"hello")).unwrap();
    q.put(&b"world".to_vec()).unwrap();
    assert_eq!(q.get().unwrap(), b"hello");
    assert_eq!(q.get_with(|b| b.to_vec()).unwrap(), b"world");
    assert_eq!(q.get_with_timeout(Duration::from_millis(5), |b| b.len()).unwrap(), None);
    // Every size through every position of the ring, including the ends.
    for round in 0..3000usize {
        let len = round % 700;
        q.put_with(len, |buf| buf.iter_mut().enumerate().for_each(|(i, b)| *b = (i ^ round) as u8)).unwrap();
        let ok = q.get_with(|b| b.len() == len && b.iter().enumerate().all(|(i, &v)| v == (i ^ round) as u8));
        assert!(ok.unwrap(), "round {round}");
    }
    assert!(matches!(q.put_with(q.capacity(), |_| ()), Err(Error::TooLarge { .. })));
}

/// A writer killed inside `put_with` commits nothing; a reader killed
/// inside `get_with` loses that one message, which is never delivered again.
#[test]
fn a_process_killed_inside_put_with_or_get_with_affects_only_its_message() {
    let _s = serial();
    let q = Queue::<Vec<u8>>::new(4096).unwrap();
    let kill_self = || {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    };
    let mut writer = fork(|| {
        let _ = q.put_with(8, |buf| {
            buf.fill(1);
            kill_self();
        });
        0
    });
    assert_eq!(writer.wait(), common::End::Signaled(nix::sys::signal::Signal::SIGKILL));
    assert!(q.is_empty());
    q.put(&vec![1]).unwrap();
    q.put(&vec![2]).unwrap();
    let mut reader = fork(|| {
        let _ = q.get_with(|_| kill_self());
        0
    });
    assert_eq!(reader.wait(), common::End::Signaled(nix::sys::signal::Signal::SIGKILL));
    assert_eq!(q.get_timeout(DEADLINE).unwrap(), Some(vec![2]));
    assert!(q.is_empty());
}

#[test]
fn regression_a_get_with_closure_that_panics_releases_the_lock_and_loses_only_its_message() {
    let _s = serial();
    let q = Queue::<Vec<u8>>::new(4096).unwrap();
    for i in 0..3u8 {
        q.put(&vec![i; 8]).unwrap();
    }
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        q.get_with(|_| -> usize { panic!("the reader panics") })
    }));
    assert!(panicked.is_err());
    // The lock is free again, from this thread and from another process;
    // the message the closure saw is gone, the others are there, in order.
    assert_eq!(q.len(), 2);
    let q2 = &q;
    fork(move || i32::from(q2.get_timeout(DEADLINE).unwrap() != Some(vec![1; 8]))).expect_success();
    assert_eq!(q.get_timeout(DEADLINE).unwrap(), Some(vec![2; 8]));
    q.put_with(4, |b| b.fill(9)).unwrap();
    assert_eq!(q.get_with_timeout(DEADLINE, |b| b.to_vec()).unwrap(), Some(vec![9; 4]));
}
