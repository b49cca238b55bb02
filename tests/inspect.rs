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
