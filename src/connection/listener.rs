//! `Listener` (bind, accept) and `Client` (connect).
//!
//! `accept` keeps a list of half-done handshakes and polls the listening
//! socket and all of them at once: a new connection is sent its `Hello` and
//! joins the list; a client's `Reply` is checked as soon as it arrives; a
//! handshake past its deadline, or one that sends garbage or hangs up, is
//! dropped. No single client can hold `accept` up for another.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};

use super::address::Address;
use super::auth::{self, Hello, Reply, Verdict, HANDSHAKE_MAX};
use crate::data::gate::Gate;
use crate::data::pipe::Transport;
use crate::data::{Connection, DEFAULT_MAX_FRAME};
use crate::error::{Error, Result};
use crate::sys::net::{self, Listening};
use crate::sys::socket::poll_timeout;
use crate::sys::time::Deadline;

/// How long a handshake may take, on either side, unless the listener's
/// builder says otherwise.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection accepted but not yet authenticated.
struct Pending {
    conn: Connection,
    nonce: Option<[u8; 32]>,
    deadline: Deadline,
}

/// What a finished handshake came to.
enum Step {
    Done(Connection),
    Refused(Error),
    Dropped(&'static str),
}

/// Listens on an [`Address`] for [`Client`]s (Python's
/// `multiprocessing.connection.Listener`).
///
/// ```
/// use shmsync::connection::{Client, Listener};
/// let listener = Listener::bind("127.0.0.1:0", Some(b"secret"))?;
/// let addr = listener.address().clone();
/// let client = std::thread::spawn(move || -> shmsync::Result<String> {
///     let conn = Client::connect(&addr, Some(b"secret"))?;
///     conn.send(&"hello")?;
///     conn.recv::<String>()
/// });
/// let conn = listener.accept()?;
/// let got: String = conn.recv()?;
/// conn.send(&got.to_uppercase())?;
/// assert_eq!(client.join().unwrap()?, "HELLO");
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct Listener {
    socket: Listening,
    address: Address,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Duration,
    pending: Gate<Vec<Pending>>,
    /// The socket file to remove on drop.
    unlink: Option<PathBuf>,
}

/// Builds a [`Listener`]: `Listener::builder(addr).authkey(k).bind()`.
#[must_use = "a builder does nothing until bind"]
pub struct ListenerBuilder {
    address: Address,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Duration,
    allow_unauthenticated_remote: bool,
}

impl ListenerBuilder {
    /// The shared key both sides prove they know (any length; use at
    /// least 32 random bytes across hosts).
    pub fn authkey(mut self, key: &[u8]) -> Self {
        self.authkey = Some(key.to_vec());
        self
    }

    /// How long a client has to complete the handshake (default
    /// [`HANDSHAKE_TIMEOUT`]); one that takes longer is dropped.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Allows listening on a TCP address other hosts can reach with no
    /// authkey: anyone who can connect then may send you messages. Off by
    /// default, when such a `bind` is `InvalidArgument`.
    pub fn allow_unauthenticated_remote(mut self, allow: bool) -> Self {
        self.allow_unauthenticated_remote = allow;
        self
    }

    /// Binds and listens.
    pub fn bind(self) -> Result<Listener> {
        let name = self.address.to_string();
        let os = |e: std::io::Error| Error::os("bind", &name, e);
        let (socket, address, unlink) = match &self.address {
            Address::Unix(path) => (Listening::unix_path(path).map_err(os)?, self.address.clone(), Some(path.clone())),
            Address::Abstract(n) => (Listening::unix_abstract(n).map_err(os)?, self.address.clone(), None),
            Address::Tcp(a) => {
                if self.authkey.is_none() && !self.allow_unauthenticated_remote && !net::is_loopback(a) {
                    return Err(Error::InvalidArgument {
                        name: name.clone(),
                        detail: "listening on a non-loopback TCP address without an authkey would let any \
                                 host send messages; give an authkey, bind 127.0.0.1, or call \
                                 allow_unauthenticated_remote(true)"
                            .to_string(),
                    });
                }
                let socket = Listening::tcp(a).map_err(os)?;
                let bound = socket.tcp_addr().map_or_else(|| self.address.clone(), Address::from);
                (socket, bound, None)
            }
        };
        Ok(Listener {
            socket,
            address,
            authkey: self.authkey,
            handshake_timeout: self.handshake_timeout,
            pending: Gate::new(Vec::new()),
            unlink,
        })
    }
}

impl Listener {
    /// Listens on `address`, with `authkey` for the handshake (`None`: no
    /// authentication, allowed only for Unix sockets and loopback TCP).
    pub fn bind(address: impl Into<Address>, authkey: Option<&[u8]>) -> Result<Listener> {
        let mut b = Listener::builder(address);
        if let Some(k) = authkey {
            b = b.authkey(k);
        }
        b.bind()
    }

    /// A [`ListenerBuilder`] for `address`.
    pub fn builder(address: impl Into<Address>) -> ListenerBuilder {
        ListenerBuilder {
            address: address.into(),
            authkey: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            allow_unauthenticated_remote: false,
        }
    }

    /// The address it listens on; for TCP port 0, with the port chosen.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Waits for a client and returns its authenticated connection. A
    /// client with the wrong key is `AuthenticationFailed` (call `accept`
    /// again for the next); one that stalls, sends garbage or hangs up is
    /// dropped without an error, and never delays the others.
    pub fn accept(&self) -> Result<Connection> {
        loop {
            if let Some(c) = self.accept_until(None)? {
                return Ok(c);
            }
        }
    }

    /// As [`accept`](Self::accept), waiting at most `timeout`; `Ok(None)`
    /// if no client completed its handshake by then.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Option<Connection>> {
        self.accept_until(Some(&Deadline::after(timeout)))
    }

    fn accept_until(&self, deadline: Option<&Deadline>) -> Result<Option<Connection>> {
        let Some(mut pending) = self.pending.enter(deadline) else { return Ok(None) };
        loop {
            pending.retain(|p| {
                let alive = !p.deadline.has_passed();
                if !alive {
                    log::debug!(
                        "shmsync: {}: dropped a client that did not finish its handshake in time",
                        self.address
                    );
                }
                alive
            });
            // Wait for the listening socket, or any pending handshake, or
            // the nearest handshake deadline, or ours.
            let wake = pending.iter().map(|p| p.deadline).chain(deadline.copied()).min_by_key(|d| d.remaining());
            let (listener_ready, ready) = {
                let mut fds = vec![PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
                fds.extend(pending.iter().map(|p| PollFd::new(p.conn.as_fd(), PollFlags::POLLIN)));
                match nix::poll::poll(&mut fds, poll_timeout(wake.as_ref())) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(Error::os("poll", &self.address.to_string(), e)),
                }
                let r: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
                (r[0], r[1..].to_vec())
            };
            // Handshakes first: they were waiting longest.
            for i in (0..ready.len()).rev() {
                if !ready[i] || !Self::replied(&pending[i]) {
                    continue;
                }
                let p = pending.swap_remove(i);
                match self.finish(p) {
                    Step::Done(c) => return Ok(Some(c)),
                    Step::Refused(e) => return Err(e),
                    Step::Dropped(why) => log::debug!("shmsync: {}: dropped a client: {why}", self.address),
                }
            }
            if listener_ready {
                while let Some(fd) =
                    self.socket.accept().map_err(|e| Error::os("accept", &self.address.to_string(), e))?
                {
                    if let Some(p) = self.start(fd) {
                        pending.push(p);
                    }
                }
            }
            if deadline.is_some_and(|d| d.has_passed()) {
                return Ok(None);
            }
        }
    }

    /// Sends a new connection its `Hello`.
    fn start(&self, fd: OwnedFd) -> Option<Pending> {
        let transport = if self.address.is_unix() { Transport::Unix } else { Transport::Tcp };
        let conn = Connection::new(fd, transport);
        conn.set_max_frame(HANDSHAKE_MAX);
        let nonce = match &self.authkey {
            Some(_) => Some(auth::nonce().ok()?),
            None => None,
        };
        // A fresh socket's buffer is empty: this small frame never blocks.
        conn.send(&Hello::V1 { nonce }).ok()?;
        Some(Pending { conn, nonce, deadline: Deadline::after(self.handshake_timeout) })
    }

    /// Whether the client's whole reply (or its hang-up) has arrived.
    fn replied(p: &Pending) -> bool {
        p.conn.poll(Duration::ZERO).unwrap_or(true)
    }

    /// Takes the client's reply and answers it.
    fn finish(&self, p: Pending) -> Step {
        let reply = match p.conn.recv_timeout::<Reply>(Duration::ZERO) {
            Ok(Some(r)) => r,
            Ok(None) => return Step::Dropped("an incomplete reply"),
            Err(Error::Disconnected) => return Step::Dropped("it hung up"),
            Err(_) => return Step::Dropped("its reply was not a handshake"),
        };
        let peer = self.address.to_string();
        let verdict = match (&self.authkey, p.nonce, reply) {
            (Some(key), Some(ns), Reply::Proof { nonce: nc, tag }) if auth::client_tag_ok(key, &ns, &nc, &tag) => {
                Ok(Verdict::Welcome { tag: Some(auth::server_tag(key, &ns, &nc)) })
            }
            (Some(_), _, Reply::Proof { .. }) => Err("the client's proof does not match this authkey"),
            (None, _, Reply::NoAuth) => Ok(Verdict::Welcome { tag: None }),
            (Some(_), _, _) => Err("the client has no authkey, and this listener requires one"),
            (None, _, _) => Err("the client requires an authkey, and this listener has none"),
        };
        match verdict {
            Ok(v) => {
                if p.conn.send(&v).is_err() {
                    return Step::Dropped("it hung up");
                }
                p.conn.set_max_frame(DEFAULT_MAX_FRAME);
                Step::Done(p.conn)
            }
            Err(reason) => {
                let _ = p.conn.send(&Verdict::Failure);
                Step::Refused(auth::failed(&peer, reason))
            }
        }
    }
}

impl Drop for Listener {
    /// Removes the socket file of a Unix-path listener, as Python's does.
    fn drop(&mut self) {
        if let Some(path) = &self.unlink {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client`).
#[derive(Debug)]
pub struct Client;

impl Client {
    /// Connects to `address` and authenticates with `authkey` (which must
    /// be the listener's, or `None` on both sides). The handshake is
    /// bounded by [`HANDSHAKE_TIMEOUT`]; a listener that does not answer in
    /// time is `AuthenticationFailed`.
    pub fn connect(address: impl Into<Address>, authkey: Option<&[u8]>) -> Result<Connection> {
        Client::connect_until(&address.into(), authkey, &Deadline::after(HANDSHAKE_TIMEOUT), None)
    }

    /// As [`connect`](Self::connect), connecting and authenticating within
    /// `timeout` in all. A connection not made in time (a TCP peer that does
    /// not answer, a Unix listener whose backlog stays full because it does
    /// not accept) is `Error::Os` with `TimedOut`; a listener that accepts
    /// but does not finish the handshake in time is `AuthenticationFailed`.
    pub fn connect_timeout(
        address: impl Into<Address>,
        authkey: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Connection> {
        let deadline = Deadline::after(timeout);
        Client::connect_until(&address.into(), authkey, &deadline, Some(&deadline))
    }

    fn connect_until(
        address: &Address,
        authkey: Option<&[u8]>,
        handshake: &Deadline,
        connect: Option<&Deadline>,
    ) -> Result<Connection> {
        let peer = address.to_string();
        let os = |e: std::io::Error| Error::os("connect", &peer, e);
        let (fd, transport) = match address {
            Address::Unix(path) => (net::connect_unix_path(path, connect).map_err(os)?, Transport::Unix),
            Address::Abstract(n) => (net::connect_unix_abstract(n, connect).map_err(os)?, Transport::Unix),
            Address::Tcp(a) => (net::connect_tcp(a, connect).map_err(os)?, Transport::Tcp),
        };
        let conn = Connection::new(fd, transport);
        conn.set_max_frame(HANDSHAKE_MAX);
        let hello = match conn.recv_timeout::<Hello>(handshake.remaining()) {
            Ok(Some(h)) => h,
            Ok(None) => return Err(auth::failed(&peer, "the listener did not start the handshake in time")),
            Err(Error::Disconnected) => return Err(auth::failed(&peer, "the listener hung up during the handshake")),
            Err(_) => return Err(auth::failed(&peer, "the listener does not speak shmsync's handshake")),
        };
        let Hello::V1 { nonce: ns } = hello;
        let mut sent_nonce = None;
        let reply = match (authkey, ns) {
            (Some(key), Some(ns)) => {
                let nc = auth::nonce()?;
                sent_nonce = Some((ns, nc));
                Reply::Proof { nonce: nc, tag: auth::client_tag(key, &ns, &nc) }
            }
            (None, None) => Reply::NoAuth,
            (Some(_), None) => {
                let _ = conn.send(&Reply::Refuse);
                return Err(auth::failed(&peer, "the listener has no authkey, and this client requires one"));
            }
            (None, Some(_)) => {
                let _ = conn.send(&Reply::Refuse);
                return Err(auth::failed(&peer, "the listener requires an authkey, and this client has none"));
            }
        };
        conn.send(&reply).map_err(|_| auth::failed(&peer, "the listener hung up during the handshake"))?;
        let verdict = match conn.recv_timeout::<Verdict>(handshake.remaining()) {
            Ok(Some(v)) => v,
            Ok(None) => return Err(auth::failed(&peer, "the listener did not answer in time")),
            Err(_) => return Err(auth::failed(&peer, "the listener hung up during the handshake")),
        };
        match (verdict, authkey, sent_nonce) {
            (Verdict::Welcome { tag: Some(tag) }, Some(key), Some((ns, nc)))
                if auth::server_tag_ok(key, &ns, &nc, &tag) => {}
            (Verdict::Welcome { tag: None }, None, None) => {}
            (Verdict::Welcome { .. }, ..) => {
                return Err(auth::failed(&peer, "the listener's proof does not match this authkey"));
            }
            (Verdict::Failure, ..) => return Err(auth::failed(&peer, "the listener rejected this authkey")),
        }
        conn.set_max_frame(DEFAULT_MAX_FRAME);
        Ok(conn)
    }
}
