//! Python's `multiprocessing`, measured by the `mp_bench.py` script that
//! ships beside this file. Each section makes its Python rows with
//! [`Session::probe`], beside the shmsync row each is the counterpart of,
//! and passes the same counts its own probes use, so both do the same work.
//!
//! A section's Python rows share one `python3 mp_bench.py --serve` process,
//! started at its first sample and ended when the section's probes drop: a
//! sample is one request line (the measurement and its arguments, as a JSON
//! array) and one JSON reply line, so the interpreter's start-up (a third of
//! a second) is paid once per section, not once per sample. The reply holds
//! the value in the probe's unit, the operations timed, per-operation
//! percentiles where each operation is timed, the CPU time of every Python
//! process inside its timed window, and a contended lock's fairness. The CPU
//! time is checked against the whole measurement's, which the server takes
//! from `getrusage` of itself and of its reaped children.
//!
//! The server runs in its own process group, each request under its own
//! `alarm` there and a deadline here. When the session ends (or a request
//! fails) the server's stdin is closed, it gets a few seconds to exit, and
//! then the whole group is killed before the leader is reaped, so no
//! multiprocessing child of it can outlive the section. The script uses the
//! fork start method, whose semaphores are unlinked at creation, so nothing
//! is left in /dev/shm either.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::CpuTimes;
use crate::model::{Cpu, Fairness, Key, Percentiles, Probe, Sample, Unit};

/// How long one request to the script may take before it is killed (its
/// own alarm is at 80 s).
const DEADLINE: Duration = Duration::from_secs(90);

/// How long a server whose stdin was closed may take to exit.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The interpreter, looked up on `PATH`.
const PYTHON: &str = "python3";

/// The script, shipped with the bench.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ipc_cost/mp_bench.py")
}

/// What a finished subprocess left: its exit status and its stderr.
struct Output {
    success: bool,
    status: String,
    stderr: String,
}

/// Runs `cmd` in a process group of its own, waits for it at most
/// `deadline`, then kills whatever is left of the group and reaps the
/// leader. Errors if it could not start or overran.
fn run_bounded(cmd: &mut Command, deadline: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdout(Stdio::null())
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
    // The leader has exited and its group is dead, so the pipe is at end of
    // file (what it writes, an import error at most, fits a pipe buffer).
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).map_err(|e| format!("read {PYTHON}'s stderr: {e}"))?;
    }
    if overran {
        return Err(format!("{PYTHON} still running after {deadline:?}; killed. stderr: {}", tail(&stderr)));
    }
    Ok(Output { success: status.success(), status: status.to_string(), stderr })
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

/// A running `mp_bench.py --serve`.
struct Server {
    child: Child,
    /// Closed (taken) to ask the server to exit.
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    /// What was read past the last reply.
    pending: Vec<u8>,
}

impl Server {
    fn start() -> Result<Server, String> {
        let mut child = Command::new(PYTHON)
            .arg(script())
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // A failing child's traceback goes straight to our stderr; the
            // server's own errors come back in its replies.
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("could not start {PYTHON}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        Ok(Server { child, stdin, stdout, pending: Vec::new() })
    }

    /// Sends one request and waits at most `deadline` for its reply line.
    fn ask(&mut self, args: &[String], deadline: Duration) -> Result<String, String> {
        let request = serde_json::to_string(args).map_err(|e| e.to_string())? + "\n";
        let stdin = self.stdin.as_mut().ok_or("the server's stdin is closed")?;
        stdin
            .write_all(request.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("write to {PYTHON}: {e} (did it die? see its stderr above)"))?;
        let end = Instant::now() + deadline;
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                return String::from_utf8(line).map_err(|e| format!("{PYTHON} wrote non-UTF-8: {e}"));
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("{PYTHON} gave no answer within {deadline:?} to {}", request.trim_end()));
            }
            let mut fd = libc::pollfd { fd: self.stdout.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: `fd` is one live pollfd; the timeout is bounded.
            let n = unsafe { libc::poll(&mut fd, 1, left.as_millis().clamp(1, 60_000) as i32) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(format!("poll {PYTHON}'s stdout: {err}"));
                }
                continue;
            }
            if n == 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match self.stdout.read(&mut buf) {
                Ok(0) => {
                    return Err(format!(
                        "{PYTHON} exited during {} (its alarm, or see its stderr above)",
                        request.trim_end()
                    ))
                }
                Ok(k) => self.pending.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read {PYTHON}'s stdout: {e}")),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // End of input asks the server to exit; it gets a moment to.
        drop(self.stdin.take());
        let end = Instant::now() + EXIT_GRACE;
        while !exited_unreaped(&self.child).unwrap_or(true) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2));
        }
        kill_group(&self.child);
        let _ = self.child.wait();
    }
}

/// `Ok` if `python3` runs and has `multiprocessing`; otherwise why not.
/// Asked once per run.
pub fn available() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER
        .get_or_init(|| {
            let mut cmd = Command::new(PYTHON);
            cmd.args(["-c", "import multiprocessing, json, resource, signal"]);
            let out = run_bounded(&mut cmd, Duration::from_secs(30))?;
            if !out.success {
                return Err(format!(
                    "`{PYTHON} -c 'import multiprocessing'` failed ({}): {}",
                    out.status,
                    tail(&out.stderr)
                ));
            }
            Ok(())
        })
        .clone()
}

/// The note a section prints when Python is not available.
fn missing_note(why: &str) -> String {
    format!("The Python rows were not measured: {why}")
}

/// What a section's `setup` starts its Python rows with: the [`Session`]
/// they share if Python is [`available`]; if not, `None`, and the note that
/// says why they were not measured is added to `notes`.
pub fn session(notes: &mut Vec<String>) -> Option<Session> {
    match available() {
        Ok(()) => Some(Session::default()),
        Err(why) => {
            notes.push(missing_note(&why));
            None
        }
    }
}

/// The Python rows of one section: they share one server, started at the
/// first sample and stopped when the last of them drops.
#[derive(Clone, Default)]
pub struct Session(Rc<RefCell<Option<Server>>>);

impl Session {
    /// A Python row of `section`: `mechanism` in `variant`, measured by
    /// `mp_bench.py` with `args` (the measurement's name first) in `unit`,
    /// and set beside the shmsync row `counterpart` of the same variant in
    /// the "Python vs shmsync" table.
    pub fn probe(
        &self,
        section: &'static str,
        mechanism: &str,
        variant: &str,
        unit: Unit,
        counterpart: &str,
        args: &[String],
    ) -> Box<dyn Probe> {
        Box::new(PyProbe {
            key: Key { section, mechanism: mechanism.into(), variant: variant.into() },
            unit,
            args: args.to_vec(),
            counterpart: counterpart.into(),
            session: self.clone(),
        })
    }

    /// Runs one request, starting the server if need be; a failed request
    /// stops the server (a later one would start afresh).
    fn ask(&self, args: &[String]) -> Result<String, String> {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            *slot = Some(Server::start()?);
        }
        let answer = slot.as_mut().map_or(Err("no server".to_string()), |s| s.ask(args, DEADLINE));
        if answer.is_err() {
            *slot = None;
        }
        answer
    }
}

/// One measurement of the script.
struct PyProbe {
    key: Key,
    unit: Unit,
    /// The script's arguments: the measurement's name, then its own.
    args: Vec<String>,
    counterpart: String,
    session: Session,
}

impl Probe for PyProbe {
    fn key(&self) -> Key {
        self.key.clone()
    }
    fn unit(&self) -> Unit {
        self.unit
    }
    fn counterpart(&self) -> Option<String> {
        Some(self.counterpart.clone())
    }
    fn sample(&mut self, _quick: bool) -> Result<Sample, String> {
        let measurement = &self.args[0];
        let answer = self.session.ask(&self.args)?;
        let line = answer.trim_end();
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("mp_bench.py printed {line:?}, not JSON: {e}"))?;
        if let Some(error) = v["error"].as_str() {
            return Err(format!("mp_bench.py {} failed: {error}", self.args.join(" ")));
        }
        if v["measurement"] != measurement.as_str() || v["unit"] != self.unit.label().replace('µ', "u") {
            return Err(format!("mp_bench.py answered {line:?} for {measurement} in {}", self.unit.label()));
        }
        let positive = |name: &str| v[name].as_f64().filter(|x| x.is_finite() && *x > 0.0);
        let value = positive("value").ok_or_else(|| format!("mp_bench.py gave no positive value: {line:?}"))?;
        let ops = v["ops"].as_u64().filter(|&n| n > 0).ok_or_else(|| format!("mp_bench.py gave no ops: {line:?}"))?;
        let mut sample = Sample::new(value);
        if let (Some(p50), Some(p99), Some(p999)) = (positive("p50"), positive("p99"), positive("p999")) {
            sample = sample.with_percentiles(Percentiles { p50, p99, p999 });
        }
        let ns = |name: &str| v[name].as_u64();
        let cpu = match (ns("cpu_user_ns"), ns("cpu_sys_ns"), ns("cpu_ns")) {
            (Some(user_ns), Some(sys_ns), _) => Cpu::per_op(CpuTimes { user_ns, sys_ns }, ops),
            (_, _, Some(total)) => Cpu::total_per_op(total, ops),
            _ => return Err(format!("mp_bench.py reported no CPU time: {line:?}")),
        };
        let lifetime = ns("lifetime_ns").ok_or_else(|| format!("mp_bench.py reported no lifetime: {line:?}"))?;
        Cpu::check_within((cpu.ns_per_op * ops as f64) as u64, CpuTimes { user_ns: lifetime, sys_ns: 0 })?;
        sample = sample.with_cpu(cpu);
        if let Some(f) = v.get("fairness").filter(|f| !f.is_null()) {
            let num = |name: &str| f[name].as_f64().ok_or_else(|| format!("fairness without {name}: {line:?}"));
            sample = sample.with_fairness(Fairness {
                share_min: num("share_min")?,
                share_max: num("share_max")?,
                longest_run: num("longest_run")? as u64,
                mean_run: num("mean_run")?,
            });
        }
        Ok(sample)
    }
}

/// Runs the script `name` beside this file with `args`, bounded as the
/// servers are (a process group of its own, killed whole at the deadline),
/// and returns its last stdout line as JSON.
#[cfg_attr(not(feature = "connection"), allow(dead_code))]
pub fn run_json(name: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let mut child = Command::new(PYTHON)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ipc_cost").join(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("could not start {PYTHON}: {e}"))?;
    let end = Instant::now() + DEADLINE;
    while !exited_unreaped(&child)? {
        if Instant::now() >= end {
            kill_group(&child);
            let _ = child.wait();
            return Err(format!("{name} still running after {DEADLINE:?}; killed"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    kill_group(&child);
    let status = child.wait().map_err(|e| format!("wait for {PYTHON}: {e}"))?;
    // Exited, group dead: both pipes are at end of file; the script prints
    // one line of JSON and, at most, a short error.
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out).map_err(|e| format!("read {PYTHON}'s stdout: {e}"))?;
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err).map_err(|e| format!("read {PYTHON}'s stderr: {e}"))?;
    }
    if !status.success() {
        return Err(format!("{name} {} failed ({status}): {}", args.join(" "), tail(&err)));
    }
    let line = out.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("{name} printed {line:?}, not JSON: {e}"))
}
