//! The handshake: a mutual HMAC-SHA256 challenge on the shared authkey, in
//! the manner of Python's `multiprocessing.connection`, over the same
//! frames as every later message.
//!
//! ```text
//! listener                                   client
//!   Hello { nonce: Ns (32 random bytes),  ──▶
//!           or none without a key }
//!                                        ◀──  Proof { Nc (32 random), HMAC(key, "shmsync client" Ns Nc) }
//!                                             or NoAuth (no key), or Refuse (keys present on one side only)
//!   checks the MAC (constant time)
//!   Welcome { HMAC(key, "shmsync server" Ns Nc) }  ──▶   checks the MAC
//!   or Failure                                   ──▶   AuthenticationFailed
//! ```
//! - Each side proves it knows the key over both nonces, with a label per
//!   direction, so neither proof can be replayed or reflected.
//! - A wrong key fails on both sides: the listener sees a bad MAC and
//!   answers `Failure`; the client reads it. Nothing else is read before
//!   this succeeds, and handshake frames are limited to [`HANDSHAKE_MAX`]
//!   bytes, so garbage costs a frame of that size at most.
//! - The listener runs its side without blocking (see `listener.rs`), so a
//!   client that stalls or sends garbage delays nobody else.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};

/// The largest handshake frame either side accepts.
pub const HANDSHAKE_MAX: usize = 256;

type Nonce = [u8; 32];
type Tag = [u8; 32];

/// The listener's first message.
#[derive(Serialize, Deserialize)]
pub enum Hello {
    /// Version 1: the listener's nonce if it has a key.
    V1 {
        /// `Ns`.
        nonce: Option<Nonce>,
    },
}

/// The client's answer.
#[derive(Serialize, Deserialize)]
pub enum Reply {
    /// `Nc` and the client's MAC.
    Proof {
        /// `Nc`.
        nonce: Nonce,
        /// `HMAC(key, "shmsync client" Ns Nc)`.
        tag: Tag,
    },
    /// Neither side has a key.
    NoAuth,
    /// One side has a key and the other none.
    Refuse,
}

/// The listener's verdict.
#[derive(Serialize, Deserialize)]
pub enum Verdict {
    /// Accepted, with the listener's MAC if there is a key.
    Welcome {
        /// `HMAC(key, "shmsync server" Ns Nc)`.
        tag: Option<Tag>,
    },
    /// The client's proof was wrong (or it refused).
    Failure,
}

const CLIENT: &[u8] = b"shmsync client";
const SERVER: &[u8] = b"shmsync server";

/// A fresh random nonce from the operating system's CSPRNG.
pub fn nonce() -> Result<Nonce> {
    let mut n = [0u8; 32];
    getrandom::getrandom(&mut n).map_err(|e| Error::Os {
        op: "getrandom",
        name: "connection handshake".to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(n)
}

fn mac(key: &[u8], label: &[u8], ns: &Nonce, nc: &Nonce) -> Hmac<Sha256> {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    m.update(label);
    m.update(ns);
    m.update(nc);
    m
}

/// The client's tag.
pub fn client_tag(key: &[u8], ns: &Nonce, nc: &Nonce) -> Tag {
    mac(key, CLIENT, ns, nc).finalize().into_bytes().into()
}

/// The listener's tag.
pub fn server_tag(key: &[u8], ns: &Nonce, nc: &Nonce) -> Tag {
    mac(key, SERVER, ns, nc).finalize().into_bytes().into()
}

/// Checks the client's tag in constant time.
pub fn client_tag_ok(key: &[u8], ns: &Nonce, nc: &Nonce, tag: &Tag) -> bool {
    mac(key, CLIENT, ns, nc).verify_slice(tag).is_ok()
}

/// Checks the listener's tag in constant time.
pub fn server_tag_ok(key: &[u8], ns: &Nonce, nc: &Nonce, tag: &Tag) -> bool {
    mac(key, SERVER, ns, nc).verify_slice(tag).is_ok()
}

/// `AuthenticationFailed` for the peer at `peer`.
pub fn failed(peer: &str, reason: &str) -> Error {
    Error::AuthenticationFailed { peer: peer.to_string(), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_check_only_with_the_same_key_nonces_and_direction() {
        let (ns, nc) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(ns, nc);
        let tag = client_tag(b"key", &ns, &nc);
        assert!(client_tag_ok(b"key", &ns, &nc, &tag));
        assert!(!client_tag_ok(b"kez", &ns, &nc, &tag));
        assert!(!client_tag_ok(b"key", &nc, &ns, &tag));
        // A client's proof is no listener's proof: no reflection.
        assert!(!server_tag_ok(b"key", &ns, &nc, &tag));
    }
}
