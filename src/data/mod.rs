//! Passing data between processes, built on the named primitives and the
//! launcher: pipes, queues, a pool of workers, and shared dicts.
//!
//! Payloads are serde values encoded with postcard (compact, no
//! `deserialize_any`: use typed structs, tuples and enums). Every bound has a
//! typed error, and no message is ever half delivered.

mod codec;
mod dict;
pub(crate) mod gate;
mod handles;
mod namespace;
pub(crate) mod pipe;
pub(crate) mod pool;
mod queue;
pub(crate) mod ring;
mod rx;
mod table;

pub use dict::Dict;
pub use namespace::Namespace;
pub use pipe::{pipe, pipe_oneway, Connection, Receiver, Sender, DEFAULT_MAX_FRAME};
pub use pool::{AsyncResult, Callbacks, Imap, Pool, PoolBuilder, StarFn, TERMINATE_GRACE};
pub use queue::{JoinableQueue, Queue};

/// The queue ring's crash points (see [`crate::crash`]).
pub(crate) const QUEUE_CRASH_POINTS: &[&str] = ring::CRASH_POINTS;
/// The dict table's crash points.
pub(crate) const DICT_CRASH_POINTS: &[&str] = table::CRASH_POINTS;
