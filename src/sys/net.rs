//! Listening and connected stream sockets by address, for
//! `shmsync::connection`: Unix paths, abstract Unix names (Linux), and TCP.
//! Everything here is std's sockets (close-on-exec, no unsafe); this module
//! adds non-blocking accept, connecting with a deadline (Unix connects too,
//! through nix, when the backlog is full), and the checks the
//! listener needs (is an address loopback).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::path::Path;

use super::time::Deadline;

/// A listening socket, non-blocking (accept never waits; callers poll).
pub enum Listening {
    /// `AF_UNIX`, a path or an abstract name.
    Unix(UnixListener),
    /// TCP.
    Tcp(TcpListener),
}

impl Listening {
    /// Binds a Unix socket at `path` (the file must not exist).
    pub fn unix_path(path: &Path) -> io::Result<Listening> {
        let l = UnixListener::bind(path)?;
        l.set_nonblocking(true)?;
        Ok(Listening::Unix(l))
    }

    /// Binds the abstract Unix name `name` (no file; gone with the socket).
    pub fn unix_abstract(name: &[u8]) -> io::Result<Listening> {
        let l = UnixListener::bind_addr(&UnixAddr::from_abstract_name(name)?)?;
        l.set_nonblocking(true)?;
        Ok(Listening::Unix(l))
    }

    /// Binds TCP at `addr` (`host:port`; port 0 picks a free one).
    pub fn tcp(addr: &str) -> io::Result<Listening> {
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(Listening::Tcp(l))
    }

    /// The TCP address actually bound (the port chosen for port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listening::Tcp(l) => l.local_addr().ok(),
            Listening::Unix(_) => None,
        }
    }

    /// Accepts one waiting connection, blocking in nothing: `Ok(None)` if
    /// none is waiting. The new socket is blocking, close-on-exec, and for
    /// TCP has `TCP_NODELAY` (frames are written whole; Nagle would only
    /// delay them).
    pub fn accept(&self) -> io::Result<Option<OwnedFd>> {
        let accepted = match self {
            Listening::Unix(l) => l.accept().and_then(|(s, _)| {
                s.set_nonblocking(false)?;
                Ok(OwnedFd::from(s))
            }),
            Listening::Tcp(l) => l.accept().and_then(|(s, _)| {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                Ok(OwnedFd::from(s))
            }),
        };
        match accepted {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            // The peer gave up between SYN and accept: nothing to accept.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl std::os::fd::AsFd for Listening {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Listening::Unix(l) => l.as_fd(),
            Listening::Tcp(l) => l.as_fd(),
        }
    }
}

/// Connects to the Unix socket at `path`, within `deadline` if given.
pub fn connect_unix_path(path: &Path, deadline: Option<&Deadline>) -> io::Result<OwnedFd> {
    connect_unix(&UnixAddr::from_pathname(path)?, deadline)
}

/// Connects to the abstract Unix name `name`, within `deadline` if given.
pub fn connect_unix_abstract(name: &[u8], deadline: Option<&Deadline>) -> io::Result<OwnedFd> {
    connect_unix(&UnixAddr::from_abstract_name(name)?, deadline)
}

/// A Unix connect completes at once unless the listener's backlog is full
/// (it is not accepting): then a blocking connect sleeps until there is room,
/// and a non-blocking one fails with `EAGAIN` and must be tried again (the
/// socket never polls ready for it). With a deadline, it is tried again in
/// growing pauses until then.
fn connect_unix(addr: &UnixAddr, deadline: Option<&Deadline>) -> io::Result<OwnedFd> {
    let Some(deadline) = deadline else {
        return UnixStream::connect_addr(addr).map(OwnedFd::from);
    };
    let mut pause = std::time::Duration::from_micros(100);
    loop {
        let stream = nonblocking_unix_connect(addr)?;
        match stream {
            Some(s) => {
                s.set_nonblocking(false)?;
                return Ok(OwnedFd::from(s));
            }
            None if deadline.has_passed() => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the listener's backlog stayed full"));
            }
            None => {
                std::thread::sleep(pause.min(deadline.remaining()));
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// One non-blocking connect: `None` if the backlog is full.
fn nonblocking_unix_connect(addr: &UnixAddr) -> io::Result<Option<UnixStream>> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr as NixUnixAddr};
    use std::os::fd::AsRawFd;
    let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
    let target = match (addr.as_pathname(), addr.as_abstract_name()) {
        (Some(path), _) => NixUnixAddr::new(path)?,
        (None, Some(name)) => NixUnixAddr::new_abstract(name)?,
        (None, None) => return Err(io::Error::new(io::ErrorKind::InvalidInput, "an unnamed Unix address")),
    };
    match connect(fd.as_raw_fd(), &target) {
        Ok(()) => Ok(Some(UnixStream::from(fd))),
        Err(nix::errno::Errno::EAGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Connects to TCP `addr`, trying each address it resolves to until one
/// answers, each attempt bounded by what is left of `deadline`. The socket
/// gets `TCP_NODELAY`.
pub fn connect_tcp(addr: &str, deadline: Option<&Deadline>) -> io::Result<OwnedFd> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to no address"));
    for a in addr.to_socket_addrs()? {
        let attempt = match deadline {
            None => TcpStream::connect(a),
            Some(d) => {
                let left = d.remaining();
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {addr} timed out")));
                }
                TcpStream::connect_timeout(&a, left)
            }
        };
        match attempt {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(OwnedFd::from(s));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Whether every address `addr` (`host:port`) resolves to is a loopback
/// address. An unresolvable address is not.
pub fn is_loopback(addr: &str) -> bool {
    match addr.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}
