//! The spawn start method: re-execute the current binary and run an entry
//! registered at the top of `main` — the Rust form of Python's
//! `if __name__ == '__main__':` guard.
//!
//! The parent passes the entry's name, the child's name, and the encoded
//! arguments in one environment variable; the child removes it at once, so
//! programs it starts in turn do not inherit it.

use std::os::unix::process::CommandExt;
use std::process::Command;

use super::{children, identity};
use crate::error::{Error, Result};

const ENV: &str = "SHMSYNC_SPAWN";

type Run = Box<dyn Fn(&[u8]) -> std::result::Result<(), String> + Send + Sync>;

/// A function the spawn start method can run, by name. Make one with
/// [`entry`].
pub struct Entry {
    name: &'static str,
    run: Run,
}

/// Registers `f` under `name` for [`Process::spawn`](crate::Process::spawn).
/// Its argument type must match what the spawning side passes.
pub fn entry<T: serde::de::DeserializeOwned + 'static>(name: &'static str, f: fn(T)) -> Entry {
    let run: Run = Box::new(move |bytes| {
        let args = postcard::from_bytes::<T>(bytes).map_err(|e| format!("the arguments do not decode: {e}"))?;
        f(args);
        Ok(())
    });
    Entry { name, run }
}

/// The entry guard: call it first thing in `main`. In a process started with
/// [`Process::spawn`](crate::Process::spawn) it runs the requested entry and
/// exits; everywhere else it returns at once.
///
/// ```no_run
/// fn worker(n: u32) {
///     println!("Worker: {n}");
/// }
///
/// fn main() -> shmsync::Result<()> {
///     shmsync::process::entries(&[shmsync::process::entry("worker", worker)]);
///     let p = shmsync::Process::spawn("worker", &7u32)?;
///     p.start()?;
///     p.join()?;
///     Ok(())
/// }
/// ```
pub fn entries(entries: &[Entry]) {
    if let Some((i, e)) = entries.iter().enumerate().find(|(i, e)| entries[..*i].iter().any(|f| f.name == e.name)) {
        report!("shmsync: spawn entry {:?} is registered twice (at {i}); the first one runs", e.name);
    }
    let Ok(request) = std::env::var(ENV) else { return };
    std::env::remove_var(ENV);
    let mut parts = request.splitn(3, '\u{1f}');
    let (entry, name, hex) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    identity::become_child(name);
    let code = match (entries.iter().find(|e| e.name == entry), decode_hex(hex)) {
        (Some(e), Some(args)) => super::run_as_child(|| match (e.run)(&args) {
            Ok(()) => 0,
            Err(msg) => {
                report!("Process {name}: {msg}");
                1
            }
        }),
        (None, _) => {
            report!("Process {name}: no spawn entry named {entry:?} is registered in this binary");
            1
        }
        (_, None) => {
            report!("Process {name}: the spawn request is malformed");
            1
        }
    };
    super::exit_child(code)
}

/// Starts the binary again as the child `name`, to run `entry(args)`.
pub fn start(entry: &str, args: &[u8], name: &str, daemon: bool) -> Result<u32> {
    let exe = std::env::current_exe().map_err(|e| Error::os("current_exe", name, e))?;
    let mut cmd = Command::new(exe);
    cmd.env(ENV, format!("{entry}\u{1f}{name}\u{1f}{}", encode_hex(args)));
    if daemon {
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and calls only
        // prctl and getppid, which are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if crate::sys::child::die_with_parent(nix::sys::signal::Signal::SIGKILL, parent) {
                    Ok(())
                } else {
                    Err(std::io::Error::other("the parent died before the daemon started"))
                }
            });
        }
    }
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let child = cmd.spawn().map_err(|e| Error::os("spawn", name, e))?;
    let pid = child.id();
    // The registry reaps it; std's handle would not, so dropping it is fine.
    drop(child);
    children::register(pid, name, daemon);
    Ok(pid)
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(decode_hex(&encode_hex(&bytes)).unwrap(), bytes);
        assert_eq!(decode_hex(""), Some(vec![]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
