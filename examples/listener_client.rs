//! Listeners and Clients: a server and two independent client programs
//! exchange typed messages over a Unix socket, authenticated with a shared
//! key, as `multiprocessing.connection.Listener(address, authkey=...)` and
//! `Client(address, authkey=...)` do in Python. The clients are started with
//! the spawn start method, so each is this binary executed anew: they share
//! nothing with the server but the address and the key. A third program
//! with the wrong key is refused.
//!
//! The address is an abstract Unix name (`@...`), which leaves no file
//! behind; `"/tmp/x.sock"` (a path) or `"127.0.0.1:6000"` (TCP) work the
//! same way.
//!
//! Run: `cargo run --release --example listener_client`
//!
//! Expected output (the server accepts the clients in whatever order they
//! come, then serves them by number, so the output is always this):
//! ```text
//! server: 2 clients authenticated, 1 refused (wrong authkey)
//! server: client 1 asks 3 + 4, answers 7
//! server: client 1 asks upper("spam"), answers "SPAM"
//! server: client 1 says goodbye
//! server: client 2 asks 30 + 40, answers 70
//! server: client 2 asks upper("eggs"), answers "EGGS"
//! server: client 2 says goodbye
//! ```

use std::error::Error;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shmsync::connection::{Client, Connection, Listener};
use shmsync::process::{entry, Entry};
use shmsync::Process;

#[path = "support/mod.rs"]
mod support;
use support::join_ok;

const AUTHKEY: &[u8] = b"a key both programs know";
const DEADLINE: Duration = Duration::from_secs(10);

/// What a client says. One enum per channel: frames carry no type.
#[derive(Serialize, Deserialize, Debug)]
enum Request {
    Hello { client: u32 },
    Add(i64, i64),
    Upper(String),
    Goodbye,
}

/// What the server answers.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Reply {
    Sum(i64),
    Text(String),
}

/// A client program: connect, ask two things, check the answers, leave.
fn client((address, id): (String, u32)) {
    let run = || -> shmsync::Result<()> {
        let conn = Client::connect_timeout(address.as_str(), Some(AUTHKEY), DEADLINE)?;
        let scale = 10i64.pow(id - 1);
        conn.send(&Request::Hello { client: id })?;
        conn.send(&Request::Add(3 * scale, 4 * scale))?;
        let sum = conn.recv_timeout::<Reply>(DEADLINE)?;
        conn.send(&Request::Upper(if id == 1 { "spam" } else { "eggs" }.to_string()))?;
        let text = conn.recv_timeout::<Reply>(DEADLINE)?;
        conn.send(&Request::Goodbye)?;
        assert!(matches!(sum, Some(Reply::Sum(_))) && matches!(text, Some(Reply::Text(_))));
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("client {id}: {e}");
        shmsync::process::exit(1);
    }
}

/// A program with the wrong key: it must be refused.
fn intruder(address: String) {
    match Client::connect_timeout(address.as_str(), Some(b"a guess"), DEADLINE) {
        Err(shmsync::Error::AuthenticationFailed { .. }) => {}
        other => {
            eprintln!("intruder: expected AuthenticationFailed, got {other:?}");
            shmsync::process::exit(1);
        }
    }
}

/// The functions this example starts with the spawn method.
pub fn spawn_entries() -> Vec<Entry> {
    vec![entry("listener_client.client", client), entry("listener_client.intruder", intruder)]
}

/// Serves one client to the end, printing what it asks.
fn serve(id: u32, conn: &Connection) -> Result<(), Box<dyn Error>> {
    loop {
        let request: Request = conn.recv_timeout(DEADLINE)?.ok_or("a client went quiet")?;
        match request {
            Request::Add(a, b) => {
                println!("server: client {id} asks {a} + {b}, answers {}", a + b);
                conn.send(&Reply::Sum(a + b))?;
            }
            Request::Upper(s) => {
                println!("server: client {id} asks upper({s:?}), answers {:?}", s.to_uppercase());
                conn.send(&Reply::Text(s.to_uppercase()))?;
            }
            Request::Goodbye => {
                println!("server: client {id} says goodbye");
                return Ok(());
            }
            Request::Hello { .. } => return Err("a second hello".into()),
        }
    }
}

pub fn main() -> Result<(), Box<dyn Error>> {
    shmsync::process::entries(&spawn_entries());

    let address = format!("@shmsync-example-{}", std::process::id());
    let listener = Listener::bind(address.as_str(), Some(AUTHKEY))?;
    let programs = vec![
        Process::spawn("listener_client.client", &(address.clone(), 1u32))?,
        Process::spawn("listener_client.client", &(address.clone(), 2u32))?,
        Process::spawn("listener_client.intruder", &address)?,
    ];
    for p in &programs {
        p.start()?;
    }
    // Accept until both clients are in; the intruder is refused on the way.
    let mut clients = Vec::new();
    let mut refused = 0;
    while clients.len() < 2 {
        match listener.accept_timeout(DEADLINE) {
            Ok(Some(conn)) => {
                let Some(Request::Hello { client }) = conn.recv_timeout(DEADLINE)? else {
                    return Err("a client did not say hello".into());
                };
                clients.push((client, conn));
            }
            Ok(None) => return Err("the clients did not connect in time".into()),
            Err(shmsync::Error::AuthenticationFailed { .. }) => refused += 1,
            Err(e) => return Err(e.into()),
        }
    }
    // The intruder may come after the clients: wait for its attempt too.
    while refused == 0 {
        match listener.accept_timeout(DEADLINE) {
            Err(shmsync::Error::AuthenticationFailed { .. }) => refused += 1,
            Ok(None) => return Err("the intruder never knocked".into()),
            other => return Err(format!("unexpected: {other:?}").into()),
        }
    }
    println!("server: {} clients authenticated, {refused} refused (wrong authkey)", clients.len());
    clients.sort_by_key(|(id, _)| *id);
    for (id, conn) in &clients {
        serve(*id, conn)?;
    }
    for p in &programs {
        join_ok(p)?;
    }
    Ok(())
}
