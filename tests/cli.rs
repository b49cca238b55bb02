//! The `shmsync` command, run for real against objects that other processes
//! hold: `inspect` shows each kind's live state, `ls` describes damaged and
//! foreign files and goes on, `rm` removes only ours, the JSON is as
//! documented, and reading changes no byte. (gc: tests/cli_gc.rs.)
//!
//! Needs `--features cli` (the test target requires it).

mod cli_support;
mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cli_support::{bytes, inspect, json, json_with, keys, object, rows, run, run_as_nobody, sorted};
use common::{await_value, fork, serial, Names, Shared, DEADLINE};
use shmsync::{
    Barrier, BoundedSemaphore, Condition, Dict, Event, JoinableQueue, Lock, Mutex, Namespace, Queue, RLock, Semaphore,
};

const LONG: Duration = Duration::from_secs(60);

/// Polls `inspect --json name` until `done` holds, or panics at the deadline.
fn inspect_until(name: &str, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let obj = inspect(name);
        if done(&obj) {
            return obj;
        }
        assert!(start.elapsed() < DEADLINE, "{name} never reached {what}: {obj:#}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_lock_shows_its_holder_then_poisoned_on_next_lock_after_sigkill() {
    let _s = serial();
    let names = Names::new("cli-lock");
    let name = names.get("lock");
    let lock = Lock::create(&name).unwrap();
    let ready = Shared::<AtomicU32>::new();
    let mut holder = fork(|| {
        let _g = lock.lock().unwrap();
        ready.store(1, Ordering::Release);
        std::thread::sleep(LONG);
        0
    });
    await_value(&ready, 1, "the holder to lock");

    let obj = inspect(&name);
    assert_eq!(
        (obj["status"].as_str(), obj["kind"].as_str(), obj["state"].as_str()),
        (Some("ok"), Some("Lock"), Some("held"))
    );
    let d = &obj["detail"];
    assert_eq!(d["owner_pid"], holder.pid(), "{obj:#}");
    assert_eq!(d["owner_tid"], holder.pid(), "a forked child's only thread has tid == pid");
    assert_eq!((d["owner_alive"].as_bool(), d["depth"].as_u64()), (Some(true), Some(1)));
    assert_eq!((d["poisoned"].as_bool(), d["poisoned_on_next_lock"].as_bool()), (Some(false), Some(false)));
    let mapped: Vec<u64> = obj["mapped_by"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    assert!(mapped.contains(&u64::from(holder.pid())) && mapped.contains(&u64::from(std::process::id())));
    // The plain row says the same.
    let ls = run(&["ls"]);
    let row = &rows(&ls.stdout)[&name];
    assert_eq!((row[1].as_str(), row[2].as_str(), row[3].as_str(), row[7].as_str()), ("Lock", "4096", "0600", "held"));
    assert_eq!(row[5], format!("{}/alive", std::process::id()));
    assert!(row[6].split(',').any(|p| p == holder.pid().to_string()), "{row:?}");

    holder.kill();
    let obj = inspect(&name);
    let d = &obj["detail"];
    assert_eq!(obj["state"], "owner-dead", "{obj:#}");
    assert_eq!((d["owner_died"].as_bool(), d["poisoned_on_next_lock"].as_bool()), (Some(true), Some(true)));
    assert_eq!((d["owner_tid"].is_null(), d["poisoned"].as_bool()), (true, Some(false)));
    let text = run(&["inspect", &name]);
    assert!(text.stdout.contains("reports poison (owner dead)"), "{}", text.stdout);

    // It was right: the next lock reports poison, and the flag then stays.
    let g = lock.lock().expect_err("the next lock reports poison").into_inner();
    drop(g);
    let obj = inspect(&name);
    assert_eq!((obj["state"].as_str(), obj["detail"]["poisoned"].as_bool()), (Some("poisoned"), Some(true)));
    lock.clear_poison();
    assert_eq!(inspect(&name)["state"], "free");
    shmsync::unlink(&name).unwrap();
}

#[test]
fn an_rlock_shows_its_depth_and_a_mutex_its_value_layout() {
    let _s = serial();
    let names = Names::new("cli-rlock");
    let (rname, mname) = (names.get("rlock"), names.get("mutex"));
    let rlock = RLock::create(&rname).unwrap();
    let mutex = Mutex::<[u64; 3]>::create(&mname, [1, 2, 3]).unwrap();
    let ready = Shared::<AtomicU32>::new();
    let mut holder = fork(|| {
        let _a = rlock.lock().unwrap();
        let _b = rlock.lock().unwrap();
        let _c = rlock.lock().unwrap();
        let _m = mutex.lock().unwrap();
        ready.store(1, Ordering::Release);
        std::thread::sleep(LONG);
        0
    });
    await_value(&ready, 1, "the holder to lock");
    let r = inspect(&rname);
    assert_eq!(
        (r["detail"]["depth"].as_u64(), r["detail"]["owner_pid"].as_u64()),
        (Some(3), Some(u64::from(holder.pid())))
    );
    let m = inspect(&mname);
    assert_eq!(m["state"], "held");
    assert_eq!((m["detail"]["value_size"].as_u64(), m["detail"]["value_align"].as_u64()), (Some(24), Some(8)));
    assert_eq!(m["detail"]["lock"]["owner_pid"], holder.pid());
    holder.kill();
    assert_eq!(inspect(&rname)["state"], "owner-dead");
    assert_eq!(inspect(&mname)["detail"]["lock"]["poisoned_on_next_lock"], true);
    for n in [&rname, &mname] {
        shmsync::unlink(n).unwrap();
    }
}

#[test]
fn semaphore_values_and_queue_lengths_are_exact() {
    let _s = serial();
    let names = Names::new("cli-count");
    let (sname, bname, qname, jname) = (names.get("sem"), names.get("bsem"), names.get("queue"), names.get("jqueue"));
    let sem = Semaphore::create(&sname, 5).unwrap();
    let bsem = BoundedSemaphore::create(&bname, 3).unwrap();
    let queue = Queue::<u64>::create(&qname, 4096).unwrap();
    let jqueue = JoinableQueue::<u64>::create(&jname, 4096).unwrap();
    fork(|| {
        for _ in 0..3 {
            sem.acquire().forget();
        }
        bsem.acquire().forget();
        for i in 0..7 {
            queue.put(&i).unwrap();
        }
        for i in 0..4 {
            jqueue.put(&i).unwrap();
        }
        0
    })
    .expect_success();
    assert_eq!(jqueue.get().unwrap(), 0);
    jqueue.task_done().unwrap();

    let s = inspect(&sname);
    assert_eq!((s["detail"]["value"].as_u64(), s["detail"]["bounded"].as_bool()), (Some(2), Some(false)));
    assert_eq!(s["state"], "available");
    let b = inspect(&bname);
    assert_eq!((b["detail"]["value"].as_u64(), b["detail"]["max"].as_u64()), (Some(2), Some(3)));
    assert_eq!(b["kind"], "BoundedSemaphore");
    let q = inspect(&qname);
    // A u64 below 128 encodes in one byte: a record is an 8-byte length
    // header plus the payload padded to 8.
    assert_eq!((q["detail"]["messages"].as_u64(), q["detail"]["bytes_used"].as_u64()), (Some(7), Some(7 * 16)));
    assert!(q["detail"]["capacity"].as_u64().unwrap() >= 4096 - 128);
    assert!(q["detail"]["unfinished"].is_null());
    let j = inspect(&jname);
    assert_eq!((j["detail"]["messages"].as_u64(), j["detail"]["unfinished"].as_u64()), (Some(3), Some(3)));
    for _ in 0..2 {
        sem.acquire().forget();
    }
    assert_eq!(
        (inspect(&sname)["detail"]["value"].as_u64(), inspect(&sname)["state"].as_str()),
        (Some(0), Some("exhausted"))
    );
    for n in [&sname, &bname, &qname, &jname] {
        shmsync::unlink(n).unwrap();
    }
}

#[test]
fn a_barriers_waiting_count_is_exact_and_survives_a_killed_party() {
    let _s = serial();
    let names = Names::new("cli-barrier");
    let name = names.get("barrier");
    let barrier = Barrier::create(&name, 4).unwrap();
    let mut parties: Vec<_> = (0..2)
        .map(|_| {
            fork(|| match barrier.wait_timeout(LONG) {
                Err(shmsync::Error::BrokenBarrier { .. }) => 0,
                other => {
                    eprintln!("{other:?}");
                    1
                }
            })
        })
        .collect();
    let b = inspect_until(&name, "2 waiting", |o| o["detail"]["waiting"] == 2);
    assert_eq!((b["detail"]["parties"].as_u64(), b["detail"]["generation"].as_u64()), (Some(4), Some(0)));
    assert_eq!((b["detail"]["broken"].as_bool(), b["state"].as_str()), (Some(false), Some("waiting")));
    // A party that dies after arriving still counts as arrived.
    parties[0].kill();
    assert_eq!(inspect(&name)["detail"]["waiting"], 2);
    barrier.abort();
    assert_eq!(parties[1].wait(), common::End::Exited(0));
    let b = inspect(&name);
    assert_eq!((b["detail"]["broken"].as_bool(), b["state"].as_str()), (Some(true), Some("broken")));
    shmsync::unlink(&name).unwrap();
}

#[test]
fn events_conditions_dicts_and_namespaces_show_their_state() {
    let _s = serial();
    let names = Names::new("cli-misc");
    let (ename, cname, dname, nname) = (names.get("event"), names.get("cond"), names.get("dict"), names.get("ns"));
    let event = Event::create(&ename).unwrap();
    let cond = Condition::create(&cname).unwrap();
    let dict = Dict::<u32, String>::create(&dname, 4096).unwrap();
    let ns = Namespace::create(&nname, 4096).unwrap();
    assert_eq!(inspect(&ename)["state"], "clear");
    assert_eq!(inspect(&dname)["state"], "empty");
    fork(|| {
        event.set();
        for i in 0..3 {
            dict.insert(&i, &format!("v{i}")).unwrap();
        }
        ns.set("a", &1u8).unwrap();
        ns.set("b", &"two".to_string()).unwrap();
        0
    })
    .expect_success();
    let e = inspect(&ename);
    assert_eq!((e["detail"]["set"].as_bool(), e["state"].as_str()), (Some(true), Some("set")));
    let d = inspect(&dname);
    assert_eq!((d["detail"]["entries"].as_u64(), d["state"].as_str()), (Some(3), Some("nonempty")));
    assert!(d["detail"]["bytes"].as_u64().unwrap() > 0 && d["detail"]["capacity"].as_u64().unwrap() >= 4096);
    assert_eq!(inspect(&nname)["detail"]["entries"], 2);

    let waiting = Shared::<AtomicU32>::new();
    let mut waiter = fork(|| {
        let g = cond.lock().unwrap();
        waiting.store(1, Ordering::Release);
        let _ = cond.wait_timeout(g, LONG);
        0
    });
    await_value(&waiting, 1, "the waiter");
    let c = inspect_until(&cname, "a waiter", |o| o["detail"]["waiters"] == 1);
    assert_eq!((c["state"].as_str(), c["detail"]["lock"]["owner_tid"].is_null()), (Some("waiting"), true));
    cond.notify_all();
    assert_eq!(waiter.wait(), common::End::Exited(0));
    assert_eq!(inspect(&cname)["detail"]["waiters"], 0);
    for n in [&ename, &cname, &dname, &nname] {
        shmsync::unlink(n).unwrap();
    }
}

fn write_file(name: &str, content: &[u8]) {
    let mut f = std::fs::File::create(format!("/dev/shm/{name}")).unwrap();
    f.write_all(content).unwrap();
}

/// A whole Lock segment's bytes, made by the library and then unlinked.
fn lock_bytes(names: &Names) -> Vec<u8> {
    let name = names.get("template");
    drop(Lock::create(&name).unwrap());
    let b = bytes(&name);
    shmsync::unlink(&name).unwrap();
    b
}

#[test]
fn truncated_foreign_and_other_users_files_each_get_a_clear_line_and_ls_goes_on() {
    let _s = serial();
    let names = Names::new("cli-damaged");
    let good = lock_bytes(&names);
    let at = |field: usize, value: u32, mut b: Vec<u8>| {
        b[field..field + 4].copy_from_slice(&value.to_ne_bytes());
        b
    };
    let n = |what: &str| names.get(what);
    write_file(&n("a-short"), &good[..100]);
    write_file(&n("b-cut"), &good[..1000]);
    write_file(&n("c-foreign"), &[0x5a; 4096]);
    write_file(&n("d-version"), &at(8, 9, good.clone()));
    write_file(&n("e-kind"), &at(12, 99, good.clone()));
    let _fine = Lock::builder(&n("z-fine")).mode(0o600).unlink_on_drop(true).create().unwrap();
    // An object of another user (nobody), made by a child that became nobody.
    let other_user = nix::unistd::geteuid().is_root();
    if other_user {
        let theirs = n("f-nobody");
        fork(move || {
            if nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).is_err()
                || nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).is_err()
            {
                return 2;
            }
            // Left behind on purpose (no unlink on drop): the test removes it.
            Lock::builder(&theirs).mode(0o644).create().map(|_| 0).unwrap_or(3)
        })
        .expect_success();
    }

    let ls = run(&["ls"]);
    assert_eq!(ls.code, 0, "{ls:?}");
    let rows = rows(&ls.stdout);
    let line = |what: &str| rows.get(&n(what)).unwrap_or_else(|| panic!("no line for {what}: {}", ls.stdout)).clone();
    let short = line("a-short");
    assert_eq!(
        (short[7].as_str(), short[8].as_str()),
        ("truncated", "it is 100 bytes, shorter than the 128-byte header")
    );
    let cut = line("b-cut");
    assert_eq!((cut[1].as_str(), cut[7].as_str()), ("Lock", "truncated"));
    assert_eq!(cut[8], "the header says 4096 bytes, the file has 1000");
    assert!(!rows.contains_key(&n("c-foreign")), "a foreign file is not a row of plain ls");
    assert!(ls.stderr.contains("are not shmsync objects"), "{}", ls.stderr);
    let version = line("d-version");
    assert_eq!(version[7], "incompatible");
    assert!(version[8].contains("layout version 9"), "{version:?}");
    let kind = line("e-kind");
    assert_eq!((kind[7].as_str(), kind[8].as_str()), ("corrupt", "unknown object kind 99"));
    assert_eq!(line("z-fine")[7], "free", "ls went on past the damaged files");
    if other_user {
        let theirs = line("f-nobody");
        assert_eq!((theirs[1].as_str(), theirs[3].as_str(), theirs[4].as_str()), ("Lock", "0644", "nobody"));
        assert_eq!(theirs[7], "free");
    }
    // --all lists the foreign file too, and says what it is.
    let all = run(&["ls", "--all"]);
    let foreign = &cli_support::rows(&all.stdout)[&n("c-foreign")];
    assert_eq!(foreign[7], "foreign");
    assert!(foreign[8].contains("does not start with the shmsync magic"), "{foreign:?}");

    // As nobody: our 0600 files cannot be read, and each says so.
    if let Some(as_nobody) = run_as_nobody(&["ls"]) {
        assert_eq!(as_nobody.code, 0, "{as_nobody:?}");
        let rows = cli_support::rows(&as_nobody.stdout);
        let fine = &rows[&n("z-fine")];
        assert_eq!(fine[7], "unreadable", "{fine:?}");
        assert!(fine[8].starts_with("permission denied: it belongs to root with mode 0600"), "{fine:?}");
        assert_eq!(rows[&n("f-nobody")][7], "free", "and ls goes on");
        assert!(
            as_nobody.stderr.contains("could not read the mappings"),
            "nobody cannot read root's maps: {}",
            as_nobody.stderr
        );
        let inspect = run_as_nobody(&["inspect", &n("z-fine")]).unwrap();
        assert_eq!(inspect.code, 1);
        assert!(inspect.stdout.contains("permission denied"), "{inspect:?}");
    } else {
        eprintln!("skipped the run as nobody: not root, or the binary is closed to nobody");
    }
    for what in ["a-short", "b-cut", "c-foreign", "d-version", "e-kind", "f-nobody"] {
        let _ = std::fs::remove_file(format!("/dev/shm/{}", n(what)));
    }
}

#[test]
fn exit_codes_and_rm_touch_only_our_objects() {
    let _s = serial();
    let names = Names::new("cli-rm");
    let (ours, foreign, missing) = (names.get("ours"), names.get("foreign"), names.get("missing"));
    drop(Event::create(&ours).unwrap());
    write_file(&foreign, b"not ours at all");

    assert_eq!(run(&["inspect", &ours]).code, 0);
    let r = run(&["inspect", &missing]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no such object"), "{r:?}");
    let r = run(&["inspect", &foreign]);
    assert_eq!(r.code, 1, "not ours");
    assert!(r.stdout.contains("foreign") && r.stdout.contains("not a shmsync object"), "{r:?}");
    let doc = json_with(&["inspect", "--json", &ours, &missing], 1);
    assert_eq!(doc["not_found"], serde_json::json!([missing]));
    assert_eq!(object(&doc, &ours)["kind"], "Event");

    let r = run(&["rm", &foreign]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("only shmsync objects are removed"), "{r:?}");
    assert!(std::path::Path::new(&format!("/dev/shm/{foreign}")).exists());
    assert_eq!(run(&["rm", &missing]).code, 1);
    if let Some(r) = run_as_nobody(&["rm", &ours]) {
        assert_eq!(r.code, 1);
        assert!(r.stderr.contains("permission denied"), "{r:?}");
    }
    let r = run(&["rm", &ours]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("removed") && !std::path::Path::new(&format!("/dev/shm/{ours}")).exists());

    for usage in [&["frobnicate"][..], &["inspect"], &["rm"], &["ls", "--bogus"], &["gc", "--dry-run=maybe"]] {
        assert_eq!(run(usage).code, 2, "usage error: {usage:?}");
    }
    assert_eq!(run(&["--help"]).code, 0);
    std::fs::remove_file(format!("/dev/shm/{foreign}")).unwrap();
}

#[test]
fn json_parses_and_has_the_documented_fields() {
    let _s = serial();
    let names = Names::new("cli-json");
    let name = names.get("lock");
    let _lock = Lock::builder(&name).unlink_on_drop(true).create().unwrap();
    let info_fields = [
        "name",
        "status",
        "problem",
        "kind",
        "size",
        "mode",
        "uid",
        "user",
        "ephemeral",
        "temporary",
        "creator",
        "mapped_by",
        "state",
        "orphan",
        "header",
        "detail",
    ];
    let list_fields = ["schema", "objects", "not_found", "other_files", "unreadable_processes"];
    for doc in [json(&["ls", "--json"]), json(&["inspect", "--json", &name])] {
        assert_eq!(keys(&doc), sorted(&list_fields));
        assert_eq!(doc["schema"], 1);
        for o in doc["objects"].as_array().unwrap() {
            assert_eq!(keys(o), sorted(&info_fields), "{o:#}");
        }
        let o = object(&doc, &name);
        assert_eq!(
            (o["status"].as_str(), o["mode"].as_str(), o["size"].as_u64()),
            (Some("ok"), Some("0600"), Some(4096))
        );
        assert_eq!(
            (o["ephemeral"].as_bool(), o["temporary"].as_bool(), o["orphan"].as_bool()),
            (Some(false), Some(false), Some(false))
        );
        assert_eq!(keys(&o["creator"]), sorted(&["pid", "start", "alive"]));
        assert_eq!(o["creator"]["pid"], std::process::id());
        assert_eq!(
            keys(&o["header"]),
            sorted(&[
                "layout_version",
                "kind",
                "total_size",
                "ptr_width",
                "mutex_size",
                "object_size",
                "object_align",
                "type_hash",
                "state",
                "creator_pid",
                "creator_start",
                "libc",
                "flags",
            ])
        );
        assert_eq!((o["header"]["layout_version"].as_u64(), o["header"]["libc"].as_str()), (Some(2), Some("gnu")));
        assert_eq!(
            keys(&o["detail"]),
            sorted(&[
                "owner_tid",
                "owner_pid",
                "owner_alive",
                "depth",
                "poisoned",
                "owner_died",
                "poisoned_on_next_lock"
            ])
        );
        for p in doc["unreadable_processes"].as_array().unwrap() {
            assert_eq!(keys(p), sorted(&["pid", "uid"]));
        }
    }
    let gc = json(&["gc", "--dry-run", "--json", "--prefix", &name]);
    assert_eq!(keys(&gc), sorted(&["schema", "dry_run", "decisions", "unreadable_processes"]));
    assert_eq!(gc["dry_run"], true);
    let decisions = gc["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(keys(&decisions[0]), sorted(&["action", "reason", "object"]));
    assert_eq!(
        (decisions[0]["action"].as_str(), decisions[0]["object"]["name"].as_str()),
        (Some("kept"), Some(name.as_str()))
    );
    assert!(decisions[0]["reason"].as_str().unwrap().contains("is alive"));
}

#[test]
fn reading_changes_no_byte() {
    let _s = serial();
    let names = Names::new("cli-readonly");
    let (lname, qname, bname) = (names.get("lock"), names.get("queue"), names.get("barrier"));
    let lock = Lock::create(&lname).unwrap();
    let queue = Queue::<String>::create(&qname, 4096).unwrap();
    let barrier = Barrier::create(&bname, 3).unwrap();
    queue.put(&"a message".to_string()).unwrap();
    let ready = Shared::<AtomicU32>::new();
    let mut holder = fork(|| {
        let _g = lock.lock().unwrap();
        ready.store(1, Ordering::Release);
        std::thread::sleep(LONG);
        0
    });
    await_value(&ready, 1, "the holder");
    let all = [&lname, &qname, &bname];
    let before: Vec<Vec<u8>> = all.iter().map(|n| bytes(n)).collect();
    assert_eq!(run(&["ls"]).code, 0);
    assert_eq!(run(&["ls", "--json", "--all"]).code, 0);
    assert_eq!(run(&["inspect", &lname, &qname, &bname]).code, 0);
    assert_eq!(run(&["gc", "--dry-run", "--prefix", &names.get("")]).code, 0);
    let after: Vec<Vec<u8>> = all.iter().map(|n| bytes(n)).collect();
    assert!(before == after, "reading changed a byte");
    holder.kill();
    drop(barrier);
    for n in all {
        shmsync::unlink(n).unwrap();
    }
}
