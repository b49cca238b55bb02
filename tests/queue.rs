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
