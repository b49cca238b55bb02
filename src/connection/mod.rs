//! Connections between processes that do not share a parent, by address
//! (Python's `multiprocessing.connection`): a [`Listener`] on a Unix socket
//! path, an abstract Unix name or a TCP `host:port`, and [`Client`]s that
//! connect to it. Both give the same [`Connection`] as [`pipe`](crate::pipe),
//! with the same framing, limits and errors, and with
//! [`send_fd`](Connection::send_fd) over Unix sockets.
//!
//! - **Authentication.** With an authkey, both sides prove they know it
//!   with a mutual HMAC-SHA256 challenge on fresh random nonces before any
//!   message passes; a wrong key is [`Error::AuthenticationFailed`](crate::Error::AuthenticationFailed)
//!   on both sides. With no key, a listener on a TCP address other hosts
//!   can reach is refused, unless the builder says
//!   [`allow_unauthenticated_remote`](ListenerBuilder::allow_unauthenticated_remote).
//! - **Abuse.** A client that stalls, sends garbage or hangs up during the
//!   handshake is dropped at its deadline ([`HANDSHAKE_TIMEOUT`] by default)
//!   and never delays another client's `accept`.
//! - **What it is not.** This is message passing, not an RPC framework, and
//!   not TLS: the authkey authenticates, it does not encrypt. Across hosts
//!   that you do not trust the network between, run it over a tunnel (SSH
//!   port forwarding, WireGuard, stunnel). Messages are postcard-encoded
//!   serde values, never code, so a peer cannot make you run anything, but
//!   an authenticated peer is trusted to send sane amounts (the frame limit
//!   bounds one message).
//!
//! The module is behind the default-on `connection` feature (it brings
//! `hmac`, `sha2` and `getrandom`), as Python's is always there; build with
//! `default-features = false` to leave it and them out.
//!
//! ```
//! use shmsync::connection::{Client, Listener};
//! // An abstract name: no file to clean up.
//! let name = format!("@doc-connection-{}", std::process::id());
//! let listener = Listener::bind(name.as_str(), Some(b"secret"))?;
//! let server = std::thread::spawn(move || -> shmsync::Result<u64> {
//!     let conn = listener.accept()?;
//!     let (a, b): (u64, u64) = conn.recv()?;
//!     conn.send(&(a + b))?;
//!     Ok(a + b)
//! });
//! let conn = Client::connect(name.as_str(), Some(b"secret"))?;
//! conn.send(&(40u64, 2u64))?;
//! assert_eq!(conn.recv::<u64>()?, 42);
//! assert_eq!(server.join().unwrap()?, 42);
//! # Ok::<(), shmsync::Error>(())
//! ```

mod address;
mod auth;
mod listener;

pub use crate::data::Connection;
pub use address::Address;
pub use listener::{Client, Listener, ListenerBuilder, HANDSHAKE_TIMEOUT};
