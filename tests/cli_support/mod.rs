//! Running the `shmsync` binary from tests, and reading what it prints.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::Command;

use serde_json::Value;

/// The binary under test (built because the test needs the `cli` feature).
pub const BIN: &str = env!("CARGO_BIN_EXE_shmsync");

/// The uid and gid tests drop to: 'nobody'.
pub const NOBODY: u32 = 65534;

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn finish(cmd: &mut Command) -> std::io::Result<Run> {
    // The binary never blocks (it takes no lock and waits for nothing); the
    // test's watchdog bounds it all the same.
    let out = cmd.output()?;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `shmsync args...` with stdout piped (so `ls` prints plain rows).
pub fn run(args: &[&str]) -> Run {
    finish(Command::new(BIN).args(args)).expect("run the shmsync binary")
}

/// Runs it as uid/gid 'nobody'; `None` if that is not possible here (not
/// root, or the binary is not reachable for that user).
pub fn run_as_nobody(args: &[&str]) -> Option<Run> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let run = finish(Command::new(BIN).args(args).uid(NOBODY).gid(NOBODY)).ok()?;
    // 126/127 and "Permission denied" from exec: the path is closed to nobody.
    (run.code != 126 && run.code != 127).then_some(run)
}

/// Runs a `--json` command that must exit `code`, and parses its output.
pub fn json_with(args: &[&str], code: i32) -> Value {
    let run = run(args);
    assert_eq!(run.code, code, "shmsync {args:?}: {run:?}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("shmsync {args:?} printed bad JSON ({e}): {run:?}"))
}

/// Runs a `--json` command that must succeed, and parses its output.
pub fn json(args: &[&str]) -> Value {
    json_with(args, 0)
}

/// The object called `name` in an ls/inspect document.
pub fn object<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["objects"]
        .as_array()
        .expect("objects array")
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no object {name} in {doc:#}"))
}

/// `inspect --json NAME`'s object.
pub fn inspect(name: &str) -> Value {
    let doc = json(&["inspect", "--json", name]);
    object(&doc, name).clone()
}

/// Plain `ls` rows (tab-separated) by name.
pub fn rows(stdout: &str) -> BTreeMap<String, Vec<String>> {
    stdout
        .lines()
        .map(|line| {
            let cells: Vec<String> = line.split('\t').map(str::to_string).collect();
            assert_eq!(cells.len(), 9, "a plain ls row has 9 fields: {line:?}");
            (cells[0].clone(), cells)
        })
        .collect()
}

/// The keys of a JSON object, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect();
    k.sort();
    k
}

/// Sorted strings, for comparing key sets.
pub fn sorted(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Every byte of the file `/dev/shm/name`.
pub fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(format!("/dev/shm/{name}")).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// Names in /dev/shm starting with `prefix`, sorted.
pub fn names_with(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}
