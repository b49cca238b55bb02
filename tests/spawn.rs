//! The spawn start method. This test binary has its own `main` (no libtest
//! harness), because the entry guard must sit at the top of `main`.

use std::time::Duration;

use shmsync::process::{entries, entry};
use shmsync::{current, Process};

#[derive(serde::Serialize, serde::Deserialize)]
struct Args {
    n: u32,
    word: String,
    expect_name: String,
}

fn check_args(a: Args) {
    if a.n != 42 || a.word != "hello" || current().name() != a.expect_name {
        shmsync::process::exit(3);
    }
}

fn exit_with(code: i32) {
    shmsync::process::exit(code);
}

fn panics(_: ()) {
    panic!("spawned panic");
}

fn sleeps(_: ()) {
    std::thread::sleep(Duration::from_secs(30));
}

const DEADLINE: Duration = Duration::from_secs(30);

fn registered_entry_gets_its_arguments_and_name() {
    let p = Process::spawn("check_args", &Args { n: 42, word: "hello".into(), expect_name: "spawned".into() })
        .unwrap()
        .with_name("spawned");
    p.start().unwrap();
    assert_eq!(p.join_timeout(DEADLINE).unwrap(), Some(0));
}

fn exit_codes_and_panics_come_through() {
    let a = Process::spawn("exit_with", &5i32).unwrap();
    let b = Process::spawn("panics", &()).unwrap();
    let c = Process::spawn("no_such_entry", &()).unwrap();
    for p in [&a, &b, &c] {
        p.start().unwrap();
    }
    assert_eq!(a.join_timeout(DEADLINE).unwrap(), Some(5));
    assert_eq!(b.join_timeout(DEADLINE).unwrap(), Some(1));
    assert_eq!(c.join_timeout(DEADLINE).unwrap(), Some(1));
}

fn terminate_works_on_a_spawned_child() {
    let p = Process::spawn("sleeps", &()).unwrap();
    p.start().unwrap();
    assert_eq!(p.join_timeout(Duration::from_millis(50)).unwrap(), None);
    p.terminate().unwrap();
    assert_eq!(p.join_timeout(DEADLINE).unwrap(), Some(-15));
}

fn spawning_from_a_multi_threaded_parent_is_fine() {
    std::thread::scope(|s| {
        let busy = s.spawn(|| std::thread::sleep(Duration::from_millis(200)));
        let p = Process::spawn("exit_with", &0i32).unwrap();
        p.start().unwrap();
        assert_eq!(p.join_timeout(DEADLINE).unwrap(), Some(0));
        busy.join().unwrap();
    });
}

fn main() {
    entries(&[
        entry("check_args", check_args),
        entry("exit_with", exit_with),
        entry("panics", panics),
        entry("sleeps", sleeps),
    ]);
    let tests: [(&str, fn()); 4] = [
        ("registered_entry_gets_its_arguments_and_name", registered_entry_gets_its_arguments_and_name),
        ("exit_codes_and_panics_come_through", exit_codes_and_panics_come_through),
        ("terminate_works_on_a_spawned_child", terminate_works_on_a_spawned_child),
        ("spawning_from_a_multi_threaded_parent_is_fine", spawning_from_a_multi_threaded_parent_is_fine),
    ];
    let mut failed = 0;
    for (name, test) in tests {
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("\n{} passed, {failed} failed", tests.len() - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}
