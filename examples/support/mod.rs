//! What several examples share: waiting for a child with a deadline, as every
//! wait in an example has one. Not an example itself (no `main.rs`).

use std::error::Error;
use std::time::Duration;

use shmsync::Process;

/// How long an example waits for a child before giving up.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(10);

/// Joins `p` within [`JOIN_DEADLINE`] and checks that it exited with 0; a
/// child that overstays is killed, so nothing is left behind.
pub fn join_ok(p: &Process) -> Result<(), Box<dyn Error>> {
    match p.join_timeout(JOIN_DEADLINE)? {
        Some(0) => Ok(()),
        Some(code) => Err(format!("{} exited with {code}", p.name()).into()),
        None => {
            p.kill()?;
            p.join()?;
            Err(format!("{} did not end within {JOIN_DEADLINE:?}", p.name()).into())
        }
    }
}
