//! Section 6 of the study: Python's `multiprocessing`, measured by the
//! `mp_bench.py` script that ships beside this file, one subprocess per
//! sample: `python3 mp_bench.py <lock|event|pipe> [quick]`.
//!
//! The subprocess runs in its own process group. Once it has exited (or
//! overrun its deadline) the whole group is killed before the leader is
//! reaped, so no multiprocessing child of it can outlive the sample. The
//! script uses the fork start method, whose semaphores are unlinked at
//! creation, so nothing is left in /dev/shm either.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::model::{Key, Probe, Sample, Section, Unit};

/// How long one run of the script may take before it is killed.
const DEADLINE: Duration = Duration::from_secs(90);

/// The interpreter, looked up on `PATH`.
const PYTHON: &str = "python3";

/// The script, shipped with the bench.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ipc_cost/mp_bench.py")
}

/// What a finished subprocess left: its exit status and its output.
struct Output {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` in a process group of its own, waits for it at most
/// `deadline`, then kills whatever is left of the group and reaps the
/// leader. Errors if it could not start or overran.
fn run_bounded(cmd: &mut Command, deadline: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("could not start {PYTHON}: {e}"))?;
    let end = Instant::now() + deadline;
    let overran = loop {
        if exited_unreaped(&child)? {
            break false;
        }
        if Instant::now() >= end {
            break true;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    kill_group(&child);
    let status = child.wait().map_err(|e| format!("wait for {PYTHON}: {e}"))?;
    // The leader has exited and its group is dead, so both pipes are at end
    // of file (the script writes far less than a pipe buffer).
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).map_err(|e| format!("read {PYTHON}'s stdout: {e}"))?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).map_err(|e| format!("read {PYTHON}'s stderr: {e}"))?;
    }
    if overran {
        return Err(format!("{PYTHON} still running after {deadline:?}; killed. stderr: {}", tail(&stderr)));
    }
    Ok(Output { success: status.success(), status: status.to_string(), stdout, stderr })
}

/// Whether `child` has exited, leaving it unreaped (a zombie) so that its
/// pid, and so its process group's id, cannot be reused yet.
fn exited_unreaped(child: &Child) -> Result<bool, String> {
    // SAFETY: an all-zero siginfo_t is a valid value to be overwritten.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `child.id()` is our unreaped child; `info` is writable.
    // WNOWAIT leaves it unreaped, WNOHANG keeps the call from blocking.
    let rc = unsafe { libc::waitid(libc::P_PID, child.id(), &mut info, libc::WEXITED | libc::WNOWAIT | libc::WNOHANG) };
    if rc != 0 {
        return Err(format!("waitid: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: waitid filled `info` (or left it zeroed, pid 0, if the child
    // is still running).
    Ok(unsafe { info.si_pid() } != 0)
}

/// Kills every process left in `child`'s group, which `child` leads and
/// which it keeps reserved until reaped.
fn kill_group(child: &Child) {
    // SAFETY: kill with a negative pid signals that process group; it is
    // ours, made by `process_group(0)`, and its id cannot be reused while the
    // unreaped leader exists. ESRCH (nobody left) is fine.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
}

/// The last lines of `text`, for error messages.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// `Ok` if `python3` runs and has `multiprocessing`; otherwise why not.
pub fn available() -> Result<(), String> {
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-c", "import multiprocessing, json, signal"]);
    let out = run_bounded(&mut cmd, Duration::from_secs(30))?;
    if !out.success {
        return Err(format!("`{PYTHON} -c 'import multiprocessing'` failed ({}): {}", out.status, tail(&out.stderr)));
    }
    Ok(())
}

/// One measurement of the script.
struct PyProbe {
    /// The script's name for it.
    measurement: &'static str,
    mechanism: &'static str,
    variant: &'static str,
    unit: Unit,
}

impl Probe for PyProbe {
    fn key(&self) -> Key {
        Key { section: Section::Python, mechanism: self.mechanism.into(), variant: self.variant.into() }
    }
    fn unit(&self) -> Unit {
        self.unit
    }
    fn sample(&mut self, quick: bool) -> Result<Sample, String> {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script()).arg(self.measurement);
        if quick {
            cmd.arg("quick");
        }
        let out = run_bounded(&mut cmd, DEADLINE)?;
        if !out.success {
            return Err(format!("mp_bench.py {} failed ({}): {}", self.measurement, out.status, tail(&out.stderr)));
        }
        let line = out.stdout.lines().last().unwrap_or("");
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("mp_bench.py printed {line:?}, not JSON: {e}"))?;
        if v["measurement"] != self.measurement || v["unit"] != self.unit.label().replace('µ', "u") {
            return Err(format!("mp_bench.py answered {line:?} for {} in {}", self.measurement, self.unit.label()));
        }
        let value = v["value"].as_f64().filter(|x| x.is_finite() && *x > 0.0);
        let value = value.ok_or_else(|| format!("mp_bench.py gave no positive value: {line:?}"))?;
        Ok(Sample { value, p50: v["p50"].as_f64(), p99: v["p99"].as_f64() })
    }
}

/// Section 6's probes; the caller checks [`available`] first.
pub fn probes() -> Vec<Box<dyn Probe>> {
    vec![
        Box::new(PyProbe {
            measurement: "lock",
            mechanism: "Python multiprocessing.Lock",
            variant: "uncontended",
            unit: Unit::NanosPerOp,
        }),
        Box::new(PyProbe {
            measurement: "event",
            mechanism: "Python multiprocessing.Event",
            variant: "unpinned",
            unit: Unit::MicrosPerOp,
        }),
        Box::new(PyProbe {
            measurement: "pipe",
            mechanism: "Python multiprocessing.Pipe",
            variant: "64 B",
            unit: Unit::MsgsPerSec,
        }),
    ]
}

/// The rows of the "Python vs shmsync" table: a Python mechanism and
/// variant, and the shmsync row to set beside it (section, mechanism, and a
/// word its variant should contain, "" for any).
pub const COMPARISONS: [(&str, Section, &str, &str); 4] = [
    ("Python multiprocessing.Lock", Section::Uncontended, "shmsync Lock", ""),
    ("Python multiprocessing.Event", Section::Handoff, "shmsync Event", "unpinned"),
    ("Python multiprocessing.Pipe", Section::Messages, "shmsync Connection", "64 B"),
    ("Python multiprocessing.Pipe", Section::Messages, "shmsync Queue", "64 B"),
];

/// Runs the script `name` beside this file with `args`, bounded as the
/// probes above are, and returns its last stdout line as JSON.
#[cfg_attr(not(feature = "connection"), allow(dead_code))]
pub fn run_json(name: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ipc_cost").join(name)).args(args);
    let out = run_bounded(&mut cmd, DEADLINE)?;
    if !out.success {
        return Err(format!("{name} {} failed ({}): {}", args.join(" "), out.status, tail(&out.stderr)));
    }
    let line = out.stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("{name} printed {line:?}, not JSON: {e}"))
}
