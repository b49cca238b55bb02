//! The Process launcher: exit codes, lifecycle errors, names, timeouts,
//! daemons, nesting.

mod common;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{await_value, serial, Shared, DEADLINE};
use shmsync::{current, Error, Event, Process, Run};

/// Runs `f` with this process's stderr sent to a file; returns what was
/// written there (by us or by children started meanwhile).
fn capture_stderr(f: impl FnOnce()) -> String {
    let path = std::env::temp_dir().join(format!("shmsync-stderr-{}-{:?}", std::process::id(), Instant::now()));
    let file = std::fs::File::create(&path).unwrap();
    let saved = nix::unistd::dup(std::io::stderr()).unwrap();
    // SAFETY: fd 2 stays open (replaced by the file, then restored).
    unsafe { libc::dup2(file.as_raw_fd(), 2) };
    f();
    // SAFETY: as above.
    unsafe { libc::dup2(saved.as_raw_fd(), 2) };
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    text
}

#[test]
fn exit_codes_follow_python() {
    let _s = serial();
    let returns = Process::new(|| ());
    let exits = Process::new::<_, ()>(|| shmsync::process::exit(7));
    let errs = Process::new(|| -> Result<(), String> { Err("no luck".into()) }).with_name("erring");
    let panics = Process::new::<_, ()>(|| panic!("boom")).with_name("panicking");
    let stderr = capture_stderr(|| {
        for p in [&returns, &exits, &errs, &panics] {
            p.start().unwrap();
        }
        assert_eq!(returns.join().unwrap(), 0);
        assert_eq!(exits.join().unwrap(), 7);
        assert_eq!(errs.join().unwrap(), 1);
        assert_eq!(panics.join().unwrap(), 1);
    });
    assert!(stderr.contains("Process erring: \"no luck\""), "{stderr}");
    assert!(stderr.contains("Process panicking:") && stderr.contains("boom"), "{stderr}");

    let terminated = Process::new(|| std::thread::sleep(DEADLINE));
    let killed = Process::new(|| std::thread::sleep(DEADLINE));
    terminated.start().unwrap();
    killed.start().unwrap();
    terminated.terminate().unwrap();
    killed.kill().unwrap();
    assert_eq!(terminated.join().unwrap(), -15);
    assert_eq!(killed.join().unwrap(), -9);
    // A second join returns the same code; exitcode agrees.
    assert_eq!(killed.join().unwrap(), -9);
    assert_eq!(killed.exitcode(), Some(-9));
    assert!(!killed.is_alive());
}

#[test]
fn join_timeout_returns_none_while_the_child_runs() {
    let _s = serial();
    let ev = Event::new().unwrap();
    let p = Process::new({
        let name = ev.name().to_string();
        move || {
            let ev = Event::open(&name).unwrap();
            ev.wait_timeout(DEADLINE);
        }
    });
    p.start().unwrap();
    assert_eq!(p.join_timeout(Duration::from_millis(50)).unwrap(), None);
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    ev.set();
    assert_eq!(p.join_timeout(DEADLINE).unwrap(), Some(0));
    assert!(!p.is_alive());
}

#[test]
fn start_twice_and_join_before_start_are_errors() {
    let _s = serial();
    let p = Process::new(|| ()).with_name("once");
    assert!(matches!(p.join(), Err(Error::ProcessNotStarted { .. })));
    assert!(matches!(p.join_timeout(DEADLINE), Err(Error::ProcessNotStarted { .. })));
    assert!(matches!(p.terminate(), Err(Error::ProcessNotStarted { .. })));
    assert_eq!(p.pid(), None);
    assert!(!p.is_alive());
    p.start().unwrap();
    let err = p.start().unwrap_err();
    assert!(matches!(err, Error::ProcessAlreadyStarted { .. }));
    assert!(err.to_string().contains("once"));
    assert_eq!(p.join().unwrap(), 0);
    // Terminating a finished process is harmless.
    p.terminate().unwrap();
}

#[test]
fn default_and_given_names_and_current_in_the_child() {
    let _s = serial();
    let a = Process::new(|| ());
    let b = Process::new(|| ()).with_name("my_service");
    let c = Process::new(|| ());
    let na: u32 = a.name().strip_prefix("Process-").unwrap().parse().unwrap();
    let nc: u32 = c.name().strip_prefix("Process-").unwrap().parse().unwrap();
    // The counter advances on every construction, named or not.
    assert_eq!(nc, na + 2);
    assert_eq!(b.name(), "my_service");
    assert_eq!(current().name(), "MainProcess");

    let pid_seen = Shared::<AtomicU32>::new();
    let checker = Process::new({
        let pid_seen = &*pid_seen as *const AtomicU32 as usize;
        move || {
            // SAFETY: the shared mapping outlives the child.
            let pid_seen = unsafe { &*(pid_seen as *const AtomicU32) };
            pid_seen.store(current().pid(), Ordering::SeqCst);
            if current().name() == "checker" {
                Ok(())
            } else {
                Err(current().name())
            }
        }
    })
    .with_name("checker");
    checker.start().unwrap();
    assert_eq!(checker.join().unwrap(), 0);
    assert_eq!(Some(pid_seen.load(Ordering::SeqCst)), checker.pid());
}

#[test]
fn nested_children_are_named_after_their_parent() {
    let _s = serial();
    let outer = Process::new(|| {
        let inner1 = Process::new(|| ());
        let inner2 = Process::new(|| ());
        if inner1.name() != format!("{}:1", current().name()) || inner2.name() != format!("{}:2", current().name()) {
            return Err(format!("{} / {}", inner1.name(), inner2.name()));
        }
        inner1.start().map_err(|e| e.to_string())?;
        // Not joined here: the child's exit joins it, as in Python.
        Ok(())
    })
    .with_name("outer");
    outer.start().unwrap();
    assert_eq!(outer.join_timeout(DEADLINE).unwrap(), Some(0));
}

struct Worker;

impl Run for Worker {
    fn run(self) {
        if !current().name().starts_with("Worker-") {
            shmsync::process::exit(3);
        }
    }
}

#[test]
fn run_trait_workers_are_named_after_their_type() {
    let _s = serial();
    let p = Process::from_run(Worker);
    assert!(p.name().starts_with("Worker-"), "{}", p.name());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn four_children_waiting_on_one_event_are_released_together() {
    let _s = serial();
    let ev = Event::new().unwrap();
    let ready = Shared::<AtomicU32>::new();
    let ready_addr = &*ready as *const AtomicU32 as usize;
    let name = ev.name().to_string();
    let children: Vec<Process> = (0..4)
        .map(|_| {
            let name = name.clone();
            Process::new(move || {
                let ev = Event::open(&name).unwrap();
                // SAFETY: the shared mapping outlives the children.
                unsafe { &*(ready_addr as *const AtomicU32) }.fetch_add(1, Ordering::SeqCst);
                if ev.wait_timeout(DEADLINE) {
                    Ok(())
                } else {
                    Err("timed out")
                }
            })
        })
        .collect();
    for c in &children {
        c.start().unwrap();
    }
    await_value(&ready, 4, "four waiters");
    for c in &children {
        assert!(c.is_alive());
    }
    ev.set();
    for c in &children {
        assert_eq!(c.join_timeout(DEADLINE).unwrap(), Some(0));
    }
}

fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn await_gone(pid: u32) {
    let start = Instant::now();
    while !is_gone(pid) {
        assert!(start.elapsed() < DEADLINE, "daemon {pid} outlived its parent");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_daemon_dies_with_a_killed_parent() {
    let _s = serial();
    let daemon_pid = Shared::<AtomicU32>::new();
    let mut parent = common::fork(|| {
        let d = Process::new(|| std::thread::sleep(DEADLINE)).daemon(true);
        d.start().unwrap();
        daemon_pid.store(d.pid().unwrap(), Ordering::SeqCst);
        std::thread::sleep(DEADLINE);
        0
    });
    await_value(&daemon_pid, 1, "the daemon to start");
    let pid = daemon_pid.load(Ordering::SeqCst);
    assert!(!is_gone(pid));
    parent.kill();
    await_gone(pid);
}

#[test]
fn a_daemon_is_terminated_and_a_worker_joined_when_the_parent_exits_normally() {
    let _s = serial();
    #[repr(C)]
    struct Pids {
        daemon: AtomicU32,
        worker_done: AtomicU32,
    }
    let pids = Shared::<Pids>::new();
    let pids_addr = pids.as_ptr() as usize;
    let mut parent = common::fork(|| {
        let d = Process::new(|| std::thread::sleep(DEADLINE)).daemon(true);
        let w = Process::new(move || {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: the shared mapping outlives every process here.
            unsafe { &*(pids_addr as *const Pids) }.worker_done.store(1, Ordering::SeqCst);
        });
        d.start().unwrap();
        w.start().unwrap();
        pids.daemon.store(d.pid().unwrap(), Ordering::SeqCst);
        // A normal exit runs the exit hook: terminate the daemon, join the worker.
        std::process::exit(0);
    });
    assert_eq!(parent.wait(), common::End::Exited(0));
    assert_eq!(pids.worker_done.load(Ordering::SeqCst), 1, "the worker was not joined before exit");
    await_gone(pids.daemon.load(Ordering::SeqCst));
}
