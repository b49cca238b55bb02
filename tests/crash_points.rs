//! The crash-point suite: a process is SIGKILLed at each named step between
//! a shared state change and the wake or commit that follows it, and every
//! survivor must go on within 2 s, with the object still working.
//!
//! Run with `cargo test --features failpoints`. Without the feature only the
//! bookkeeping test runs (every point is declared, marked and tested).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

/// The string literals that follow `marker` in the Rust files under `dir`.
fn literals_after(dir: &Path, marker: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read source dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                for piece in text.split(marker).skip(1) {
                    if let Some(name) = piece.split('"').next() {
                        found.insert(name.to_string());
                    }
                }
            }
        }
    }
    found
}

/// Every declared point is marked in the source, every mark is declared,
/// and every point has a test that kills a process at it.
#[test]
fn every_crash_point_is_declared_marked_and_tested() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let declared: BTreeSet<String> = common::crash_points().into_iter().map(String::from).collect();
    let marked = literals_after(&root.join("src"), "crash_point!(\"");
    let tested = literals_after(&root.join("tests"), "die_at(\"");
    assert_eq!(declared.len(), common::crash_points().len(), "a crash point is declared twice");
    let undeclared: Vec<_> = marked.difference(&declared).collect();
    assert!(undeclared.is_empty(), "marked in src but not declared in a CRASH_POINTS list: {undeclared:?}");
    let unmarked: Vec<_> = declared.difference(&marked).collect();
    assert!(unmarked.is_empty(), "declared but never marked in src: {unmarked:?}");
    let untested: Vec<_> = declared.difference(&tested).collect();
    assert!(untested.is_empty(), "no test kills a process at: {untested:?}");
}

/// What a survivor is given to go on: the crash rules' bound.
#[cfg(feature = "failpoints")]
const SURVIVOR_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

#[cfg(feature = "failpoints")]
mod segment {
    use super::*;
    use common::End;
    use nix::sys::signal::Signal;
    use shmsync::{Error, Lock};

    #[test]
    fn a_creator_killed_after_claiming_the_header_is_named_and_the_name_reusable() {
        let _s = common::serial();
        let names = common::Names::new("seg_claimed");
        let name = names.get("lock");
        let mut child = common::fork(|| {
            common::die_at("segment.create.claimed");
            let _ = Lock::create(&name);
            1
        });
        assert_eq!(child.wait(), End::Signaled(Signal::SIGKILL));
        // The opener names the dead creator at once instead of waiting out
        // a long open timeout.
        match Lock::builder(&name).open_timeout(SURVIVOR_BOUND * 10).open() {
            Err(Error::InitTimeout { creator_pid: Some(pid), creator_alive: false, .. }) => {
                assert_eq!(pid, child.pid())
            }
            other => panic!("expected InitTimeout naming the dead creator, got {other:?}"),
        }
        shmsync::unlink(&name).unwrap();
        let lock = Lock::create(&name).unwrap();
        drop(lock.lock().unwrap());
        shmsync::unlink(&name).unwrap();
    }
}
