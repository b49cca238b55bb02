//! The inspector as a library (no `cli` feature): `shmsync::inspect` reads
//! another process's object, and `shmsync::gc` from code collects the
//! `K::new()` objects of a SIGKILLed creator, the leak it exists to stop.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{await_value, fork, serial, Names, Shared};
use shmsync::inspect::{Action, Detail, GcOptions, Status};

#[test]
fn inspect_reads_another_processes_queue_without_touching_it() {
    let _s = serial();
    let names = Names::new("inspect-queue");
    let name = names.get("q");
    let queue = shmsync::Queue::<String>::create(&name, 4096).unwrap();
    fork(|| {
        for word in ["one", "two", "three"] {
            queue.put(&word.to_string()).unwrap();
        }
        0
    })
    .expect_success();
    let before = std::fs::read(format!("/dev/shm/{name}")).unwrap();
    let info = shmsync::inspect(&name).unwrap();
    assert_eq!((info.status, info.kind, info.state), (Status::Ok, Some("Queue"), "nonempty"));
    match info.detail {
        // Each record: an 8-byte header, then the payload (one length byte
        // and the text) padded to 8.
        Some(Detail::Queue { messages: 3, bytes_used: 48, unfinished: None, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(format!("/dev/shm/{name}")).unwrap(), before);
    assert!(matches!(shmsync::inspect(&names.get("missing")), Err(shmsync::Error::NotFound { .. })));
    assert!(matches!(shmsync::inspect("a/b"), Err(shmsync::Error::InvalidName { .. })));
    shmsync::unlink(&name).unwrap();
}

#[test]
fn gc_from_code_collects_the_new_objects_of_a_killed_creator() {
    let _s = serial();
    let ready = Shared::<AtomicU32>::new();
    let mut creator = fork(|| {
        let _a = shmsync::Event::new().unwrap();
        let _b = shmsync::Semaphore::new(1).unwrap();
        ready.store(1, Ordering::Release);
        std::thread::sleep(Duration::from_secs(60));
        0
    });
    await_value(&ready, 1, "the creator");
    let prefix = format!("shmsync.{}.", creator.pid());
    // While the creator lives, nothing is debris.
    let report = shmsync::gc(&GcOptions::new().prefix(&prefix).ephemeral_only(true)).unwrap();
    assert_eq!((report.with(Action::Kept).count(), report.with(Action::Removed).count()), (2, 0));
    creator.kill();
    let report = shmsync::gc(&GcOptions::new().prefix(&prefix).ephemeral_only(true)).unwrap();
    assert_eq!(report.with(Action::Removed).count(), 2, "{report:#?}");
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn inspect_reads_an_rwlocks_readers_writer_and_dead_writer() {
    let _s = serial();
    let names = Names::new("inspect-rwlock");
    let name = names.get("rw");
    let lock = shmsync::RwLock::<[u64; 3]>::create(&name, [0; 3]).unwrap();
    let look = || {
        let info = shmsync::inspect(&name).unwrap();
        assert_eq!((info.status, info.kind), (Status::Ok, Some("RwLock")));
        (info.state, info.detail.unwrap())
    };
    match look() {
        (
            "free",
            Detail::RwLock {
                readers: 0,
                holder_tid: None,
                writing: false,
                poisoned: false,
                value_size: 64,
                value_align: 64,
                ..
            },
        ) => {}
        other => panic!("{other:?}"),
    }
    {
        let _a = lock.read().unwrap();
        let _b = lock.read().unwrap();
        assert!(matches!(look(), ("read-locked", Detail::RwLock { readers: 2, holder_tid: None, .. })));
    }
    {
        let _w = lock.write().unwrap();
        match look() {
            ("write-locked", Detail::RwLock { holder_pid: Some(pid), holder_alive: Some(true), writing: true, .. }) => {
                assert_eq!(pid, std::process::id())
            }
            other => panic!("{other:?}"),
        }
    }
    // A child that dies holding the write lock: the holder is dead, and the
    // inspector says so without recovering anything.
    fork(|| {
        std::mem::forget(lock.write().unwrap());
        0
    })
    .expect_success();
    match look() {
        ("owner-dead", Detail::RwLock { holder_alive: Some(false), holder_pid: None, writing: true, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(lock.write().is_err(), "the next writer recovers the lock, poisoned");
    assert!(matches!(look(), ("poisoned", Detail::RwLock { poisoned: true, .. })));
    shmsync::unlink(&name).unwrap();
}
