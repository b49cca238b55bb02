//! Pipes: `let (parent, child) = shmsync::pipe()?` gives two connected ends.
//! A child process sends one message on its end; the parent receives it on
//! the other and prints it.
//!
//! Python's child sends the list `[42, None, 'hello']`. A Rust message is a
//! serde value of one type, so the mixed list becomes the tuple
//! `(42u32, None::<u8>, "hello".to_string())`: `None` needs a type, and the
//! parent names the same tuple type to decode it (postcard is not
//! self-describing). It is printed with `{:?}`.
//!
//! Run: `cargo run --release --example pipe`
//!
//! Expected output:
//! ```text
//! (42, None, "hello")
//! ```

use std::error::Error;
use std::time::Duration;

use shmsync::{pipe, Connection, Process};

const DEADLINE: Duration = Duration::from_secs(10);

/// The message: Python's `[42, None, 'hello']`.
type Message = (u32, Option<u8>, String);

fn f(conn: &Connection) -> shmsync::Result<()> {
    conn.send(&(42u32, None::<u8>, "hello".to_string()))
    // The connection closes when the child exits.
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let (parent_conn, child_conn) = pipe()?;
    // The child's end moves into the child; the parent's copy of it is
    // dropped at `start`, so a child that died would read as `Disconnected`.
    let p = Process::new(move || f(&child_conn));
    p.start()?;
    let message: Message =
        parent_conn.recv_timeout(DEADLINE)?.ok_or_else(|| format!("no message within {DEADLINE:?}"))?;
    println!("{message:?}");
    match p.join_timeout(DEADLINE)? {
        Some(0) => Ok(()),
        Some(code) => Err(format!("{} exited with {code}", p.name()).into()),
        None => {
            p.kill()?;
            p.join()?;
            Err(format!("{} did not end within {DEADLINE:?}", p.name()).into())
        }
    }
}
