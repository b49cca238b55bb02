//! `shmsync gc`, run for real: after a creator is SIGKILLed, it removes
//! exactly the objects that no live process maps (or holds open), keeps the
//! others with their reason, and a dry run changes nothing.
//!
//! Other engineers' tests share this machine's /dev/shm, so runs here are
//! restricted to this test's own names with `--prefix`; the unrestricted
//! command runs in a private mount namespace with a /dev/shm of its own.
//! Needs `--features cli` (the test target requires it).

mod cli_support;
mod common;

use std::any::Any;
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cli_support::{bytes, json, names_with, run};
use common::{await_value, fork, serial, Names, Shared};
use serde_json::Value;
use shmsync::{Event, Lock, Queue, Semaphore};

const LONG: Duration = Duration::from_secs(60);

type Handle = Box<dyn Any + Send>;

/// Opens the object `name` by the kind the inspector reads in it.
fn open_any(name: &str) -> Handle {
    let kind = shmsync::inspect(name).unwrap().kind.unwrap();
    match kind {
        "Lock" => Box::new(Lock::open(name).unwrap()),
        "Event" => Box::new(Event::open(name).unwrap()),
        "Semaphore" => Box::new(Semaphore::open(name).unwrap()),
        "Queue" => Box::new(Queue::<u32>::open(name).unwrap()),
        other => panic!("unexpected kind {other}"),
    }
}

/// `n` objects made by `K::new()`, of three kinds.
fn new_objects(n: usize) -> Vec<Handle> {
    (0..n)
        .map(|i| -> Handle {
            match i % 3 {
                0 => Box::new(Lock::new().unwrap()),
                1 => Box::new(Event::new().unwrap()),
                _ => Box::new(Semaphore::new(2).unwrap()),
            }
        })
        .collect()
}

/// A child that opens `names`, says so, and keeps them mapped until killed.
fn mapper(names: Vec<String>) -> common::Child {
    let ready = Shared::<AtomicU32>::new();
    let child = fork(|| {
        let _held: Vec<Handle> = names.iter().map(|n| open_any(n)).collect();
        ready.store(1, Ordering::Release);
        std::thread::sleep(LONG);
        0
    });
    await_value(&ready, 1, "the mapper to open its objects");
    child
}

/// The names of a gc document's decisions with action `action`.
fn decided(doc: &Value, action: &str) -> BTreeSet<String> {
    doc["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["action"] == action)
        .map(|d| d["object"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn reason<'a>(doc: &'a Value, name: &str) -> &'a str {
    let d = doc["decisions"].as_array().unwrap().iter().find(|d| d["object"]["name"] == name).unwrap();
    d["reason"].as_str().unwrap()
}

fn set(names: &[String]) -> BTreeSet<String> {
    names.iter().cloned().collect()
}

#[test]
fn gc_after_a_sigkill_removes_exactly_what_no_live_process_maps_and_a_dry_run_changes_nothing() {
    let _s = serial();
    let names = Names::new("cli-gc");
    let named = vec![names.get("lock"), names.get("event"), names.get("queue")];
    let ready = Shared::<AtomicU32>::new();
    let mut creator = fork(|| {
        let mut held = new_objects(10);
        held.push(Box::new(Lock::create(&named[0]).unwrap()));
        held.push(Box::new(Event::create(&named[1]).unwrap()));
        held.push(Box::new(Queue::<u32>::create(&named[2], 1024).unwrap()));
        ready.store(1, Ordering::Release);
        std::thread::sleep(LONG);
        drop(held);
        0
    });
    await_value(&ready, 1, "the creator to make its objects");
    let new_prefix = format!("shmsync.{}.", creator.pid());
    let made = names_with(&new_prefix);
    assert_eq!(made.len(), 10, "{made:?}");
    // A live process maps two new() objects and one named one.
    let mapped = vec![made[0].clone(), made[1].clone(), named[2].clone()];
    let mut live = mapper(mapped.clone());
    creator.kill();

    let ours: Vec<String> = made.iter().chain(&named).cloned().collect();
    let unmapped: BTreeSet<String> = set(&ours).difference(&set(&mapped)).cloned().collect();
    assert_eq!(unmapped.len(), 10);
    let scope = ["--prefix", new_prefix.as_str(), "--prefix", &names.get("")];
    let gc = |extra: &[&str]| json(&[&["gc", "--json"][..], extra, &scope].concat());

    // A dry run: the same decisions, and not a name nor a byte changes.
    let before: Vec<(String, Vec<u8>)> = ours.iter().map(|n| (n.clone(), bytes(n))).collect();
    let dry = gc(&["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(decided(&dry, "would-remove"), unmapped);
    assert_eq!(decided(&dry, "kept"), set(&mapped));
    assert!(decided(&dry, "removed").is_empty());
    let after: Vec<(String, Vec<u8>)> = ours.iter().map(|n| (n.clone(), bytes(n))).collect();
    assert!(before == after, "a dry run changed a byte");
    assert_eq!(names_with(&new_prefix).len() + names_with(&names.get("")).len(), 13);
    let text = run(&[&["gc", "--dry-run"][..], &scope].concat());
    assert_eq!(text.stdout.lines().filter(|l| l.starts_with("would remove")).count(), 10, "{}", text.stdout);
    assert!(text.stdout.contains("nothing was changed"), "{}", text.stdout);

    // For real: exactly the unmapped ten go, each with its reason.
    let done = gc(&[]);
    assert_eq!(decided(&done, "removed"), unmapped);
    assert_eq!(decided(&done, "kept"), set(&mapped));
    for name in &unmapped {
        let why = reason(&done, name);
        assert!(
            why.contains(&format!("pid {}, is dead", creator.pid())) && why.contains("no process maps it"),
            "{why}"
        );
    }
    for name in &mapped {
        let why = reason(&done, name);
        assert!(why.contains(&format!("pid {} maps it", live.pid())), "{why}");
    }
    assert!(reason(&done, &made[2]).starts_with("a K::new() object"));
    assert!(reason(&done, &named[0]).starts_with("a named object"));
    let left: BTreeSet<String> = names_with(&new_prefix).into_iter().chain(names_with(&names.get(""))).collect();
    assert_eq!(left, set(&mapped), "an object a live process maps survives its dead creator");
    let row = &cli_support::rows(&run(&["ls"]).stdout)[&named[2]];
    assert_eq!((row[5].clone(), row[6].clone()), (format!("{}/dead", creator.pid()), live.pid().to_string()));

    // Once the mapper is gone too, the rest goes.
    live.kill();
    let text = run(&[&["gc"][..], &scope].concat());
    assert_eq!(text.code, 0);
    assert_eq!(text.stdout.lines().filter(|l| l.starts_with("removed")).count(), 3, "{}", text.stdout);
    assert!(names_with(&new_prefix).is_empty() && names_with(&names.get("")).is_empty());
}

#[test]
fn gc_keeps_an_object_a_live_process_holds_open_without_mapping() {
    let _s = serial();
    let names = Names::new("cli-gc-open");
    let name = names.get("event");
    // Its creator ends (normally), leaving the named object behind.
    fork(|| Event::create(&name).map(|_| 0).unwrap_or(1)).expect_success();
    let ready = Shared::<AtomicU32>::new();
    let mut holder = fork(|| {
        // Open, never mapped: /proc/*/maps does not show it; the kernel knows.
        let _file = std::fs::File::open(format!("/dev/shm/{name}")).unwrap();
        ready.store(1, Ordering::Release);
        std::thread::sleep(LONG);
        0
    });
    await_value(&ready, 1, "the holder to open the file");
    let info = shmsync::inspect(&name).unwrap();
    assert!(info.mapped_by.is_empty() && info.orphan, "{info:?}");
    let doc = json(&["gc", "--json", "--prefix", &name]);
    assert_eq!(decided(&doc, "kept"), set(std::slice::from_ref(&name)));
    assert!(reason(&doc, &name).contains("the kernel says a process has it open"), "{doc:#}");
    assert!(std::path::Path::new(&format!("/dev/shm/{name}")).exists());
    holder.kill();
    let doc = json(&["gc", "--json", "--prefix", &name]);
    assert_eq!(decided(&doc, "removed"), set(std::slice::from_ref(&name)));
}

/// A temporary file as a creator leaves it when killed after claiming the
/// header: state INITIALISING, its pid, no magic yet.
fn claimed_temp(pid: u32) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[48..52].copy_from_slice(&1u32.to_ne_bytes());
    b[52..56].copy_from_slice(&pid.to_ne_bytes());
    b
}

#[test]
fn unrestricted_gc_in_a_private_dev_shm() {
    let _s = serial();
    // In a child with its own mount namespace and an empty /dev/shm, the
    // command runs without --prefix: nothing outside this test is in reach.
    let mut child = fork(|| {
        use nix::mount::{mount, MsFlags};
        if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_err()
            || mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).is_err()
            || mount(Some("tmpfs"), "/dev/shm", Some("tmpfs"), MsFlags::empty(), Some("size=4m")).is_err()
        {
            return 2; // not permitted here
        }
        private_dev_shm_scenario();
        0
    });
    match child.wait() {
        common::End::Exited(0) => {}
        common::End::Exited(2) => eprintln!("skipped: cannot make a mount namespace here (needs root)"),
        other => panic!("the private /dev/shm scenario failed: {other:?}"),
    }
}

/// Runs in the private /dev/shm; panics (exit 101) on a failed check.
fn private_dev_shm_scenario() {
    let ready = Shared::<AtomicU32>::new();
    let mut creator = fork(|| {
        let mut held = new_objects(3);
        held.push(Box::new(Lock::create("jobs").unwrap()));
        held.push(Box::new(Semaphore::create("slots", 4).unwrap()));
        ready.store(1, Ordering::Release);
        std::thread::sleep(LONG);
        drop(held);
        0
    });
    await_value(&ready, 1, "the creator");
    let made = names_with(&format!("shmsync.{}.", creator.pid()));
    assert_eq!(made.len(), 3);
    let mut live = mapper(vec![made[0].clone()]);
    creator.kill();
    let dead = creator.pid();
    let me = std::process::id();
    let write = |name: &str, content: &[u8]| {
        std::fs::File::create(format!("/dev/shm/{name}")).unwrap().write_all(content).unwrap();
    };
    // A create killed after claiming its temporary file, one still going on
    // (this process, alive), and a file that is not ours.
    write(&format!(".shmsync-init.{dead}.0"), &claimed_temp(dead));
    write(&format!(".shmsync-init.{me}.7"), &[0u8; 4096]);
    write("not-ours", b"someone else's bytes");

    let listing = json(&["ls", "--json"]);
    assert_eq!(listing["other_files"], serde_json::json!(["not-ours"]));
    let abandoned = cli_support::object(&listing, &format!(".shmsync-init.{dead}.0"));
    assert_eq!((abandoned["status"].as_str(), abandoned["orphan"].as_bool()), (Some("abandoned"), Some(true)));
    assert_eq!(cli_support::object(&listing, &format!(".shmsync-init.{me}.7"))["status"], "initialising");

    // --ephemeral-only: the new() objects nobody maps and the dead create.
    let first = json(&["gc", "--json", "--ephemeral-only"]);
    let expected: BTreeSet<String> = [made[1].clone(), made[2].clone(), format!(".shmsync-init.{dead}.0")].into();
    assert_eq!(decided(&first, "removed"), expected, "{first:#}");
    let kept: BTreeSet<String> =
        [made[0].clone(), "jobs".into(), "slots".into(), format!(".shmsync-init.{me}.7")].into();
    assert_eq!(decided(&first, "kept"), kept);
    assert!(reason(&first, "jobs").contains("a named object"));
    assert!(reason(&first, &format!(".shmsync-init.{me}.7")).contains("is alive"));
    // The whole command: now the named objects of the dead creator too.
    let second = json(&["gc", "--json"]);
    assert_eq!(decided(&second, "removed"), ["jobs".to_string(), "slots".to_string()].into());
    let mut left = names_with("");
    left.sort();
    let mut want = vec![made[0].clone(), format!(".shmsync-init.{me}.7"), "not-ours".to_string()];
    want.sort();
    assert_eq!(left, want, "the mapped object, the live create and the foreign file stay");
    live.kill();
    assert_eq!(decided(&json(&["gc", "--json"]), "removed"), [made[0].clone()].into());
}
