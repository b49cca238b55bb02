//! The mechanisms of `benches/connection.rs` and the study's `connections` section,
//! for [`super::messages::stream`]: a `Listener`/`Client` connection (Unix
//! or TCP), and a plain `TcpStream` pair carrying `Connection`'s frames.

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use serde_bytes::ByteBuf;
use shmsync::connection::{Client, Listener};
use shmsync::Connection;

use super::messages::Mechanism;

const AUTHKEY: &[u8] = b"bench";

/// Two ends of a connection: the producer sends on `tx`, the consumer
/// receives on `rx`.
pub struct Pair {
    tx: Connection,
    rx: Connection,
}

impl Mechanism for Pair {
    fn send(&self, msg: &ByteBuf) {
        self.tx.send_bytes(msg).expect("Connection::send_bytes");
    }
    fn recv(&self, out: &mut Vec<u8>) {
        *out = self.rx.recv_bytes().expect("Connection::recv_bytes");
    }
    fn is_drained(&self) -> bool {
        !self.rx.poll(Duration::ZERO).expect("Connection::poll")
    }
}

/// A listener on `addr` and a client of it, authenticated.
pub fn listener_pair(addr: &str) -> Pair {
    let listener = Listener::bind(addr, Some(AUTHKEY)).expect("Listener::bind");
    let bound = listener.address().clone();
    let client = std::thread::spawn(move || Client::connect(&bound, Some(AUTHKEY)).expect("Client::connect"));
    let rx = listener.accept().expect("Listener::accept");
    Pair { tx: client.join().expect("the client thread"), rx }
}

/// A plain TCP stream pair carrying `Connection`'s frames.
pub struct TcpFramed {
    tx: TcpStream,
    rx: TcpStream,
}

impl TcpFramed {
    pub fn new() -> TcpFramed {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let tx = TcpStream::connect(l.local_addr().expect("local_addr")).expect("connect");
        let (rx, _) = l.accept().expect("accept");
        tx.set_nodelay(true).expect("nodelay");
        rx.set_nodelay(true).expect("nodelay");
        TcpFramed { tx, rx }
    }
}

impl Mechanism for TcpFramed {
    fn send(&self, msg: &ByteBuf) {
        let header = (msg.len() as u64).to_le_bytes();
        let total = header.len() + msg.len();
        let mut sent = 0;
        let mut tx = &self.tx;
        while sent < total {
            let h = &header[sent.min(header.len())..];
            let p = &msg[sent.saturating_sub(header.len())..];
            sent += tx.write_vectored(&[IoSlice::new(h), IoSlice::new(p)]).expect("writev");
        }
    }
    fn recv(&self, out: &mut Vec<u8>) {
        let mut rx = &self.rx;
        let mut header = [0u8; 8];
        rx.read_exact(&mut header).expect("read the header");
        out.clear();
        out.resize(u64::from_le_bytes(header) as usize, 0);
        rx.read_exact(out).expect("read the payload");
    }
    fn is_drained(&self) -> bool {
        self.rx.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 1];
        let drained = matches!(self.rx.peek(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock);
        self.rx.set_nonblocking(false).expect("blocking");
        drained
    }
}
