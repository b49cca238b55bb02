//! Where a [`Listener`](super::Listener) listens and a
//! [`Client`](super::Client) connects.

use std::path::PathBuf;

/// An address: a Unix socket path, an abstract Unix name, or TCP
/// `host:port`.
///
/// From a string (`"…".into()` or `parse()`):
/// - `@name` is the abstract Unix name `name` (Linux; no file, gone with
///   the socket, as `ss` shows it);
/// - a string with a `/` is a Unix socket path;
/// - `host:port`, where the port is a number, is TCP (`127.0.0.1:0` picks
///   a free port: see [`Listener::address`](super::Listener::address));
/// - anything else is a Unix socket path in the current directory.
///
/// ```
/// use shmsync::connection::Address;
/// assert_eq!(Address::from("@jobs"), Address::Abstract(b"jobs".to_vec()));
/// assert_eq!(Address::from("/run/jobs.sock"), Address::Unix("/run/jobs.sock".into()));
/// assert_eq!(Address::from("127.0.0.1:6000"), Address::Tcp("127.0.0.1:6000".into()));
/// assert_eq!(Address::from("[::1]:6000"), Address::Tcp("[::1]:6000".into()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix socket file.
    Unix(PathBuf),
    /// An abstract Unix socket name (Linux): no file in any directory.
    Abstract(Vec<u8>),
    /// TCP, `host:port`.
    Tcp(String),
}

impl Address {
    /// Whether connections to it are Unix sockets (they can pass
    /// descriptors).
    pub fn is_unix(&self) -> bool {
        !matches!(self, Address::Tcp(_))
    }
}

impl From<&str> for Address {
    fn from(s: &str) -> Address {
        if let Some(name) = s.strip_prefix('@') {
            return Address::Abstract(name.as_bytes().to_vec());
        }
        if s.contains('/') {
            return Address::Unix(PathBuf::from(s));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Address::Tcp(s.to_string()),
            _ => Address::Unix(PathBuf::from(s)),
        }
    }
}

impl From<String> for Address {
    fn from(s: String) -> Address {
        Address::from(s.as_str())
    }
}

impl From<&String> for Address {
    fn from(s: &String) -> Address {
        Address::from(s.as_str())
    }
}

impl From<&Address> for Address {
    fn from(a: &Address) -> Address {
        a.clone()
    }
}

impl From<std::net::SocketAddr> for Address {
    fn from(a: std::net::SocketAddr) -> Address {
        Address::Tcp(a.to_string())
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Address {
        Address::Unix(p)
    }
}

impl From<&std::path::Path> for Address {
    fn from(p: &std::path::Path) -> Address {
        Address::Unix(p.to_path_buf())
    }
}

impl std::str::FromStr for Address {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Address, Self::Err> {
        Ok(Address::from(s))
    }
}

/// The form [`From<&str>`](Address#impl-From<%26str>-for-Address) reads
/// back: `@name`, the path, or `host:port`.
impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "@{}", String::from_utf8_lossy(n)),
            Address::Tcp(a) => f.write_str(a),
        }
    }
}
