//! Passing handles: an acceptor takes TCP connections and hands each one,
//! as an open descriptor, to a pool worker that serves it, as Python's
//! `multiprocessing.reduction.send_handle` / `recv_handle` do. The workers
//! reach the acceptor over a Unix-socket `Listener` (an abstract name, with
//! an authkey); `send_fd` passes the accepted socket with `SCM_RIGHTS`, and
//! the worker owns it from then on.
//!
//! Run: `cargo run --release --example handle_passing`
//!
//! Expected output (which worker serves which client varies; the replies
//! are printed by client number):
//! ```text
//! acceptor: handed 4 connections to 2 pool workers
//! client 1 got: HELLO FROM CLIENT 1
//! client 2 got: HELLO FROM CLIENT 2
//! client 3 got: HELLO FROM CLIENT 3
//! client 4 got: HELLO FROM CLIENT 4
//! ```

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use shmsync::connection::{Client, Listener};
use shmsync::Pool;

const AUTHKEY: &[u8] = b"between the acceptor and its workers";
const DEADLINE: Duration = Duration::from_secs(10);
const CLIENTS: u32 = 4;

/// A pool task: ask the acceptor at `handoff` for a connection, then serve
/// it (one line in, that line in capitals out). Returns the line served.
fn serve_one(handoff: String) -> String {
    let serve = || -> Result<String, Box<dyn Error>> {
        let acceptor = Client::connect_timeout(handoff.as_str(), Some(AUTHKEY), DEADLINE)?;
        let fd = acceptor.recv_fd_timeout(DEADLINE)?.ok_or("no connection handed over")?;
        let stream = TcpStream::from(fd);
        stream.set_read_timeout(Some(DEADLINE))?;
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line)?;
        (&stream).write_all(line.to_uppercase().as_bytes())?;
        Ok(line.trim_end().to_string())
    };
    serve().unwrap_or_else(|e| panic!("serving a handed-over connection: {e}"))
}

/// A TCP client: says hello, reads the answer.
fn client(port: u16, id: u32) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(DEADLINE))?;
    writeln!(stream, "hello from client {id}")?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    Ok(reply.trim_end().to_string())
}

/// `accept` with a deadline, on a non-blocking listener.
fn accept_within(listener: &TcpListener, deadline: Instant) -> Result<TcpStream, Box<dyn Error>> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let handoff_address = format!("@shmsync-example-handoff-{}", std::process::id());
    let handoff = Listener::bind(handoff_address.as_str(), Some(AUTHKEY))?;
    let public = TcpListener::bind("127.0.0.1:0")?;
    public.set_nonblocking(true)?;
    let port = public.local_addr()?.port();

    // The workers: each task takes one connection from the acceptor.
    let pool = Pool::new(2)?;
    let served = pool.map_async(serve_one, vec![handoff_address.clone(); CLIENTS as usize]);

    // The clients, from threads of this process.
    let clients: Vec<_> = (1..=CLIENTS).map(|id| std::thread::spawn(move || client(port, id))).collect();

    // The acceptor: each accepted socket goes to the next worker that asks.
    let deadline = Instant::now() + DEADLINE;
    for _ in 0..CLIENTS {
        let stream = accept_within(&public, deadline)?;
        let worker = handoff.accept_timeout(DEADLINE)?.ok_or("no worker asked for a connection")?;
        worker.send_fd(&stream)?;
        // The worker holds it now; ours closes here.
    }
    println!("acceptor: handed {CLIENTS} connections to 2 pool workers");

    let mut served = served.get_timeout(DEADLINE)?.ok_or("the workers did not finish in time")?;
    served.sort();
    for (id, c) in (1..=CLIENTS).zip(clients) {
        let reply = c.join().map_err(|_| "a client thread panicked")??;
        println!("client {id} got: {reply}");
    }
    let expected: Vec<String> = (1..=CLIENTS).map(|id| format!("hello from client {id}")).collect();
    if served != expected {
        return Err(format!("the workers served {served:?}").into());
    }
    pool.close();
    pool.join()?;
    Ok(())
}
