//! Named segments: lifecycle, and every kind of bad input the design lists.
//! Each gets a typed error, never a panic, a hang or undefined behaviour.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{fork, serial, Names};
use shmsync::{Error, Lock, RLock};

const SHORT: Duration = Duration::from_millis(200);

fn write_file(name: &str, bytes: &[u8]) {
    let mut f = std::fs::File::create(format!("/dev/shm/{name}")).unwrap();
    f.write_all(bytes).unwrap();
}

/// A file that looks like a header claimed by `pid` but never finished.
fn half_initialised(pid: u32) -> Vec<u8> {
    let mut bytes = vec![0u8; 4096];
    bytes[48..52].copy_from_slice(&1u32.to_ne_bytes()); // state = INITIALISING
    bytes[52..56].copy_from_slice(&pid.to_ne_bytes()); // creator_pid
    bytes
}

#[test]
fn bad_names_are_invalid_name_errors() {
    let _s = serial();
    let long = "n".repeat(201);
    for bad in ["", ".", "..", "/", "a/b", "a b", "a\0b", "naïve", "tab\tname", long.as_str()] {
        match Lock::create(bad) {
            Err(Error::InvalidName { name, .. }) => assert_eq!(name, bad),
            other => panic!("{bad:?} gave {other:?}"),
        }
        assert!(matches!(Lock::open(bad), Err(Error::InvalidName { .. })));
        assert!(matches!(shmsync::unlink(bad), Err(Error::InvalidName { .. })));
    }
}

#[test]
fn a_leading_slash_is_stripped() {
    let _s = serial();
    let names = Names::new("slash");
    let name = names.get("x");
    let lock = Lock::builder(&format!("/{name}")).unlink_on_drop(true).create().unwrap();
    assert_eq!(lock.name(), name);
    let _again = Lock::open(&name).unwrap();
}

#[test]
fn create_on_a_taken_name_and_open_on_a_missing_one() {
    let _s = serial();
    let names = Names::new("exists");
    let name = names.get("x");
    let _lock = Lock::builder(&name).unlink_on_drop(true).create().unwrap();
    assert!(matches!(Lock::create(&name), Err(Error::AlreadyExists { .. })));
    assert!(matches!(Lock::open(&names.get("missing")), Err(Error::NotFound { .. })));
    assert!(matches!(shmsync::unlink(&names.get("missing")), Err(Error::NotFound { .. })));
}

#[test]
fn another_kind_is_wrong_kind_with_a_message_naming_both() {
    let _s = serial();
    let rlock = RLock::new().unwrap();
    let err = Lock::open(rlock.name()).unwrap_err();
    assert!(matches!(err, Error::WrongKind { expected: "Lock", .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(rlock.name()) && msg.contains("holds an RLock") && msg.contains("opened as Lock"), "{msg}");
}

#[test]
fn unlink_removes_the_name_but_open_handles_keep_working() {
    let _s = serial();
    let names = Names::new("unlink");
    let name = names.get("x");
    let lock = Lock::create(&name).unwrap();
    let other = Lock::open(&name).unwrap();
    shmsync::unlink(&name).unwrap();
    assert!(matches!(Lock::open(&name), Err(Error::NotFound { .. })));
    let g = lock.lock().unwrap();
    assert!(other.is_locked());
    drop(g);
}

#[test]
fn new_makes_a_unique_name_removed_on_drop_but_not_by_openers_or_children() {
    let _s = serial();
    let lock = Lock::new().unwrap();
    let name = lock.name().to_string();
    assert!(std::path::Path::new(&format!("/dev/shm/{name}")).exists());
    drop(Lock::open(&name).unwrap());
    // A forked child that drops its inherited copy of the creating handle
    // must not unlink the parent's name.
    let mut slot = Some(lock);
    fork(|| {
        drop(slot.take());
        0
    })
    .expect_success();
    assert!(Lock::open(&name).is_ok());
    drop(slot);
    assert!(matches!(Lock::open(&name), Err(Error::NotFound { .. })));
}

#[test]
fn an_all_zero_file_is_an_init_timeout_with_no_creator() {
    let _s = serial();
    let names = Names::new("zeros");
    let name = names.get("x");
    write_file(&name, &[0u8; 4096]);
    match Lock::builder(&name).open_timeout(SHORT).open() {
        Err(Error::InitTimeout { creator_pid: None, .. }) => {}
        other => panic!("{other:?}"),
    }
    shmsync::unlink(&name).unwrap();
}

#[test]
fn an_empty_file_is_an_init_timeout() {
    let _s = serial();
    let names = Names::new("empty");
    let name = names.get("x");
    write_file(&name, &[]);
    assert!(matches!(
        Lock::builder(&name).open_timeout(SHORT).open(),
        Err(Error::InitTimeout { creator_pid: None, .. })
    ));
    shmsync::unlink(&name).unwrap();
}

#[test]
fn a_file_shorter_than_the_header_is_corrupt() {
    let _s = serial();
    let names = Names::new("short");
    let name = names.get("x");
    write_file(&name, b"SHMSYNC\0 too short");
    assert!(matches!(Lock::builder(&name).open_timeout(SHORT).open(), Err(Error::Corrupt { .. })));
    shmsync::unlink(&name).unwrap();
}

#[test]
fn random_bytes_are_corrupt() {
    let _s = serial();
    let names = Names::new("random");
    let name = names.get("x");
    // A fixed xorshift stream: random-looking, and the same on every run.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    write_file(&name, &bytes);
    assert!(matches!(Lock::builder(&name).open_timeout(SHORT).open(), Err(Error::Corrupt { .. })));
    // A ready state word with a wrong magic is corrupt too.
    let mut ready = vec![0u8; 4096];
    ready[48..52].copy_from_slice(&2u32.to_ne_bytes());
    write_file(&name, &ready);
    assert!(matches!(Lock::builder(&name).open_timeout(SHORT).open(), Err(Error::Corrupt { .. })));
    shmsync::unlink(&name).unwrap();
}

#[test]
fn a_creator_that_died_mid_initialisation_is_named_in_the_error() {
    let _s = serial();
    let names = Names::new("deadcreator");
    let name = names.get("x");
    let mut child = fork(|| 0);
    let dead = child.pid();
    child.wait();
    write_file(&name, &half_initialised(dead));
    // The timeout is long; the dead creator is noticed well before it.
    match Lock::builder(&name).open_timeout(Duration::from_secs(20)).open() {
        Err(e @ Error::InitTimeout { creator_alive: false, .. }) => {
            assert!(matches!(e, Error::InitTimeout { creator_pid: Some(p), .. } if p == dead));
            assert!(e.to_string().contains(&dead.to_string()), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // open_or_create reports the same instead of hanging.
    assert!(matches!(
        Lock::builder(&name).open_timeout(Duration::from_secs(20)).open_or_create(),
        Err(Error::InitTimeout { creator_alive: false, .. })
    ));
    shmsync::unlink(&name).unwrap();
}

#[test]
fn a_live_but_slow_creator_times_the_opener_out() {
    let _s = serial();
    let names = Names::new("slowcreator");
    let name = names.get("x");
    write_file(&name, &half_initialised(std::process::id()));
    assert!(matches!(
        Lock::builder(&name).open_timeout(SHORT).open(),
        Err(Error::InitTimeout { creator_alive: true, .. })
    ));
    shmsync::unlink(&name).unwrap();
}

#[test]
fn a_mode_that_shuts_the_caller_out_is_permission_denied() {
    let _s = serial();
    let names = Names::new("mode");
    let name = names.get("x");
    let lock = Lock::builder(&name).mode(0o600).unlink_on_drop(true).create().unwrap();
    let meta = std::fs::metadata(format!("/dev/shm/{name}")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600);
    let opener = || match Lock::open(&name) {
        Err(Error::PermissionDenied { .. }) => 0,
        other => {
            eprintln!("{other:?}");
            1
        }
    };
    if nix::unistd::geteuid().is_root() {
        // Root bypasses file modes: test as the unprivileged 'nobody'.
        fork(|| {
            if nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).is_err()
                || nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).is_err()
            {
                return 2;
            }
            opener()
        })
        .expect_success();
    } else {
        let closed = Lock::builder(&names.get("closed")).mode(0o000).unlink_on_drop(true).create().unwrap();
        assert!(matches!(Lock::open(closed.name()), Err(Error::PermissionDenied { .. })));
    }
    drop(lock);
}

#[test]
fn a_mode_with_bits_outside_0o777_is_invalid() {
    let _s = serial();
    let names = Names::new("badmode");
    assert!(matches!(Lock::builder(&names.get("x")).mode(0o4755).create(), Err(Error::InvalidArgument { .. })));
}

#[test]
fn a_full_dev_shm_fails_at_create_never_with_sigbus() {
    let _s = serial();
    // In a child with its own mount namespace, /dev/shm becomes a 64 KiB
    // tmpfs; creating locks until it is full must end in NoSpace.
    let mut child = fork(|| {
        use nix::mount::{mount, MsFlags};
        if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_err()
            || mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).is_err()
            || mount(Some("tmpfs"), "/dev/shm", Some("tmpfs"), MsFlags::empty(), Some("size=64k")).is_err()
        {
            return 2; // not permitted here
        }
        let mut held = Vec::new();
        for i in 0..1000 {
            match Lock::create(&format!("full-{i}")) {
                Ok(l) => {
                    drop(l.lock().unwrap());
                    held.push(l);
                }
                Err(Error::NoSpace { .. }) => return if held.is_empty() { 3 } else { 0 },
                Err(e) => {
                    eprintln!("unexpected: {e}");
                    return 4;
                }
            }
        }
        5
    });
    match child.wait() {
        common::End::Exited(0) => {}
        common::End::Exited(2) => {
            eprintln!("skipped: cannot make a mount namespace here (needs root)")
        }
        other => panic!("full /dev/shm: {other:?}"),
    }
}

/// `unlink_on_drop` removed the name even after it had been unlinked and
/// re-created by someone else, deleting the new object's name.
#[test]
fn regression_unlink_on_drop_spares_a_new_object_under_the_same_name() {
    let _s = serial();
    let names = Names::new("reborn");
    let name = names.get("x");
    let first = Lock::builder(&name).unlink_on_drop(true).create().unwrap();
    shmsync::unlink(&name).unwrap();
    let second = Lock::create(&name).unwrap();
    drop(first);
    assert!(Lock::open(&name).is_ok(), "dropping the first handle removed the second object's name");
    drop(second);
    shmsync::unlink(&name).unwrap();
}

/// Runs `f` in a child as the unprivileged user 'nobody' (65534); `None` if
/// this process may not switch users.
fn as_nobody(f: impl FnOnce() -> i32) -> Option<common::End> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let mut child = fork(|| {
        if nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).is_err()
            || nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).is_err()
        {
            return 99;
        }
        f()
    });
    Some(child.wait())
}

/// Another user could pre-create a valid-looking object under a victim's
/// name (mode 0o666) and the victim's open_or_create took it: a squatter
/// could then hold its lock forever or feed it forged state.
#[test]
fn regression_a_segment_owned_by_another_user_is_refused_unless_invited() {
    let _s = serial();
    let names = Names::new("squat");
    let name = names.get("x");
    let made = as_nobody(|| match Lock::builder(&name).mode(0o666).create() {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    });
    match made {
        None => return eprintln!("skipped: needs root to act as another user"),
        Some(end) => assert_eq!(end, common::End::Exited(0)),
    }
    match Lock::open_or_create(&name) {
        Err(Error::ForeignOwner { uid: 65534, .. }) => {}
        other => panic!("a squatter's segment was accepted: {other:?}"),
    }
    assert!(matches!(Lock::open(&name), Err(Error::ForeignOwner { .. })));
    let invited = Lock::builder(&name).allow_owner(65534).open().unwrap();
    assert_eq!(invited.owner_uid(), 65534);
    assert!(Lock::builder(&name).any_owner().open().is_ok());
    shmsync::unlink(&name).unwrap();
}

/// A build for another C library places the mutex fields differently; the
/// fingerprint now says which C library made a segment.
#[test]
fn regression_a_segment_from_another_c_library_is_an_incompatible_layout() {
    let _s = serial();
    let names = Names::new("libc");
    let lock = Lock::builder(&names.get("x")).unlink_on_drop(true).create().unwrap();
    common::scribble(lock.name(), 56, b"musl");
    assert!(matches!(Lock::open(lock.name()), Err(Error::IncompatibleLayout { .. })));
}

/// A sparse file opened fine, and the first touch of a missing page on a
/// full /dev/shm killed the process with SIGBUS. Open now allocates what is
/// missing, or fails with NoSpace.
#[test]
fn regression_a_sparse_segment_on_a_full_dev_shm_is_no_space_at_open() {
    let _s = serial();
    // A whole queue segment's header, to copy into a sparse file.
    let queue = shmsync::Queue::<u64>::new(1 << 20).unwrap();
    let mut first_page = vec![0u8; 4096];
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(format!("/dev/shm/{}", queue.name())).unwrap();
        f.read_exact_at(&mut first_page, 0).unwrap();
    }
    let total = std::fs::metadata(format!("/dev/shm/{}", queue.name())).unwrap().len();
    let mut child = fork(|| {
        use nix::mount::{mount, MsFlags};
        if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_err()
            || mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).is_err()
            || mount(Some("tmpfs"), "/dev/shm", Some("tmpfs"), MsFlags::empty(), Some("size=256k")).is_err()
        {
            return 2; // not permitted here
        }
        let f = std::fs::File::create("/dev/shm/sparse").unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&first_page, 0).unwrap();
        f.set_len(total).unwrap();
        drop(f);
        match shmsync::Queue::<u64>::open("sparse") {
            Err(Error::NoSpace { .. }) => 0,
            Ok(q) => {
                let _ = q.put(&1); // would raise SIGBUS on a missing page
                3
            }
            Err(e) => {
                eprintln!("unexpected: {e}");
                4
            }
        }
    });
    match child.wait() {
        common::End::Exited(0) => {}
        common::End::Exited(2) => eprintln!("skipped: cannot make a mount namespace here (needs root)"),
        other => panic!("sparse segment: {other:?}"),
    }
}

/// The creator's umask narrowed the mode until its `fchmod`, and another
/// user opening in that instant got PermissionDenied. Objects are now built
/// under a temporary name with their final mode and renamed into place, so
/// an opener sees NotFound, then the whole object.
#[cfg(feature = "failpoints")]
#[test]
fn regression_another_user_never_meets_an_object_before_its_mode_is_set() {
    let _s = serial();
    let names = Names::new("umask");
    let name = names.get("x");
    let creator = fork(|| {
        shmsync::__private::fail::cfg("segment.create.claimed", "sleep(400)").unwrap();
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        match Lock::builder(&name).mode(0o666).create() {
            Ok(_) => 0,
            Err(_) => 1,
        }
    });
    let seen = as_nobody(|| {
        let start = std::time::Instant::now();
        loop {
            match Lock::builder(&name).allow_owner(0).open() {
                Ok(_) => return 0,
                Err(Error::NotFound { .. }) if start.elapsed() < common::DEADLINE => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => {
                    eprintln!("{e}");
                    return 1;
                }
            }
        }
    });
    creator.expect_success();
    if let Some(end) = seen {
        assert_eq!(end, common::End::Exited(0));
    }
    shmsync::unlink(&name).unwrap();
}
